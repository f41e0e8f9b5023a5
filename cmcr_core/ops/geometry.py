"""Point utilities in plain torch: farthest point sampling, k nearest neighbours, patch grouping.

These replace the CUDA ops of the reference (``pointnet2_ops.furthest_point_sample``, ``knn_point``) so the
same code runs on CPU and GPU. All functions are batched over a leading dimension ``B`` and deterministic.
"""

from __future__ import annotations

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
