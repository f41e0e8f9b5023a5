"""The scene model: static primitives on a flat textured ground, and ray casting against them.

Everything is expressed in the *world frame* of one scene (metres, z up, ground plane z = 0). How the world
is placed in nuScenes' global frame, and which sensors look at it, is decided elsewhere (`layout.Scene`,
`sensors`), so the same world can be written in any dataset layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cmcr_core.data.labels import FINE_NAME_TO_INDEX
from cmcr_core.data.synthetic.geometry import KERNELS, local_normals

# Ground materials: a raster of codes over the ground plane; each code has a lidarseg class, a LiDAR
# reflectivity and a texture in the renderer. Paint is still "flat.driveable_surface".
GROUND_MATERIALS: tuple[str, ...] = ("asphalt", "paint_white", "paint_yellow", "paving", "grass", "gravel")
ASPHALT, PAINT_WHITE, PAINT_YELLOW, PAVING, GRASS, GRAVEL = range(len(GROUND_MATERIALS))
GROUND_CLASS = np.array(
    [FINE_NAME_TO_INDEX[n] for n in (
        "flat.driveable_surface", "flat.driveable_surface", "flat.driveable_surface",
        "flat.sidewalk", "flat.terrain", "flat.other",
    )],
    dtype=np.uint8,
)
GROUND = -1
"""`RayHits.primitive` value of a ground hit."""
NOTHING = -2
"""`RayHits.primitive` value of a ray that hit nothing within range."""
NO_MATERIAL = 255


@dataclass(frozen=True)
class Primitives:
    """Structure of arrays of P primitives (see `geometry` for the kinds).

    Attributes:
        kind: (P,) int8 kind code (geometry.BOX / CYLINDER / ELLIPSOID).
        center: (P, 3) float32 centre in the world frame.
        half: (P, 3) float32 half extents in the local frame.
        yaw: (P,) float32 rotation about +z (radians), local -> world.
        class_index: (P,) uint8 lidarseg fine index.
        tint: (P, 3) float32 base colour in [0, 1] (the renderer adds texture and shading).
        instance: (P,) int32 object id; the parts of one object share it.
    """

    kind: np.ndarray
    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    class_index: np.ndarray
    tint: np.ndarray
    instance: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    @cached_property
    def rotation(self) -> np.ndarray:
        """(P, 3, 3) float32 local -> world rotation matrices."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        rot = np.zeros((len(self), 3, 3), dtype=np.float32)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = c, -s, s, c
        rot[:, 2, 2] = 1.0
        return rot

    @cached_property
    def packed(self) -> np.ndarray:
        """(P, 10) float32 rows: centre (3), half extents (3), cos(yaw), sin(yaw), kind, class index."""
        return np.column_stack([self.center, self.half, np.cos(self.yaw), np.sin(self.yaw), self.kind,
                                self.class_index]).astype(np.float32)

    @cached_property
    def corners(self) -> np.ndarray:
        """(P, 8, 3) float32 corners of each local bounding box in the world frame; corner i has sign bits
        (x, y, z) = (i & 4, i & 2, i & 1)."""
        signs = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float32) * 2 - 1
        local = signs[None] * self.half[:, None, :]
        return np.einsum("pij,pkj->pki", self.rotation, local) + self.center[:, None, :]

    @cached_property
    def radius(self) -> np.ndarray:
        """(P,) float32 radius of the bounding sphere around `center`."""
        return np.linalg.norm(self.half, axis=1).astype(np.float32)


