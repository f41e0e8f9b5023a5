"""Chamfer distances between batches of small point sets (ReCon / Point-MAE reconstruction loss).

Plain torch replacement of the CUDA ``chamfer_dist`` extension. The nearest-point search is
``cmcr_core.ops.geometry.nearest_squared_distances``: squared distances from explicit differences (exact and
never negative, unlike the ``|a|^2 + |b|^2 - 2ab`` expansion), ``chunk_size`` sets at a time so memory stays
at chunk x P x Q x D.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmcr_core.ops.geometry import nearest_squared_distances


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
