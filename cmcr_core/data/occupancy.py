"""CMCR occupancy queries and their LiDAR neighbours (docs/cmcr.md).

Query sampling, per sample, in the sensor frame before augmentation (the dataset then moves the queries
with the same cloud transform as the points). With p a LiDAR point, d = p/‖p‖, δ = 0.1 m and u ~ U(0, 1)
drawn per query, n = 2048 queries split as:

| Group | Count | Position | Occupancy | Intensity target |
|---|---|---|---|---|
| in (just behind the surface) | n − 2·⌊n/3⌋ = 684 | p + δ·u·d | 1 | intensity(p)·s |
| out (just in front) | ⌊n/3⌋ = 682 | p − δ·u·d | 0 | intensity(p)·s |
| out far (free space on the ray) | ⌊n/3⌋ = 682 | u·p | 0 | −1 (no target) |

with s = 1/255 (the reference's scaling of intensity targets). The source points of each group are drawn
independently, without replacement inside a group (groups may overlap); a sweep with fewer points than a
group needs is drawn with replacement so every sample keeps exactly n queries.

Neighbours: for every query, the LiDAR points of the same sample within ``radius`` (1 m), at most
``max_neighbours`` (32) of them, the *nearest* ones. Deliberate deviation (D13, docs/differences.md): the
reference's ``torch_cluster.radius`` returns the first 32 points it finds, which depends on memory order; here
the search is deterministic. It is plain, vectorised torch (a sorted cell grid searched by columns, with a
histogram cut before the final sort: ``cmcr_core.ops.geometry.radius_neighbours``, which CMCR calls on the
collated batch); its result equals a brute-force ``cdist`` + ``topk(32)`` + radius mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "QUERY_INTENSITY",
    "QUERY_OCCUPANCY",
    "OccupancyQueries",
    "query_group_sizes",
    "sample_occupancy_queries",
]

# Columns of a query array: x, y, z (LiDAR frame), occupancy label, intensity target.
QUERY_OCCUPANCY = 3
QUERY_INTENSITY = 4


def query_group_sizes(num_queries: int) -> tuple[int, int, int]:
    """(in, out, far) counts: (n − 2·⌊n/3⌋, ⌊n/3⌋, ⌊n/3⌋); (684, 682, 682) for n = 2048."""
    if num_queries < 1:
        raise ValueError(f"occupancy num_queries must be >= 1, got {num_queries}")
    third = num_queries // 3
    return num_queries - 2 * third, third, third


def sample_occupancy_queries(
    points: np.ndarray,
    rng: np.random.Generator,
    num_queries: int = 2048,
    delta: float = 0.1,
    intensity_scale: float = 1.0 / 255.0,
) -> np.ndarray:
    """Occupancy queries of one sweep.

    Args:
        points: (N, ≥4) x, y, z (sensor frame, metres), intensity.
        rng: the item's generator (draw order: per group, source indices then u).
        num_queries: n.
        delta: δ, metres.
        intensity_scale: s, multiplies the intensity targets.

    Returns:
        (n, 5) float32 rows [x, y, z, occupancy, intensity target], groups in the order in, out, far.
    """
    if points.ndim != 2 or points.shape[1] < 4 or len(points) == 0:
        raise ValueError(f"occupancy queries need (N >= 1, >= 4) points, got {points.shape}")
    xyz = points[:, :3].astype(np.float64)
    norm = np.linalg.norm(xyz, axis=1, keepdims=True)
    direction = xyz / np.maximum(norm, 1e-9)
    groups = []
    for group, count in zip(("in", "out", "far"), query_group_sizes(num_queries), strict=True):
        source = rng.choice(len(xyz), size=count, replace=count > len(xyz))
        u = rng.random(count)[:, None]
        rows = np.empty((count, 5), dtype=np.float64)
        if group == "in":
            rows[:, :3] = xyz[source] + delta * u * direction[source]
        elif group == "out":
            rows[:, :3] = xyz[source] - delta * u * direction[source]
        else:
            rows[:, :3] = u * xyz[source]
        rows[:, QUERY_OCCUPANCY] = 1.0 if group == "in" else 0.0
        rows[:, QUERY_INTENSITY] = points[source, 3] * intensity_scale if group != "far" else -1.0
        groups.append(rows)
    return np.concatenate(groups).astype(np.float32)


@dataclass(frozen=True)
class OccupancyQueries:
    """Dataset extras hook (``PretrainDataset(extras_hook=...)``): adds ``{name: (n, 5) queries}``.

    Picklable, so data-loader workers can run it. The first three columns are xyz, hence the dataset
    applies the item's cloud transform to them.
    """

    num_queries: int = 2048
    delta: float = 0.1
    intensity_scale: float = 1.0 / 255.0
    name: str = "occupancy_queries"

    def __call__(self, points: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        queries = sample_occupancy_queries(points, rng, self.num_queries, self.delta, self.intensity_scale)
        return {self.name: queries}
