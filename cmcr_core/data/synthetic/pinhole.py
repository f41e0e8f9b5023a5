"""Ray casting a whole pinhole image fast: each primitive is intersected only with the pixels of its
projected screen rectangle, the ground analytically with every pixel.

Pixel (row, col) is the ray through (u, v) = (col, row), so projecting a 3D point with K and rounding
(the devkit chain's step 7, docs/data-format.md) lands on the pixel whose ray produced it.
"""

from __future__ import annotations

import numpy as np

from cmcr_core.data.synthetic.world import GROUND, NOTHING, RayHits, World, ground_distance

CHUNK = 32768
"""Rays resolved and shaded per step: small enough for the temporaries to stay in cache (about 3x faster
than whole-image numpy expressions, which are memory-bound)."""
NEAR = 0.05
"""Near plane (m) used to clip bounding boxes that straddle the camera plane."""
_EDGES = np.array([(i, i | bit) for bit in (1, 2, 4) for i in range(8) if not i & bit])


def pixel_directions(intrinsic: np.ndarray, width: int, height: int) -> np.ndarray:
    """Unit ray directions of every pixel in the camera frame (x right, y down, z forward).

    Args:
        intrinsic: (3, 3) camera matrix K (no skew).
        width, height: image size in pixels.

    Returns:
        (3, height, width) float32, components first.
    """
    fx, fy, cx, cy = intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]
    x = ((np.arange(width, dtype=np.float64) - cx) / fx).astype(np.float32)
    y = ((np.arange(height, dtype=np.float64) - cy) / fy).astype(np.float32)
    d = np.empty((3, height, width), dtype=np.float32)
    d[0] = x[None, :]
    d[1] = y[:, None]
    d[2] = 1.0
    d /= np.sqrt(d[0] * d[0] + d[1] * d[1] + 1.0)
    return d


def screen_rectangles(
    world: World,
    origin: np.ndarray,
    rotation: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    max_distance: float,
) -> np.ndarray:
    """Pixel rectangles that can see each primitive.

    Args:
        world: the scene.
        origin: (3,) camera centre in the world frame.
        rotation: (3, 3) camera -> world rotation.
        intrinsic: (3, 3) K.
        width, height: image size.
        max_distance: primitives whose bounding sphere lies farther are skipped.

    Returns:
        (M, 5) int64 rows (primitive, row0, row1, col0, col1), half-open ranges, non-empty, M <= P.
    """
    prims = world.primitives
    if len(prims) == 0:
        return np.zeros((0, 5), dtype=np.int64)
    cam = (prims.corners - origin.astype(np.float32)) @ rotation.astype(np.float32)  # (P, 8, 3)
    z = cam[..., 2]
    # Where an edge crosses the near plane, its crossing point bounds the visible part of the box.
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]
    za, zb = a[..., 2], b[..., 2]
    crosses = (za - NEAR) * (zb - NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(crosses, (NEAR - za) / (zb - za), 0.0)
    cross_pts = a + frac[..., None] * (b - a)
    pts = np.concatenate([cam, cross_pts], axis=1)  # (P, 20, 3)
    valid = np.concatenate([z >= NEAR, crosses], axis=1)
    depth = np.where(valid, pts[..., 2], 1.0)
    u = intrinsic[0, 0] * pts[..., 0] / depth + intrinsic[0, 2]
    v = intrinsic[1, 1] * pts[..., 1] / depth + intrinsic[1, 2]
    big = np.float32(1e9)
    c0 = np.floor(np.where(valid, u, big).min(axis=1))
    c1 = np.ceil(np.where(valid, u, -big).max(axis=1)) + 1
    r0 = np.floor(np.where(valid, v, big).min(axis=1))
    r1 = np.ceil(np.where(valid, v, -big).max(axis=1)) + 1
    rect = np.stack([r0, r1, c0, c1], axis=1)
    rect = np.clip(rect, 0, [height, height, width, width]).astype(np.int64)
    near_enough = np.linalg.norm(prims.center - origin, axis=1) - prims.radius < max_distance
    keep = valid.any(axis=1) & near_enough & (rect[:, 1] > rect[:, 0]) & (rect[:, 3] > rect[:, 2])
    ids = np.flatnonzero(keep)
    return np.concatenate([ids[:, None], rect[ids]], axis=1)


def trace_pinhole(
    world: World,
    origin: np.ndarray,
    rotation: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    max_distance: float = 400.0,
    directions_camera: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest surface of every pixel, before resolving what it is (see `World.resolve`).

    Args:
        world: the scene.
        origin: (3,) camera centre in the world frame.
        rotation: (3, 3) camera -> world rotation (camera x right, y down, z forward).
        intrinsic: (3, 3) K.
        width, height: image size in pixels.
        max_distance: primitives farther than this are not intersected.
        directions_camera: optional precomputed `pixel_directions(intrinsic, width, height)`, (3, H, W).

    Returns:
        directions (3, H * W) float32 unit, world frame; distance (H * W,) float32 (inf: nothing);
        primitive (H * W,) int32 (GROUND, NOTHING or a primitive index), row-major pixel order.
    """
    if directions_camera is None:
        directions_camera = pixel_directions(intrinsic, width, height)
    o = np.asarray(origin, dtype=np.float32)
    d = rotation.astype(np.float32) @ directions_camera.reshape(3, -1)
    t = ground_distance(o, d)
    prim = np.where(np.isfinite(t), GROUND, NOTHING).astype(np.int32)
    d_img = d.reshape(3, height, width)
    t_img = t.reshape(height, width)
    prim_img = prim.reshape(height, width)
    for p, r0, r1, c0, c1 in screen_rectangles(world, o, rotation, intrinsic, width, height, max_distance):
        window = (slice(r0, r1), slice(c0, c1))
        world.intersect_into(int(p), o, d_img[:, r0:r1, c0:c1], t_img, prim_img, window)
    return d, t, prim


def cast_pinhole(
    world: World,
    origin: np.ndarray,
    rotation: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    max_distance: float = 400.0,
    directions_camera: np.ndarray | None = None,
) -> RayHits:
    """Cast one ray per pixel of a pinhole camera (arguments as `trace_pinhole`).

    Returns:
        RayHits of height * width rays in row-major pixel order.
    """
    o = np.asarray(origin, dtype=np.float32)
    d, t, prim = trace_pinhole(world, o, rotation, intrinsic, width, height, max_distance, directions_camera)
    return RayHits.concatenate([
        world.resolve(o, d[:, sl], t[sl], prim[sl], max_distance) for sl in chunks(len(t))
    ])


def chunks(n: int, size: int = CHUNK) -> list[slice]:
    """Consecutive slices of at most `size` covering range(n)."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]