@dataclass(frozen=True)
class GroundMap:
    """Material raster over the ground plane z = 0; outside the raster the edge cells extend outwards.

    Attributes:
        codes: (NX, NY) uint8 material code per cell (index of GROUND_MATERIALS).
        x0, y0: world coordinates of the corner of cell (0, 0).
        resolution: cell size in metres.
    """

    codes: np.ndarray
    x0: float
    y0: float
    resolution: float

    def material_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Material codes (N,) uint8 at world positions x (N,), y (N,)."""
        nx, ny = self.codes.shape
        inv = np.float32(1.0 / self.resolution)
        ix = ((x - np.float32(self.x0)) * inv).astype(np.int32)
        iy = ((y - np.float32(self.y0)) * inv).astype(np.int32)
        np.clip(ix, 0, nx - 1, out=ix)
        np.clip(iy, 0, ny - 1, out=iy)
        ix *= ny
        ix += iy
        return np.take(self.codes.reshape(-1), ix)


@dataclass(frozen=True)
class RayHits:
    """What N rays hit. Rays that hit nothing have distance inf, class 0, primitive NOTHING.

    The (N, 3) fields are transposed views of contiguous (3, N) arrays (`.T` gives them back for free).

    Attributes:
        distance: (N,) float32 distance along the (unit) ray direction, metres.
        class_index: (N,) uint8 lidarseg fine index (0 where nothing was hit).
        primitive: (N,) int32 index into `World.primitives`, GROUND or NOTHING.
        point: (N, 3) float32 hit point in the world frame (0 where nothing was hit).
        local_point: (N, 3) float32 hit point in the hit primitive's frame (world frame for the ground).
        normal: (N, 3) float32 unit surface normal in the world frame (0 where nothing was hit).
        ground_material: (N,) uint8 ground material code, NO_MATERIAL off the ground.
    """

    distance: np.ndarray
    class_index: np.ndarray
    primitive: np.ndarray
    point: np.ndarray
    local_point: np.ndarray
    normal: np.ndarray
    ground_material: np.ndarray

    @staticmethod
    def concatenate(parts: list[RayHits]) -> RayHits:
        """Join the hits of consecutive ray batches (keeps the (3, N)-backed layout)."""

        def cat(name: str) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            if arrays[0].ndim == 1:
                return np.concatenate(arrays)
            return np.concatenate([a.T for a in arrays], axis=1).T

        return RayHits(*(cat(name) for name in (
            "distance", "class_index", "primitive", "point", "local_point", "normal", "ground_material")))


def ground_distance(origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Distance to the plane z = 0 along downward rays, else inf. origin (3,)|(3, N), direction (3, N)."""
    oz = origin[2]
    dz = direction[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -oz / dz
    return np.where((dz < -1e-6) & (t > 0), t, np.float32(np.inf)).astype(np.float32)


@dataclass(frozen=True)
class World:
    """A static scene: primitives standing on a ground map. Cast rays with `cast_rays`."""

    primitives: Primitives
    ground: GroundMap

    def cast_rays(
        self, origins: np.ndarray, directions: np.ndarray, max_distance: float = np.inf
    ) -> RayHits:
        """First hit of each ray.

        Args:
            origins: (3,) one origin shared by all rays, or (N, 3) one per ray, world frame.
            directions: (N, 3) ray directions (normalised here, so distances are metres).
            max_distance: hits farther than this are dropped.

        Returns:
            RayHits of N rays.
        """
        d = np.ascontiguousarray(np.asarray(directions, dtype=np.float32).T)
        d /= np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        o = np.asarray(origins, dtype=np.float32)
        o = o if o.ndim == 1 else np.ascontiguousarray(o.T)
        t = ground_distance(o, d)
        prim = np.where(np.isfinite(t), GROUND, NOTHING).astype(np.int32)
        for p, idx in self._candidates(o, d, max_distance):
            o_p = o if o.ndim == 1 else o[:, idx]
            self.intersect_into(p, o_p, d[:, idx], t, prim, idx)
        return self.resolve(o, d, t, prim, max_distance)

    def _candidates(self, o: np.ndarray, d: np.ndarray, max_distance: float):
        """Yield (primitive, ray indices) for rays that pass through the primitive's bounding sphere.

        o (3,) or (3, N), d (3, N) unit directions.
        """
        prims = self.primitives
        radius = prims.radius
        if o.ndim == 1:
            offset = prims.center - o
            dist = np.linalg.norm(offset, axis=1)
            keep = np.flatnonzero(dist - radius < max_distance)
            inside = dist <= radius
            # Cone test: a ray can touch the sphere only within asin(r / dist) of its centre's direction.
            cos_limit = np.sqrt(np.clip(1.0 - (radius / np.maximum(dist, 1e-6)) ** 2, 0.0, 1.0))
            for start in range(0, len(keep), 64):
                chunk = keep[start : start + 64]
                cosines = (offset[chunk] / dist[chunk, None]) @ d
                for row, p in enumerate(chunk):
                    idx = np.arange(d.shape[1]) if inside[p] else np.flatnonzero(cosines[row] >= cos_limit[p])
                    if len(idx):
                        yield p, idx
            return
        for p in range(len(prims)):
            w = prims.center[p][:, None] - o
            along = w[0] * d[0] + w[1] * d[1] + w[2] * d[2]
            miss2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2] - along * along
            r = radius[p]
            idx = np.flatnonzero((miss2 <= r * r) & (along >= -r) & (along - r <= max_distance))
            if len(idx):
                yield p, idx

    def intersect_into(
        self, p: int, o: np.ndarray, d: np.ndarray, t: np.ndarray, prim: np.ndarray, idx
    ) -> None:
        """Intersect rays (o, d) with primitive p and keep the nearer hit in t[idx], prim[idx] in place.

        `idx` is an index array or a tuple of slices (a screen rectangle); o (3,) | (3, n), d (3, n) or
        (3, h, w) for a window of shape (h, w).
        """
        prims = self.primitives
        cx, cy, cz, _, _, _, cos, sin = prims.packed[p, :8]
        # World -> local is a rotation by -yaw about z; written out so d may be any (3, ...) view
        # (a screen window) without copying it.
        ox, oy, oz = o[0] - cx, o[1] - cy, o[2] - cz
        o_local = np.stack([cos * ox + sin * oy, cos * oy - sin * ox, oz])
        d_local = (cos * d[0] + sin * d[1], cos * d[1] - sin * d[0], d[2])
        t_p = KERNELS[prims.kind[p]](o_local, d_local, prims.half[p])
        current = t[idx]
        t_p = t_p.reshape(current.shape)
        nearer = t_p < current
        np.copyto(current, t_p, where=nearer)
        t[idx] = current
        chosen = prim[idx]
        chosen[nearer] = p
        prim[idx] = chosen

    def resolve(
        self, o: np.ndarray, d: np.ndarray, t: np.ndarray, prim: np.ndarray, max_distance: float = np.inf
    ) -> RayHits:
        """Turn per-ray distances t (N,) and primitive ids (N,) into RayHits. o (3,)|(3, N), d (3, N).

        Ground and object rays are resolved as separate uniform batches (the renderer passes uniform
        batches directly), so no arithmetic is spent on lanes a mask would discard.
        """
        prim = np.where(t <= max_distance, prim, NOTHING).astype(np.int32)
        if len(prim) and prim[0] == GROUND and (prim == GROUND).all():
            return self._resolve_ground(o, d, t)
        if len(prim) and prim[0] >= 0 and (prim >= 0).all():
            return self._resolve_objects(o, d, t, prim)
        n = len(t)
        fields = {
            "distance": np.full(n, np.inf, dtype=np.float32), "class_index": np.zeros(n, dtype=np.uint8),
            "primitive": prim, "point": np.zeros((3, n), dtype=np.float32),
            "local_point": np.zeros((3, n), dtype=np.float32), "normal": np.zeros((3, n), dtype=np.float32),
            "ground_material": np.full(n, NO_MATERIAL, dtype=np.uint8),
        }
        for idx in (np.flatnonzero(prim == GROUND), np.flatnonzero(prim >= 0)):
            if not len(idx):
                continue
            o_sub = o if o.ndim == 1 else o[:, idx]
            part = (self._resolve_ground(o_sub, d[:, idx], t[idx]) if prim[idx[0]] == GROUND
                    else self._resolve_objects(o_sub, d[:, idx], t[idx], prim[idx]))
            for name, array in fields.items():
                if name != "primitive":
                    array[..., idx] = getattr(part, name).T
        return RayHits(**{k: (v.T if v.ndim == 2 else v) for k, v in fields.items()})

    def _resolve_ground(self, o: np.ndarray, d: np.ndarray, t: np.ndarray) -> RayHits:
        """Rays that all hit the ground."""
        point = (o[:, None] if o.ndim == 1 else o) + t * d
        material = self.ground.material_at(point[0], point[1])
        normal = np.zeros_like(point)
        normal[2] = 1.0
        prim = np.full(len(t), GROUND, dtype=np.int32)
        distance = t.astype(np.float32)
        return RayHits(distance, GROUND_CLASS[material], prim, point.T, point.T, normal.T, material)

    def _resolve_objects(self, o: np.ndarray, d: np.ndarray, t: np.ndarray, prim: np.ndarray) -> RayHits:
        """Rays that all hit primitives."""
        point = (o[:, None] if o.ndim == 1 else o) + t * d
        # One row gather of all per-primitive numbers is ~5x cheaper than a gather per attribute.
        g = np.take(self.primitives.packed, prim, axis=0).T
        cos, sin = g[6], g[7]
        rel = point - g[0:3]
        local = np.stack([cos * rel[0] + sin * rel[1], cos * rel[1] - sin * rel[0], rel[2]])
        n_local = local_normals(g[8], local, np.ascontiguousarray(g[3:6]))
        normal = np.stack([cos * n_local[0] - sin * n_local[1], sin * n_local[0] + cos * n_local[1],
                           n_local[2]])
        material = np.full(len(t), NO_MATERIAL, dtype=np.uint8)
        classes = g[9].astype(np.uint8)
        return RayHits(t.astype(np.float32), classes, prim, point.T, local.T, normal.T, material)
