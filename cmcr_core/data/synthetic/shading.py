"""Camera appearance: per-class colour, procedural texture (hash noise, facade windows, paving joints,
barrier stripes), Lambert shading with sky light, a specular glint on vehicles, distance haze and sky.

Texture is anchored to world / object coordinates, so a surface looks the same from every camera and
sample (a 2D teacher can learn it); classes differ in colour statistics and texture, never by a single flat
RGB value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmcr_core.data.labels import FINE_CLASS_NAMES
from cmcr_core.data.synthetic.geometry import BOX
from cmcr_core.data.synthetic.pinhole import chunks, trace_pinhole
from cmcr_core.data.synthetic.world import GRASS, GROUND, GROUND_CLASS, NOTHING, PAVING, RayHits, World

MATERIAL_COLOUR = np.array(
    [(0.27, 0.27, 0.29), (0.86, 0.86, 0.84), (0.88, 0.7, 0.15), (0.63, 0.6, 0.56), (0.3, 0.44, 0.16),
     (0.52, 0.46, 0.38)],
    dtype=np.float32,
)
"""Base colour per ground material, in GROUND_MATERIALS order."""
# Noise (cell size m, amplitude) at two octaves per fine class; the ground uses its class.
_NOISE = {
    "flat.driveable_surface": (0.06, 0.16, 0.9, 0.1), "flat.sidewalk": (0.1, 0.12, 1.2, 0.08),
    "flat.terrain": (0.05, 0.45, 0.7, 0.35), "flat.other": (0.04, 0.35, 0.5, 0.15),
    "static.manmade": (0.1, 0.08, 1.5, 0.12), "static.vegetation": (0.07, 0.6, 0.35, 0.3),
}
NOISE_TABLE = np.array([_NOISE.get(n, (0.08, 0.08, 0.6, 0.06)) for n in FINE_CLASS_NAMES], dtype=np.float32)
_VEHICLES = np.array([n.startswith("vehicle.") for n in FINE_CLASS_NAMES])
_MANMADE = FINE_CLASS_NAMES.index("static.manmade")
_SIDEWALK = FINE_CLASS_NAMES.index("flat.sidewalk")
_BARRIER = FINE_CLASS_NAMES.index("movable_object.barrier")
_VEGETATION = FINE_CLASS_NAMES.index("static.vegetation")
ZENITH = np.array([0.33, 0.52, 0.85], dtype=np.float32)
HORIZON = np.array([0.78, 0.84, 0.9], dtype=np.float32)
HAZE_DISTANCE = 350.0


def hash_noise(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic value in [0, 1) per integer lattice cell. ix, iy, iz (N,) int32 -> (N,) float32."""
    h = ix.view(np.uint32) * np.uint32(0x8DA6B343)
    h ^= iy.view(np.uint32) * np.uint32(0xD8163841)
    h ^= iz.view(np.uint32) * np.uint32(0xCB1AB31F)
    h ^= np.uint32(salt & 0xFFFFFFFF)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0x5BD1E995)
    h ^= h >> np.uint32(15)
    return (h & np.uint32(0xFFFFFF)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def _noise(points: np.ndarray, cell: np.ndarray, salt: int) -> np.ndarray:
    """Cell noise of points (3, N) on a lattice of per-point cell size (N,) -> (N,) float32."""
    inv = np.float32(1.0) / cell
    ix, iy, iz = (np.floor(points[i] * inv).astype(np.int32) for i in range(3))
    return hash_noise(ix, iy, iz, salt)


def _frac(x: np.ndarray) -> np.ndarray:
    """x - floor(x); numpy's float `%` is about 100x slower."""
    return x - np.floor(x)


def sky_colour(directions: np.ndarray, sky_tint: tuple[float, float, float]) -> np.ndarray:
    """Sky gradient from the horizon to the zenith. directions (3, N) unit -> (3, N) float32."""
    up = np.sqrt(np.clip(directions[2], 0.0, 1.0))
    tint = np.asarray(sky_tint, dtype=np.float32)
    return np.stack([(HORIZON[i] + (ZENITH[i] - HORIZON[i]) * up) * tint[i] for i in range(3)])


def appearance_table(world: World) -> np.ndarray:
    """Per-surface shading constants, one row per ground material then one per primitive.

    Returns:
        (M + P, 9) float32 rows: base RGB, fine cell size, fine amplitude, coarse cell size, coarse
        amplitude, has facade windows (big static.manmade boxes), is a vehicle (gets a specular glint).
    """
    prims = world.primitives
    ground_cls = GROUND_CLASS
    ground = np.column_stack([MATERIAL_COLOUR, NOISE_TABLE[ground_cls], np.zeros((len(ground_cls), 2))])
    building = (prims.class_index == _MANMADE) & (prims.kind == BOX) & (prims.half[:, 2] > 1.8)
    objects = np.column_stack([prims.tint.reshape(-1, 3), NOISE_TABLE[prims.class_index].reshape(-1, 4),
                               building, _VEHICLES[prims.class_index]])
    return np.concatenate([ground, objects]).astype(np.float32)


def shade(
    hits: RayHits,
    directions: np.ndarray,
    world: World,
    sun: tuple[float, float, float],
    sky_tint: tuple[float, float, float],
    table: np.ndarray | None = None,
) -> np.ndarray:
    """Colour of every ray.

    Args:
        hits: what the rays hit (N rays).
        directions: (N, 3) unit ray directions in the world frame (a `.T` view of (3, N) is fastest).
        world: the scene (for primitive tints and sizes).
        sun: (3,) unit vector towards the sun; sky_tint: RGB multiplier of the sky.
        table: `appearance_table(world)`, computed here when not given.

    Returns:
        (N, 3) uint8 RGB (a transposed view of a (3, N) array).
    """
    table = appearance_table(world) if table is None else table
    d = directions.T
    sky = sky_colour(d, sky_tint)
    prim = hits.primitive
    # Ground, object and sky rays are coloured as separate uniform batches (see World.resolve).
    for idx, colour_of in ((np.flatnonzero(prim == GROUND), _ground_colour), (np.flatnonzero(prim >= 0),
                                                                               _object_colour)):
        if not len(idx):
            continue
        # A uniform batch (what the renderer passes) needs no gather or scatter.
        select = slice(None) if len(idx) == len(prim) else idx
        sub = hits if len(idx) == len(prim) else RayHits(*(f[idx] for f in (
            hits.distance, hits.class_index, prim, hits.point, hits.local_point, hits.normal,
            hits.ground_material)))
        colour = colour_of(sub, d[:, select], table, np.asarray(sun, dtype=np.float32))
        # Distance haze towards the sky colour of the same direction.
        haze = np.exp(-sub.distance / np.float32(HAZE_DISTANCE))
        sky[:, select] = colour * haze + sky[:, select] * (1.0 - haze)
    return _to_uint8(sky).T


def _ground_colour(hits: RayHits, d: np.ndarray, table: np.ndarray, sun: np.ndarray) -> np.ndarray:
    """(3, n) lit colour of ground hits: material colour, noise, grass hue, paving joints."""
    point, material = hits.point.T, hits.ground_material
    g = np.take(table, material, axis=0).T
    colour = np.ascontiguousarray(g[0:3])
    fine = _noise(point, g[3], 11) - 0.5
    coarse = _noise(point, g[5], 23) - 0.5
    colour *= 1.0 + g[4] * fine + g[6] * coarse
    grass = material == GRASS
    colour[0] *= 1.0 + 0.5 * coarse * grass
    colour[2] *= 1.0 - 0.4 * coarse * grass
    joints = (np.abs(_frac(point[0] / np.float32(0.6)) - 0.5) > 0.46) | (
        np.abs(_frac(point[1] / np.float32(0.6)) - 0.5) > 0.46)
    colour *= 1.0 - np.float32(0.28) * (joints & (material == PAVING))
    # Flat ground: sky ambient from straight above plus the sun's Lambert term, one number.
    colour *= np.float32(0.56 + 0.62 * max(float(sun[2]), 0.0))
    return colour


def _object_colour(hits: RayHits, d: np.ndarray, table: np.ndarray, sun: np.ndarray) -> np.ndarray:
    """(3, n) lit colour of primitive hits: tint, noise in object coordinates, facade windows, barrier
    stripes, Lambert shading with contact darkening, a specular glint on vehicles."""
    point, local, normal = hits.point.T, hits.local_point.T, hits.normal.T
    prim, cls = hits.primitive, hits.class_index
    g = np.take(table, prim + len(MATERIAL_COLOUR), axis=0).T
    colour = np.ascontiguousarray(g[0:3])
    # Texture in object coordinates (offset per primitive) moves with the object.
    tex_pts = local + prim.astype(np.float32) * np.float32(17.0)
    fine = _noise(tex_pts, g[3], 11) - 0.5
    coarse = _noise(tex_pts, g[5], 23) - 0.5
    colour *= 1.0 + g[4] * fine + g[6] * coarse
    veg = cls == _VEGETATION
    # Leaves vary in hue, not only in brightness.
    colour[0] *= 1.0 + 0.5 * coarse * veg
    colour[2] *= 1.0 - 0.4 * coarse * veg
    bld = (g[7] > 0) & (np.abs(normal[2]) < 0.5)
    if bld.any():
        along = local[0] + local[1]
        floor_i, bay = np.floor(point[2] / np.float32(3.2)), np.floor(along / np.float32(3.0))
        window = bld & (np.abs(along / np.float32(3.0) - bay - 0.5) < 0.27)
        window &= (point[2] / np.float32(3.2) - floor_i > 0.35) & (point[2] > 1.2)
        lit = hash_noise(bay.astype(np.int32), floor_i.astype(np.int32), prim, 5)
        gain = np.where(lit > 0.85, np.float32(1.0), np.float32(0.35))
        for i, (glass, glow) in enumerate(((0.14, 0.5), (0.17, 0.45), (0.22, 0.3))):
            np.copyto(colour[i], (glass + lit * glow) * gain, where=window)
    bar = cls == _BARRIER
    if bar.any():
        stripe = bar & (_frac((local[0] + local[2]) / np.float32(0.5)) < 0.5)
        np.copyto(colour, np.float32(0.9), where=stripe)
    # Sky ambient (more from above), Lambert sun, contact darkening near the ground.
    lambert = np.maximum(sun[0] * normal[0] + sun[1] * normal[1] + sun[2] * normal[2], 0.0)
    light = 0.42 + 0.14 * normal[2] + 0.62 * lambert
    light *= 1.0 - np.float32(0.35) * np.exp(-point[2] / np.float32(0.35))
    colour *= light
    shiny = g[8] > 0
    if shiny.any():
        # Mirror direction of the view ray; glint = cos^24 of its angle to the sun (by repeated squaring).
        along = 2.0 * (d[0] * normal[0] + d[1] * normal[1] + d[2] * normal[2])
        glint = np.maximum(sum(sun[i] * (d[i] - along * normal[i]) for i in range(3)), 0.0)
        g8 = glint * glint
        g8 *= g8
        g8 *= g8
        colour += np.float32(0.35) * (g8 * g8 * g8) * shiny
    return colour


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float colours in [0, 1] -> uint8, rounded (modifies `rgb`)."""
    np.clip(rgb, 0.0, 1.0, out=rgb)
    rgb *= 255.0
    rgb += 0.5
    return rgb.astype(np.uint8)


@dataclass(frozen=True)
class CameraImage:
    """A rendered camera image and its per-pixel truth. rgb: (H, W, 3) uint8; classes: (H, W) uint8
    lidarseg fine index of the surface seen by each pixel (0 for sky)."""

    rgb: np.ndarray
    classes: np.ndarray


def render_camera(
    world: World,
    origin: np.ndarray,
    rotation: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    sun: tuple[float, float, float],
    sky_tint: tuple[float, float, float],
    max_distance: float = 400.0,
    directions_camera: np.ndarray | None = None,
) -> CameraImage:
    """Ray-cast and shade one pinhole image.

    Args:
        world: the scene.
        origin: (3,) camera centre, world frame; rotation: (3, 3) camera -> world.
        intrinsic: (3, 3) K; width, height: image size.
        sun, sky_tint: lighting (see `shade`).
        max_distance: farther surfaces are sky.
        directions_camera: optional cached `pixel_directions(intrinsic, width, height)`.
    """
    o = np.asarray(origin, dtype=np.float32)
    d, t, prim = trace_pinhole(world, o, rotation, intrinsic, width, height, max_distance, directions_camera)
    prim[t > max_distance] = NOTHING
    rgb = np.empty((len(t), 3), dtype=np.uint8)
    classes = np.zeros(len(t), dtype=np.uint8)
    table = appearance_table(world)
    # Sky, ground and object pixels are handled in separate runs: each chunk is then uniform, so no work
    # is spent on lanes that a mask throws away. Chunks are cache-sized; whole-image numpy expressions
    # are memory-bound and about 3x slower.
    for run in (np.flatnonzero(prim == NOTHING), np.flatnonzero(prim == GROUND), np.flatnonzero(prim >= 0)):
        for sl in chunks(len(run)):
            idx = run[sl]
            d_sub = np.take(d, idx, axis=1)
            if prim[idx[0]] == NOTHING:
                rgb[idx] = _to_uint8(sky_colour(d_sub, sky_tint)).T
                continue
            hits = world.resolve(o, d_sub, t[idx], prim[idx], max_distance)
            rgb[idx] = shade(hits, d_sub.T, world, sun, sky_tint, table)
            classes[idx] = hits.class_index
    return CameraImage(rgb.reshape(height, width, 3), classes.reshape(height, width))
