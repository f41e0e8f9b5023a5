"""Geometry on point sets in plain torch (and one numpy twin): every neighbour search of the toolkit.

* farthest point sampling (``farthest_point_sample``, its numpy twin for data loaders), batched gathers;
* k nearest neighbours (``knn``), nearest squared distances between sets (Chamfer's search), FPS + kNN
  patch grouping and the patch masks of ReCon;
* radius neighbours of occupancy queries (``radius_neighbours``, a vectorised cell-grid search).

These replace the CUDA ops of the references (``pointnet2_ops.furthest_point_sample``, ``knn_point``,
``chamfer_dist``, ``torch_cluster.radius``) so the same code runs on CPU and GPU. Batched functions work
over a leading dimension ``B``; every function is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _check_cloud(xyz: Tensor, name: str) -> None:
    if xyz.dim() != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"{name} must have shape B x N x 3, got {tuple(xyz.shape)}")


def farthest_point_sample(xyz: Tensor, num_samples: int, start_index: int | Tensor = 0) -> Tensor:
    """Indices of ``num_samples`` points chosen by iterative farthest point sampling.

    The first index is ``start_index`` (0 as in the reference CUDA op, or a per-sample ``B`` tensor);
    each next one is the point with the largest squared distance to the set chosen so far, ties going to
    the lowest index (``argmax`` returns the first maximum).

    Args:
        xyz: B x N x 3 points.
        num_samples: G, 1 <= G <= N.
        start_index: int or B long tensor.

    Returns:
        B x G long indices into N.
    """
    _check_cloud(xyz, "xyz")
    batch, num_points, _ = xyz.shape
    if not 1 <= num_samples <= num_points:
        raise ValueError(
            f"num_samples must be in [1, {num_points}] for clouds of {num_points} points, got {num_samples}"
        )
    device = xyz.device
    # integer inputs are promoted; float32/float64 are kept so ties resolve exactly as in the input precision
    xyz = xyz.detach() if xyz.is_floating_point() else xyz.detach().float()
    idx = torch.empty(batch, num_samples, dtype=torch.long, device=device)
    if isinstance(start_index, Tensor):
        farthest = start_index.to(device=device, dtype=torch.long).reshape(batch)
    else:
        farthest = torch.full((batch,), int(start_index), dtype=torch.long, device=device)
    if bool(((farthest < 0) | (farthest >= num_points)).any()):
        raise ValueError(f"start_index out of range [0, {num_points}): {start_index}")
    min_dist = torch.full((batch, num_points), float("inf"), device=device, dtype=xyz.dtype)
    rows = torch.arange(batch, device=device)
    for i in range(num_samples):
        idx[:, i] = farthest
        chosen = xyz[rows, farthest]  # B x 3
        dist = ((xyz - chosen[:, None, :]) ** 2).sum(-1)  # B x N
        min_dist = torch.minimum(min_dist, dist)
        farthest = min_dist.argmax(dim=1)
    return idx


def farthest_point_sample_np(points: np.ndarray, num_samples: int, start_index: int = 0) -> np.ndarray:
    """Farthest point sampling of one cloud (P x 3) -> ``num_samples`` indices, ties to the lowest index."""
    if not 1 <= num_samples <= len(points):
        raise ValueError(f"num_samples must be in [1, {len(points)}], got {num_samples}")
    points = np.asarray(points, dtype=np.float64)
    idx = np.empty(num_samples, dtype=np.int64)
    min_dist = np.full(len(points), np.inf)
    farthest = start_index
    for i in range(num_samples):
        idx[i] = farthest
        min_dist = np.minimum(min_dist, ((points - points[farthest]) ** 2).sum(1))
        farthest = int(np.argmax(min_dist))
    return idx


def gather_points(points: Tensor, idx: Tensor) -> Tensor:
    """Batched gather: ``out[b, ...] = points[b, idx[b, ...]]``.

    Args:
        points: B x N x D.
        idx: B x ... long indices into N.

    Returns:
        B x ... x D.
    """
    batch = points.shape[0]
    flat = idx.reshape(batch, -1)
    out = torch.gather(points, 1, flat[..., None].expand(-1, -1, points.shape[-1]))
    return out.reshape(*idx.shape, points.shape[-1])


def square_distance(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances, computed from differences (exact, never negative).

    Args:
        a: B x M x D.
        b: B x N x D.

    Returns:
        B x M x N.
    """
    return ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1)


