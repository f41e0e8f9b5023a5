"""Write the synthetic driving world in the SemanticKITTI layout (docs/data-format.md).

```
<root>/sequences/<NN>/velodyne/<SSSSSS>.bin   float32 (N, 4): x, y, z (velodyne frame), reflectance 0..1
<root>/sequences/<NN>/labels/<SSSSSS>.label   uint32 (N,): semantic id | instance id << 16
<root>/sequences/<NN>/calib.txt               P0..P3 (3x4) and Tr (velodyne -> camera 0), KITTI values
<root>/sequences/<NN>/poses.txt               camera-0 pose of every scan in the first scan's camera-0 frame
<root>/sequences/<NN>/times.txt               seconds since the first scan
```

The scene model is the one of the nuScenes writer (`generate_scene`, `lidar_sweep`): sequence i of world
`seed` is scene i, driven at 10 Hz by default. The velodyne frame is KITTI's (x forward, y left, z up),
mounted 1.73 m above the ground; the beam pattern is HDL-64E-like (64 beams, +2.0 deg to −24.9 deg).
Fine lidarseg classes are mapped to raw SemanticKITTI ids by `FINE_TO_KITTI_RAW`; instance ids are 0 (the
world has no object instances). Classes the world does not contain (pole, traffic-sign, trunk, parking,
bicyclist, motorcyclist) never occur: evaluation lists them as absent.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmcr_core.data.labels import FINE_CLASS_NAMES
from cmcr_core.data.synthetic import LidarModel, generate_scene, lidar_sweep, sensor_to_world

__all__ = [
    "FINE_TO_KITTI_RAW",
    "KITTI_LIDAR",
    "KittiWorldSummary",
    "kitti_raw_lut",
    "write_semantickitti_world",
]

KITTI_LIDAR = LidarModel(
    elevations_deg=tuple(float(v) for v in np.linspace(-24.9, 2.0, 64)), azimuth_steps=1024
)
"""HDL-64E-like: 64 beams; 1024 firings per turn (half the real density keeps CPU runs short)."""
LIDAR_TRANSLATION = (0.76, 0.0, 1.73)
"""Velodyne position in the ego frame (KITTI: 1.73 m above the ground)."""
IDENTITY_QUATERNION = np.array([1.0, 0.0, 0.0, 0.0])
MAX_SEQUENCES = 22

FINE_TO_KITTI_RAW: dict[str, int] = {
    "noise": 0, "animal": 99,
    "human.pedestrian.adult": 30, "human.pedestrian.child": 30, "human.pedestrian.construction_worker": 30,
    "human.pedestrian.personal_mobility": 99, "human.pedestrian.police_officer": 30,
    "human.pedestrian.stroller": 99, "human.pedestrian.wheelchair": 99,
    "movable_object.barrier": 51, "movable_object.debris": 99, "movable_object.pushable_pullable": 99,
    "movable_object.trafficcone": 99, "static_object.bicycle_rack": 99,
    "vehicle.bicycle": 11, "vehicle.bus.bendy": 13, "vehicle.bus.rigid": 13, "vehicle.car": 10,
    "vehicle.construction": 20, "vehicle.emergency.ambulance": 20, "vehicle.emergency.police": 10,
    "vehicle.motorcycle": 15, "vehicle.trailer": 20, "vehicle.truck": 18,
    "flat.driveable_surface": 40, "flat.other": 49, "flat.sidewalk": 48, "flat.terrain": 72,
    "static.manmade": 50, "static.other": 99, "static.vegetation": 70, "vehicle.ego": 0,
}
"""Synthetic fine class name -> raw SemanticKITTI semantic id."""

# KITTI odometry calibration (sequence 00 values, rounded): camera projections and velodyne -> camera 0.
_P = {
    "P0": [721.5377, 0.0, 609.5593, 0.0, 0.0, 721.5377, 172.854, 0.0, 0.0, 0.0, 1.0, 0.0],
    "P1": [721.5377, 0.0, 609.5593, -387.5744, 0.0, 721.5377, 172.854, 0.0, 0.0, 0.0, 1.0, 0.0],
    "P2": [721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791, 0.0, 0.0, 1.0, 0.002745884],
    "P3": [721.5377, 0.0, 609.5593, -339.5242, 0.0, 721.5377, 172.854, 2.199936, 0.0, 0.0, 1.0, 0.002729905],
}
VELO_TO_CAM = np.array([[0.0, -1.0, 0.0, -0.004], [0.0, 0.0, -1.0, -0.076], [1.0, 0.0, 0.0, -0.272],
                        [0.0, 0.0, 0.0, 1.0]])
"""Tr: velodyne (x forward, y left, z up) -> camera 0 (x right, y down, z forward)."""


def kitti_raw_lut() -> np.ndarray:
    """(32,) uint32 fine lidarseg index -> raw SemanticKITTI id."""
    return np.array([FINE_TO_KITTI_RAW[name] for name in FINE_CLASS_NAMES], dtype=np.uint32)


@dataclass(frozen=True)
class KittiWorldSummary:
    """What `write_semantickitti_world` wrote: root, sequences, scans per sequence, points per scan."""

    root: Path
    sequences: tuple[str, ...]
    scans_per_sequence: int
    points_per_scan: tuple[int, ...]
    bytes_written: int


def _pose_matrix(origin: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, origin
    return pose


def _format_row(values: Sequence[float]) -> str:
    return " ".join(f"{v:.12e}" for v in values)


def write_semantickitti_world(
    root: str | Path,
    sequences: Sequence[str] = ("00", "01", "08"),
    scans_per_sequence: int = 20,
    seed: int = 0,
    scan_interval_s: float = 0.1,
    lidar: LidarModel = KITTI_LIDAR,
    overwrite: bool = False,
) -> KittiWorldSummary:
    """Write synthetic sequences in the SemanticKITTI layout.

    Args:
        root: output folder (gets `sequences/`).
        sequences: two-digit sequence names (00..21); sequence i is scene i of world `seed`.
        scans_per_sequence: scans per sequence, 1..10000.
        seed: world seed (>= 0); the same arguments give byte-identical files.
        scan_interval_s: time between scans (KITTI: 0.1 s).
        lidar: beam pattern and noise model.
        overwrite: delete an existing `<root>/sequences` first (otherwise it is an error).
    Raises:
        ValueError: a bad argument. FileExistsError: `sequences/` exists and overwrite is false.
    """
    names = [str(s) for s in sequences]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"sequences must be distinct and non-empty, got {names}")
    for name in names:
        if len(name) != 2 or not name.isdigit() or int(name) >= MAX_SEQUENCES:
            raise ValueError(f"sequence name {name!r}: expected two digits 00..{MAX_SEQUENCES - 1}")
    if not 1 <= scans_per_sequence <= 10000:
        raise ValueError(f"scans_per_sequence={scans_per_sequence}: must be in 1..10000")
    if seed < 0 or not scan_interval_s > 0:
        raise ValueError(f"seed must be >= 0 and scan_interval_s > 0, got {seed}, {scan_interval_s}")
    root = Path(root)
    target = root / "sequences"
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(target)
    lut = kitti_raw_lut()
    points_per_scan: list[int] = []
    written = 0
    for index, name in enumerate(names):
        folder = target / name
        (folder / "velodyne").mkdir(parents=True)
        (folder / "labels").mkdir()
        scene = generate_scene(seed, index, (scans_per_sequence - 1) * scan_interval_s + 0.05)
        poses, times = [], []
        first_inverse = None
        for k in range(scans_per_sequence):
            t = k * scan_interval_s
            position, yaw = scene.ego_pose(t)
            origin, rotation = sensor_to_world(position, yaw, LIDAR_TRANSLATION, IDENTITY_QUATERNION)
            rng = np.random.default_rng([seed, index, k, 2])
            sweep = lidar_sweep(scene.world, origin, rotation, lidar, rng)
            scan = np.column_stack([sweep.points[:, :3], sweep.points[:, 3] / 255.0]).astype(np.float32)
            raw = lut[sweep.labels.astype(np.int64)]
            stem = f"{k:06d}"
            (folder / "velodyne" / f"{stem}.bin").write_bytes(scan.tobytes())
            (folder / "labels" / f"{stem}.label").write_bytes(raw.astype(np.uint32).tobytes())
            written += scan.nbytes + raw.nbytes
            points_per_scan.append(len(scan))
            velo_pose = _pose_matrix(origin, rotation)
            if first_inverse is None:
                first_inverse = np.linalg.inv(velo_pose)
            # KITTI poses: camera 0 of scan k in camera 0 of scan 0.
            cam_pose = VELO_TO_CAM @ first_inverse @ velo_pose @ np.linalg.inv(VELO_TO_CAM)
            poses.append(_format_row(cam_pose[:3].reshape(-1)))
            times.append(f"{t:.6e}")
        calib = [f"{key}: {_format_row(values)}" for key, values in _P.items()]
        calib.append(f"Tr: {_format_row(VELO_TO_CAM[:3].reshape(-1))}")
        for file, lines in (("calib.txt", calib), ("poses.txt", poses), ("times.txt", times)):
            text = "\n".join(lines) + "\n"
            (folder / file).write_text(text, encoding="utf-8")
            written += len(text)
    return KittiWorldSummary(root, tuple(names), scans_per_sequence, tuple(points_per_scan), written)
