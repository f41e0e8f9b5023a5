"""Synthetic object *scans*: what a depth sensor in a room sees of an object, like ScanObjectNN's hardest
variant (PB_T50_RS: the object's box translated by up to half its size, rotated, rescaled, with the
background inside the box).

From a dense clean surface sample (points and normals, in the unit sphere, y up), ``scan_object``:

1. keeps the points one viewpoint sees: a random azimuth and an elevation of 5-45 degrees; back faces
   (normal away from the sensor) dropped, then a z-buffer on a ``grid`` x ``grid`` raster keeps the points
   within ``depth_tolerance`` of the nearest surface of their cell (self-occlusion: a chair's legs hide
   each other);
2. with probability ``occlusion_prob`` cuts away the part behind an occluder: the points beyond a random
   vertical plane, ``occlusion_cut`` of the visible extent along a random horizontal direction;
3. translates the crop box (the visible part's bounding box) by up to ``shift`` of its size per axis, and
   keeps the object points inside it (an off-centre, clipped object);
4. fills ``background_fraction`` of the points with background inside the box: the floor under the object,
   a wall on one side, and a few clutter blobs;
5. adds Gaussian noise of std ``noise``, centres the box, scales the cloud into the unit sphere, shuffles.

All draws come from the generator passed in, so a scan is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmcr_core.data.objects.synthetic import make_object

__all__ = ["ScanSettings", "scan_object", "synthetic_scans"]


@dataclass(frozen=True)
class ScanSettings:
    """How hard a scan is (module docstring); the defaults give the hard benchmark's scans."""

    elevation_deg: tuple[float, float] = (5.0, 45.0)
    grid: int = 32
    depth_tolerance: float = 0.06
    occlusion_prob: float = 0.35
    occlusion_cut: tuple[float, float] = (0.15, 0.4)
    shift: float = 0.15
    background_fraction: tuple[float, float] = (0.1, 0.25)
    noise: float = 0.01


def _visible(points: np.ndarray, normals: np.ndarray, view: np.ndarray, grid: int, tolerance: float
             ) -> np.ndarray:
    """Indices of the points seen from direction ``view`` (unit, pointing from the object to the sensor)."""
    front = np.flatnonzero(normals @ view > 0.05)
    if len(front) == 0:
        return front
    side = np.cross(view, [0.0, 1.0, 0.0])
    side = side / max(np.linalg.norm(side), 1e-9)
    up = np.cross(side, view)
    cells = np.clip(((points[front] @ np.stack([side, up], 1) + 1.0) / 2.0 * grid).astype(int), 0, grid - 1)
    cell = cells[:, 0] * grid + cells[:, 1]
    depth = points[front] @ view  # larger is nearer the sensor
    nearest = np.full(grid * grid, -np.inf)
    np.maximum.at(nearest, cell, depth)
    return front[depth >= nearest[cell] - tolerance]


def _background(rng: np.random.Generator, count: int, low: np.ndarray, high: np.ndarray, floor: float
                ) -> np.ndarray:
    """``count`` background points inside the box [low, high]: floor, one wall, clutter blobs."""
    kind = rng.choice(3, size=count, p=[0.5, 0.25, 0.25])
    pts = rng.uniform(low, high, size=(count, 3))
    pts[kind == 0, 1] = max(floor, low[1])  # the floor under the object
    axis = int(rng.choice([0, 2]))
    pts[kind == 1, axis] = (low if rng.uniform() < 0.5 else high)[axis]  # a wall on one side
    blobs = rng.uniform(low, high, size=(int(rng.integers(1, 4)), 3))
    clutter = np.flatnonzero(kind == 2)
    spread = 0.08 * (high - low)
    centres = blobs[rng.integers(0, len(blobs), len(clutter))]
    pts[clutter] = centres + rng.normal(size=(len(clutter), 3)) * spread
    return pts


def scan_object(points: np.ndarray, normals: np.ndarray, num_points: int, rng: np.random.Generator,
                settings: ScanSettings = ScanSettings()) -> tuple[np.ndarray, np.ndarray]:
    """A scan of the object sampled by ``points`` and ``normals`` (see above): ``num_points`` x 3 float32 and
    which of its points belong to the object (the rest is background), like ScanObjectNN's masks."""
    s = settings
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.deg2rad(rng.uniform(*s.elevation_deg))
    view = np.array([np.cos(elevation) * np.cos(azimuth), np.sin(elevation),
                     np.cos(elevation) * np.sin(azimuth)])
    seen = _visible(points, normals, view, s.grid, s.depth_tolerance)
    if len(seen) < 16:  # a degenerate view: fall back to the whole surface
        seen = np.arange(len(points))
    obj = points[seen]
    if rng.uniform() < s.occlusion_prob:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        along = obj @ np.array([np.cos(angle), 0.0, np.sin(angle)])
        cut = along.max() - rng.uniform(*s.occlusion_cut) * (along.max() - along.min())
        kept = obj[along <= cut]
        obj = kept if len(kept) >= 16 else obj
    low, high = obj.min(0), obj.max(0)
    offset = rng.uniform(-s.shift, s.shift, 3) * (high - low)
    low, high = low + offset, high + offset
    inside = np.all((obj >= low) & (obj <= high), axis=1)
    obj = obj[inside] if inside.sum() >= 16 else obj
    num_background = int(round(rng.uniform(*s.background_fraction) * num_points))
    num_object = num_points - num_background
    obj = obj[rng.choice(len(obj), num_object, replace=len(obj) < num_object)]
    cloud = np.concatenate([obj, _background(rng, num_background, low, high, float(points[:, 1].min()))])
    cloud = cloud + rng.normal(size=cloud.shape) * s.noise
    cloud = cloud - (low + high) / 2.0
    cloud = cloud / np.linalg.norm(cloud, axis=1).max()
    order = rng.permutation(num_points)
    return cloud[order].astype(np.float32), order < num_object


def synthetic_scans(class_names: list[str] | tuple[str, ...], labels: np.ndarray, first_index: int, seed: int,
                    num_points: int, settings: ScanSettings = ScanSettings()) -> list[np.ndarray]:
    """Scans of the synthetic objects ``first_index``, ``first_index + 1``, … (``make_synthetic_objects``'s
    numbering): object k's shape is drawn again from ``[seed, first_index + k]`` (the same instance, sampled
    4 x ``num_points`` densely), its scan from ``[seed, first_index + k, 1]``."""
    clouds = []
    for k, label in enumerate(labels):
        index = first_index + k
        dense, normals, _ = make_object(class_names[int(label)], np.random.default_rng([seed, index]),
                                        4 * num_points, image_size=8, render_points=0)
        scan_rng = np.random.default_rng([seed, index, 1])
        clouds.append(scan_object(dense, normals, num_points, scan_rng, settings)[0])
    return clouds
