"""CMCR occupancy queries and their LiDAR neighbours (METHODS.md §7.10).

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
``max_neighbours`` (32) of them, the *nearest* ones. Deliberate deviation (defect D13): the reference's
``torch_cluster.radius`` returns the first 32 points it finds, which depends on memory order; here the
search is deterministic. It is plain, vectorised torch (a voxel-hash neighbourhood, see
``radius_neighbours``); its result equals a brute-force ``cdist`` + ``topk(32)`` + radius mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "QUERY_INTENSITY",
    "QUERY_OCCUPANCY",
    "OccupancyQueries",
    "query_group_sizes",
    "radius_neighbours",
    "sample_occupancy_queries",
]

# Columns of a query array: x, y, z (LiDAR frame), occupancy label, intensity target.
QUERY_OCCUPANCY = 3
QUERY_INTENSITY = 4
# Grid cells of side radius / CELLS_PER_RADIUS: the searched block shrinks from 27 r³ (1 cell per radius)
# to (7/3)³ = 12.7 r³, i.e. fewer candidate pairs to measure in the dense rings near the sensor
# (synthetic sweeps, 2 × 2048 queries, CPU seconds: 1 -> 0.50, 2 -> 0.45, 3 -> 0.33, 4 -> 0.36).
CELLS_PER_RADIUS = 3


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


def _cell_keys(cells: Tensor, batch: Tensor, extent: Tensor) -> Tensor:
    """One int64 key per (sample, cell): row-major over (batch, x, y, z) with the given extents."""
    return ((batch * extent[0] + cells[:, 0]) * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]


def radius_neighbours(
    queries: Tensor,
    points: Tensor,
    radius: float = 1.0,
    max_neighbours: int = 32,
    query_batch: Tensor | None = None,
    point_batch: Tensor | None = None,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """The ``max_neighbours`` nearest points within ``radius`` of every query, per sample.

    Vectorised grid search: points are bucketed into cubic cells of side ``radius / CELLS_PER_RADIUS``
    (keys sorted once); each query gathers the points of the cells within ``CELLS_PER_RADIUS`` cells of
    its own along every axis (every point closer than ``radius`` is among them), distances are computed
    by direct differences, pairs at ``radius`` or farther are dropped, and a stable (query, distance)
    sort keeps the nearest ``max_neighbours`` per query. No Python loop over samples or queries;
    ``chunk_size`` queries at a time bound the candidate memory (dense rings near the sensor give a few
    thousand candidates per query).

    Args:
        queries: (Q, 3) query positions.
        points: (N, 3) point positions.
        radius: strict bound on the Euclidean distance.
        max_neighbours: at most this many (the nearest) points per query; ties keep the point order.
        query_batch, point_batch: (Q,), (N,) int64 sample index of each row (both or neither; any order).
        chunk_size: queries per block.

    Returns:
        (query_index, point_index): (E,) int64 each, indices into ``queries`` and ``points``, sorted by
        query, nearest first.
    """
    if queries.dim() != 2 or queries.shape[1] != 3 or points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"queries and points must be (Q, 3) and (N, 3), got {tuple(queries.shape)}, "
                         f"{tuple(points.shape)}")
    if (query_batch is None) != (point_batch is None):
        raise ValueError("pass both query_batch and point_batch, or neither")
    if radius <= 0 or max_neighbours < 1 or chunk_size < 1:
        raise ValueError(f"need radius > 0, max_neighbours >= 1, chunk_size >= 1; got {radius}, "
                         f"{max_neighbours}, {chunk_size}")
    device = queries.device
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if len(queries) == 0 or len(points) == 0:
        return empty, empty
    queries, points = queries.float(), points.float()
    if query_batch is None or point_batch is None:
        query_batch = torch.zeros(len(queries), dtype=torch.int64, device=device)
        point_batch = torch.zeros(len(points), dtype=torch.int64, device=device)
    cell = radius / CELLS_PER_RADIUS
    point_cells = torch.floor(points / cell).long()
    query_cells = torch.floor(queries / cell).long()
    # Shift so that every cell and its neighbourhood have non-negative coordinates inside `extent`.
    reach = CELLS_PER_RADIUS
    low = torch.minimum(point_cells.min(0).values, query_cells.min(0).values) - reach
    point_cells, query_cells = point_cells - low, query_cells - low
    extent = torch.maximum(point_cells.max(0).values, query_cells.max(0).values) + reach + 1
    point_keys = _cell_keys(point_cells, point_batch.long(), extent)
    order = torch.argsort(point_keys, stable=True)
    cell_keys, cell_counts = torch.unique_consecutive(point_keys[order], return_counts=True)
    cell_starts = torch.cumsum(cell_counts, 0) - cell_counts
    steps = torch.arange(-reach, reach + 1, device=device)
    around = torch.cartesian_prod(steps, steps, steps)  # ((2·reach + 1)³, 3)
    around_keys = (around[:, 0] * extent[1] + around[:, 1]) * extent[2] + around[:, 2]

    query_parts, point_parts = [], []
    for start in range(0, len(queries), chunk_size):
        stop = min(start + chunk_size, len(queries))
        own = _cell_keys(query_cells[start:stop], query_batch[start:stop].long(), extent)
        wanted = (own.unsqueeze(1) + around_keys).reshape(-1)  # (q·(2·reach + 1)³,)
        slot = torch.searchsorted(cell_keys, wanted).clamp_max(len(cell_keys) - 1)
        counts = torch.where(cell_keys[slot] == wanted, cell_counts[slot], 0)
        # Expand every (query, cell) into its points: segment ids and offsets inside the segment.
        segment = torch.repeat_interleave(torch.arange(len(wanted), device=device), counts)
        offset = torch.arange(len(segment), device=device) - (torch.cumsum(counts, 0) - counts)[segment]
        point_index = order[cell_starts[slot][segment] + offset]
        query_index = segment // len(around_keys) + start
        distance = (queries[query_index] - points[point_index]).square().sum(1).sqrt()
        inside = distance < radius
        query_index, point_index, distance = query_index[inside], point_index[inside], distance[inside]
        # One stable sort on (query, distance): distance < radius, so query·2r + distance orders both; in
        # float64 the query offset still resolves distances 1e-11 m apart.
        sort_key = (query_index - start).double() * (2.0 * radius) + distance.double()
        by_query = torch.argsort(sort_key, stable=True)
        query_index, point_index = query_index[by_query], point_index[by_query]
        per_query = torch.bincount(query_index - start, minlength=stop - start)
        rank = torch.arange(len(query_index), device=device) - (torch.cumsum(per_query, 0) - per_query)[
            query_index - start
        ]
        keep = rank < max_neighbours
        query_parts.append(query_index[keep])
        point_parts.append(point_index[keep])
    return torch.cat(query_parts), torch.cat(point_parts)
