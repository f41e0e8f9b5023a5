"""The sensor rig: a 32-beam spinning LiDAR (HDL-32E-like) on the roof and six cameras placed like the
nuScenes rig, with their calibration (sensor -> ego) in nuScenes conventions, and the LiDAR sweep model
(ray casting, range noise, dropouts, intensity).

Conventions (the nuScenes schema): quaternions (w, x, y, z); ego frame x forward, y left, z up, origin
on the ground; camera frame x right, y down, z forward; LiDAR frame rotated by -90 deg about z (x right,
y forward), as in nuScenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmcr_core.data.labels import FINE_CLASS_NAMES
from cmcr_core.data.synthetic.geometry import quaternion_multiply, quaternion_to_matrix, yaw_quaternion
from cmcr_core.data.synthetic.world import NO_MATERIAL, NOTHING, World

REFERENCE_SIZE = (1600, 900)
"""Image size (width, height) at which the rig's intrinsics are given; other sizes scale them."""
CAMERA_TO_EGO_FRONT = np.array([0.5, -0.5, 0.5, -0.5])
"""Quaternion turning camera axes (x right, y down, z forward) into ego axes for a forward camera."""

LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_TRANSLATION = (0.943713, 0.0, 1.84023)
LIDAR_ROTATION = tuple(float(v) for v in yaw_quaternion(-np.pi / 2))


@dataclass(frozen=True)
class CameraSpec:
    """One camera of the rig. Intrinsics are for REFERENCE_SIZE; `time_offset_us` is when it fires
    after the LiDAR keyframe (the cameras trigger as the LiDAR sweeps past them)."""

    channel: str
    translation: tuple[float, float, float]
    yaw_deg: float
    focal: float
    principal: tuple[float, float]
    time_offset_us: int

    @property
    def rotation(self) -> np.ndarray:
        """(4,) camera -> ego quaternion (w, x, y, z)."""
        return quaternion_multiply(yaw_quaternion(np.deg2rad(self.yaw_deg)), CAMERA_TO_EGO_FRONT)

    def intrinsic(self, width: int, height: int) -> np.ndarray:
        """(3, 3) float64 K for an image of `width` x `height` pixels (scaled from REFERENCE_SIZE)."""
        sx, sy = width / REFERENCE_SIZE[0], height / REFERENCE_SIZE[1]
        return np.array(
            [[self.focal * sx, 0.0, self.principal[0] * sx], [0.0, self.focal * sy, self.principal[1] * sy],
             [0.0, 0.0, 1.0]]
        )


CAMERA_RIG: tuple[CameraSpec, ...] = (
    CameraSpec("CAM_FRONT", (1.701, 0.016, 1.511), 0.0, 1266.4, (816.3, 491.5), 0),
    CameraSpec("CAM_FRONT_RIGHT", (1.551, -0.493, 1.496), -55.0, 1260.8, (808.0, 495.3), 8000),
    CameraSpec("CAM_BACK_RIGHT", (1.015, -0.481, 1.562), -110.0, 1259.5, (807.3, 501.2), 16500),
    CameraSpec("CAM_BACK", (0.028, 0.003, 1.579), 180.0, 809.2, (829.2, 481.8), 25000),
    CameraSpec("CAM_BACK_LEFT", (1.036, 0.485, 1.591), 110.0, 1256.7, (792.1, 492.8), 33500),
    CameraSpec("CAM_FRONT_LEFT", (1.524, 0.495, 1.509), 55.0, 1272.6, (826.6, 479.8), 41500),
)
"""The six cameras in nuScenes order; positions and intrinsics close to the real rig, yaws rounded."""
CAMERA_CHANNELS: tuple[str, ...] = tuple(c.channel for c in CAMERA_RIG)


def _reflectivity() -> np.ndarray:
    """(32,) base LiDAR reflectivity (0..255) per fine class."""
    table = np.full(len(FINE_CLASS_NAMES), 40.0, dtype=np.float32)
    for name, value in {
        "flat.driveable_surface": 14.0, "flat.sidewalk": 32.0, "flat.terrain": 22.0, "flat.other": 28.0,
        "static.manmade": 45.0, "static.vegetation": 18.0, "vehicle.car": 38.0, "vehicle.truck": 42.0,
        "vehicle.bus.rigid": 44.0, "movable_object.barrier": 70.0, "movable_object.trafficcone": 90.0,
        "human.pedestrian.adult": 20.0, "human.pedestrian.child": 20.0,
        "human.pedestrian.construction_worker": 110.0, "vehicle.bicycle": 30.0, "vehicle.motorcycle": 34.0,
    }.items():
        table[FINE_CLASS_NAMES.index(name)] = value
    return table


CLASS_REFLECTIVITY = _reflectivity()
MATERIAL_REFLECTIVITY = np.array([14.0, 140.0, 120.0, 32.0, 22.0, 28.0], dtype=np.float32)
"""LiDAR reflectivity per ground material (GROUND_MATERIALS order): paint is retro-reflective."""