def knn(query: Tensor, ref: Tensor, k: int, chunk_size: int = 256) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest points of ``ref`` for every point of ``query``, nearest first.

    Distances are evaluated ``chunk_size`` queries at a time so memory stays at B x chunk x N x 3.

    Args:
        query: B x M x 3.
        ref: B x N x 3.
        k: 1 <= k <= N.
        chunk_size: queries per chunk.

    Returns:
        (squared distances B x M x k, long indices B x M x k into N).
    """
    _check_cloud(query, "query")
    _check_cloud(ref, "ref")
    if query.shape[0] != ref.shape[0]:
        raise ValueError(f"batch sizes differ: query {query.shape[0]}, ref {ref.shape[0]}")
    if not 1 <= k <= ref.shape[1]:
        raise ValueError(f"k must be in [1, {ref.shape[1]}], got {k}")
    dists, idxs = [], []
    for start in range(0, query.shape[1], chunk_size):
        d = square_distance(query[:, start : start + chunk_size], ref)
        dist, idx = torch.topk(d, k, dim=-1, largest=False, sorted=True)
        dists.append(dist)
        idxs.append(idx)
    return torch.cat(dists, 1), torch.cat(idxs, 1)


def nearest_squared_distances(pred: Tensor, gt: Tensor, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """For every point of each set, the squared distance to the nearest point of the other set.

    Args:
        pred: B x P x D.
        gt: B x Q x D.
        chunk_size: sets per chunk.

    Returns:
        (B x P: min over gt, B x Q: min over pred).
    """
    if pred.dim() != 3 or gt.dim() != 3:
        raise ValueError(
            f"chamfer expects B x P x D and B x Q x D, got {tuple(pred.shape)}, {tuple(gt.shape)}"
        )
    if pred.shape[0] != gt.shape[0] or pred.shape[2] != gt.shape[2]:
        raise ValueError(f"chamfer batch/dim mismatch: pred {tuple(pred.shape)}, gt {tuple(gt.shape)}")
    to_gt, to_pred = [], []
    for start in range(0, pred.shape[0], chunk_size):
        p = pred[start : start + chunk_size]
        g = gt[start : start + chunk_size]
        d = ((p[:, :, None, :] - g[:, None, :, :]) ** 2).sum(-1)  # chunk x P x Q
        to_gt.append(d.min(dim=2).values)
        to_pred.append(d.min(dim=1).values)
    return torch.cat(to_gt), torch.cat(to_pred)


def group_patches(xyz: Tensor, num_groups: int, group_size: int) -> tuple[Tensor, Tensor]:
    """Split clouds into patches: FPS centres (start index 0), their kNN, centred on the centre.

    No scale normalisation of the patches (as in the reference).

    Args:
        xyz: B x N x 3.
        num_groups: G.
        group_size: K.

    Returns:
        (neighbourhoods B x G x K x 3 relative to their centre, centres B x G x 3).
    """
    centre_idx = farthest_point_sample(xyz, num_groups)
    centres = gather_points(xyz, centre_idx)
    _, nn_idx = knn(centres, xyz, group_size)
    neighbourhoods = gather_points(xyz, nn_idx) - centres[:, :, None, :]
    return neighbourhoods, centres


def random_patch_mask(
    batch: int,
    num_groups: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Random masking with exactly ``int(ratio * G)`` masked patches per sample (reference ``rand`` mode).

    Noise is drawn on the CPU (so a CPU ``generator`` serves any device) and moved to ``device``.

    Args:
        batch: B.
        num_groups: G.
        ratio: masking ratio in [0, 1).

    Returns:
        B x G bool, True = masked.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    num_masked = int(ratio * num_groups)
    noise = torch.rand(batch, num_groups, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return (ranks < num_masked).to(device)


def block_patch_mask(centres: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Block masking: per sample, the ``int(ratio * G)`` centres nearest to a random centre are masked.

    Args:
        centres: B x G x 3.
        ratio: masking ratio in [0, 1).

    Returns:
        B x G bool, True = masked.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    batch, num_groups, _ = centres.shape
    num_masked = int(ratio * num_groups)
    seed_idx = torch.randint(0, num_groups, (batch,), generator=generator).to(centres.device)
    seeds = centres[torch.arange(batch, device=centres.device), seed_idx]
    dist = ((centres - seeds[:, None, :]) ** 2).sum(-1)
    ranks = dist.argsort(dim=1, stable=True).argsort(dim=1)
    return ranks < num_masked


# Grid cells of side radius / CELLS_PER_RADIUS: the searched block shrinks from 27 r³ (1 cell per radius)
# to 12.4 r³ (the 7 × 7 columns around the query's cell, z ranges trimmed to the sphere), i.e. fewer
# candidate pairs to measure in the dense rings near the sensor. With the column search (two binary searches
# per column, not one per cell), synthetic sweeps, 2 × 2048 queries, CPU seconds: 3 -> 0.13, 4 -> 0.13,
# 5 -> 0.14, 6 -> 0.14 (per-cell search before: 1 -> 0.50, 2 -> 0.45, 3 -> 0.33, 4 -> 0.36).
CELLS_PER_RADIUS = 3
# Distance bins of the per-query histogram that picks which pairs go through the final sort.
SELECT_BINS = 256


def _cell_keys(cells: Tensor, batch: Tensor, extent: Tensor) -> Tensor:
    """One int64 key per (sample, cell): row-major over (batch, x, y, z) with the given extents."""
    return ((batch * extent[0] + cells[:, 0]) * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]


def _columns(reach: int, extent: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Key offsets of the cell columns (dx, dy) around a query's cell and the z reach of each.

    With e = max(|d| − 1, 0) cells of gap per axis, a column (dx, dy) is at least ρ = √(e_x² + e_y²)
    cells away in the plane, so a point closer than ``reach`` cells (the radius) lies in it only if ρ <
    reach and its z gap is below √(reach² − ρ²): the column's z range is |dz| ≤ ⌊1 + √(reach² − ρ²)⌋
    (capped at reach). Columns and ranges keep the boundary cases, so no point inside the radius is missed.
    """
    steps = torch.arange(-reach, reach + 1, device=device)
    around = torch.cartesian_prod(steps, steps)  # ((2·reach + 1)², 2) columns (dx, dy)
    gap = (around.abs() - 1).clamp_min(0)
    planar = gap.square().sum(1)
    keep = planar <= reach * reach
    around, planar = around[keep], planar[keep]
    z_reach = torch.floor(1.0 + torch.sqrt((reach * reach - planar).double())).long().clamp_max(reach)
    return (around[:, 0] * extent[1] + around[:, 1]) * extent[2], z_reach


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

    Vectorised grid search: points are bucketed into cubic cells of side ``radius / CELLS_PER_RADIUS`` and
    sorted once by cell key, z fastest, so the cells (x, y, z − reach … z + reach) of one column are one
    contiguous run of the sorted points; each query finds, with two binary searches per column, the runs of
    the (2·reach + 1)² columns around its own cell (every point closer than ``radius`` is among them).
    Distances are computed by direct differences; pairs at ``radius`` or farther are dropped. Instead of
    sorting every pair inside the radius (hundreds per query in the dense rings near the sensor), a
    per-query histogram of the distances (``SELECT_BINS`` bins over [0, radius)) gives the bin holding the
    ``max_neighbours``-th nearest point; only pairs up to that bin (a monotone cut, so it never drops one
    of the nearest) go through the stable (query, distance) sort that keeps the nearest
    ``max_neighbours``. No Python loop over samples or queries; ``chunk_size`` queries at a time bound the
    candidate memory.

    Args:
        queries: (Q, 3) query positions.
        points: (N, 3) point positions.
        radius: strict bound on the Euclidean distance.
        max_neighbours: at most this many (the nearest) points per query; ties keep the order of the
            candidates (by cell, then by point index).
        query_batch, point_batch: (Q,), (N,) int64 sample index of each row (both or neither; any order).
        chunk_size: queries per block. Each block waits for the device three times (the sizes of the
            run expansion and of two selections), so on a GPU a larger block means fewer waits.

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
    # Shift so that every cell and its neighbourhood have non-negative coordinates inside `extent` (so a
    # column's z range never runs into the next column's keys).
    reach = CELLS_PER_RADIUS
    low = torch.minimum(point_cells.min(0).values, query_cells.min(0).values) - reach
    point_cells, query_cells = point_cells - low, query_cells - low
    extent = torch.maximum(point_cells.max(0).values, query_cells.max(0).values) + reach + 1
    point_keys = _cell_keys(point_cells, point_batch.long(), extent)
    order = torch.argsort(point_keys, stable=True)
    sorted_keys, sorted_points = point_keys[order], points[order]
    around_keys, around_reach = _columns(reach, extent, device)
    bins = SELECT_BINS

    query_parts, point_parts = [], []
    for start in range(0, len(queries), chunk_size):
        stop = min(start + chunk_size, len(queries))
        block = queries[start:stop]
        own = _cell_keys(query_cells[start:stop], query_batch[start:stop].long(), extent)
        centre = (own.unsqueeze(1) + around_keys).reshape(-1)  # (q·columns,) key of (dx, dy, dz = 0)
        column_reach = around_reach.repeat(stop - start)
        first = torch.searchsorted(sorted_keys, centre - column_reach)
        counts = torch.searchsorted(sorted_keys, centre + column_reach, right=True) - first
        # Expand every (query, column) into its run of sorted points.
        segment = torch.repeat_interleave(torch.arange(len(centre), device=device), counts)
        position = torch.arange(len(segment), device=device) + (first - (torch.cumsum(counts, 0) - counts))[
            segment
        ]
        local = segment // len(around_keys)  # query index inside the block
        distance = (block[local] - sorted_points[position]).square().sum(1).sqrt()
        # Histogram cut: bin ≥ bins means outside the radius.
        inside_bin = (distance * (bins / radius)).long().clamp_max(bins - 1)
        rank_bin = torch.where(distance < radius, inside_bin, bins)
        histogram = torch.bincount(local * (bins + 1) + rank_bin, minlength=(stop - start) * (bins + 1))
        below = torch.cumsum(histogram.view(stop - start, bins + 1)[:, :bins], 1)  # pairs in bins ≤ b
        cut = torch.searchsorted(below, torch.full((stop - start, 1), max_neighbours, device=device,
                                                   dtype=below.dtype)).squeeze(1).clamp_max(bins - 1)
        # One index for the three selections (a boolean mask per tensor would wait for the device thrice).
        keep = torch.nonzero(rank_bin <= cut[local]).squeeze(1)
        local, position, distance = local[keep], position[keep], distance[keep]
        # One stable sort on (query, distance): distance < radius, so query·2r + distance orders both; in
        # float64 the query offset still resolves distances 1e-11 m apart.
        sort_key = local.double() * (2.0 * radius) + distance.double()
        by_query = torch.argsort(sort_key, stable=True)
        local, position = local[by_query], position[by_query]
        per_query = torch.bincount(local, minlength=stop - start)
        rank = torch.arange(len(local), device=device) - (torch.cumsum(per_query, 0) - per_query)[local]
        nearest = torch.nonzero(rank < max_neighbours).squeeze(1)
        query_parts.append(local[nearest] + start)
        point_parts.append(order[position[nearest]])
    return torch.cat(query_parts), torch.cat(point_parts)
