"""Chamfer distances between batches of small point sets (ReCon / Point-MAE reconstruction loss).

Plain torch replacement of the CUDA ``chamfer_dist`` extension. Squared distances come from explicit
differences (exact and never negative, unlike the ``|a|^2 + |b|^2 - 2ab`` expansion); the batch is
processed ``chunk_size`` sets at a time so memory stays at chunk x P x Q x D.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def chamfer_l2(pred: Tensor, gt: Tensor, chunk_size: int = 4096) -> Tensor:
    """Chamfer-L2 as in the reference ``cdl2``: mean_pred(min_gt d) + mean_gt(min_pred d), d squared.

    No square root and no factor 1/2; means run over all sets and points of the batch.

    Args:
        pred: B x P x D predicted sets.
        gt: B x Q x D target sets.

    Returns:
        scalar.
    """
    to_gt, to_pred = nearest_squared_distances(pred, gt, chunk_size)
    return to_gt.mean() + to_pred.mean()


def chamfer_l1(pred: Tensor, gt: Tensor, chunk_size: int = 4096, eps: float = 1e-12) -> Tensor:
    """Chamfer-L1 as in the reference ``cdl1``: (mean sqrt d_pred + mean sqrt d_gt) / 2.

    ``eps`` inside the square root keeps the gradient finite where two points coincide.

    Args:
        pred: B x P x D.
        gt: B x Q x D.

    Returns:
        scalar.
    """
    to_gt, to_pred = nearest_squared_distances(pred, gt, chunk_size)
    return (torch.sqrt(to_gt + eps).mean() + torch.sqrt(to_pred + eps).mean()) / 2
