"""Regression of student features onto frozen teacher features (ReCon's cross-modal "distillation").

The target is always detached: teachers are frozen and a gradient must never reach them (or a feature
cache). ReCon uses SmoothL1 with PyTorch defaults (beta = 1, mean over all elements), neither side
normalised; MSE and cosine are offered for the shared regression-loss registry.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

REGRESSION_KINDS = ("smooth_l1", "mse", "l1", "cosine")


def feature_regression(pred: Tensor, target: Tensor, kind: str = "smooth_l1", beta: float = 1.0) -> Tensor:
    """Mean regression loss between predicted and (detached) target features.

    Args:
        pred: B x D student features (e.g. ``img_proj(q_img)``).
        target: B x D teacher features.
        kind: ``smooth_l1`` (reference), ``mse``, ``l1`` or ``cosine`` (mean of 1 - cos).
        beta: SmoothL1 transition point.

    Returns:
        scalar.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"feature_regression: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ"
        )
    target = target.detach().to(pred.dtype)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8)).mean()
    raise ValueError(f"unknown regression kind {kind!r}; expected one of {REGRESSION_KINDS}")