@dataclass(frozen=True)
class LidarModel:
    """A spinning multi-beam LiDAR: beams at fixed elevations, `azimuth_steps` firings per turn."""

    elevations_deg: tuple[float, ...] = tuple(float(v) for v in np.linspace(-30.67, 10.67, 32))
    azimuth_steps: int = 1084
    min_range: float = 1.0
    max_range: float = 80.0
    range_noise_m: float = 0.015
    dropout: float = 0.02

    def directions(self, azimuth_offset: float) -> tuple[np.ndarray, np.ndarray]:
        """Unit beam directions in the LiDAR frame, firing order (azimuth-major), and ring ids.

        Returns:
            directions (A * R, 3) float32 and ring (A * R,) uint8 (0 = lowest beam).
        """
        az = azimuth_offset + np.arange(self.azimuth_steps) * (2 * np.pi / self.azimuth_steps)
        el = np.deg2rad(np.asarray(self.elevations_deg))
        az_g, el_g = np.meshgrid(az, el, indexing="ij")
        d = np.stack([np.cos(el_g) * np.cos(az_g), np.cos(el_g) * np.sin(az_g), np.sin(el_g)], axis=-1)
        ring = np.broadcast_to(np.arange(len(el), dtype=np.uint8), az_g.shape)
        return d.reshape(-1, 3).astype(np.float32), ring.reshape(-1).copy()


@dataclass(frozen=True)
class LidarSweep:
    """One sweep. points: (M, 5) float32 x, y, z (LiDAR frame), intensity 0..255, ring; labels: (M,) uint8."""

    points: np.ndarray
    labels: np.ndarray


def lidar_sweep(
    world: World, origin: np.ndarray, rotation: np.ndarray, model: LidarModel, rng: np.random.Generator
) -> LidarSweep:
    """Cast one LiDAR sweep.

    Args:
        world: the scene.
        origin: (3,) LiDAR centre in the world frame.
        rotation: (3, 3) LiDAR -> world rotation.
        model: beam pattern and noise.
        rng: generator for the azimuth phase, dropouts, range and intensity noise.

    Returns:
        The points that hit something within range and were not dropped, in firing order.
    """
    d_sensor, ring = model.directions(float(rng.uniform(0, 2 * np.pi / model.azimuth_steps)))
    d_world = d_sensor @ rotation.T.astype(np.float32)
    hits = world.cast_rays(np.asarray(origin, dtype=np.float32), d_world, model.max_range)
    dist = hits.distance
    n = len(dist)
    # Dropouts grow with range (weak returns) on top of a constant rate.
    p_drop = model.dropout + 0.08 * (np.minimum(dist, model.max_range) / model.max_range) ** 2
    keep = (hits.primitive != NOTHING) & (dist >= model.min_range) & (rng.random(n) >= p_drop)
    rng_noise = rng.normal(0.0, model.range_noise_m, n).astype(np.float32)
    intensity_noise = rng.normal(1.0, 0.12, n).astype(np.float32)
    idx = np.flatnonzero(keep)
    r = dist[idx] + rng_noise[idx]
    xyz = d_sensor[idx] * r[:, None]
    base = CLASS_REFLECTIVITY[hits.class_index[idx]]
    material = hits.ground_material[idx]
    on_ground = material != NO_MATERIAL
    base[on_ground] = MATERIAL_REFLECTIVITY[material[on_ground]]
    prim = hits.primitive[idx]
    on_obj = prim >= 0
    # Bright paint reflects more: ties LiDAR intensity to the colour the cameras see.
    base[on_obj] *= 0.6 + 0.8 * world.primitives.tint[prim[on_obj]].mean(axis=1)
    incidence = np.abs(np.einsum("ij,ij->i", hits.normal[idx], d_world[idx]))
    intensity = np.clip(np.round(base * (0.4 + 0.6 * incidence) * intensity_noise[idx]), 0, 255)
    points = np.column_stack([xyz, intensity, ring[idx].astype(np.float32)]).astype(np.float32)
    return LidarSweep(points=points, labels=hits.class_index[idx].copy())


def sensor_to_world(
    ego_position: np.ndarray, ego_yaw: float, translation: tuple[float, ...], rotation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Compose ego pose (world frame) with a sensor calibration (sensor -> ego).

    Args:
        ego_position: (3,) ego origin in the world frame; ego_yaw: radians.
        translation: (3,) sensor position in the ego frame; rotation: (4,) sensor -> ego quaternion.

    Returns:
        origin (3,) float64 and rotation (3, 3) float64 of the sensor in the world frame.
    """
    ego_rot = quaternion_to_matrix(yaw_quaternion(ego_yaw))
    origin = ego_position + ego_rot @ np.asarray(translation, dtype=np.float64)
    return origin, ego_rot @ quaternion_to_matrix(rotation)
