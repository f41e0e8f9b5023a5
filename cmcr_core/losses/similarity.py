"""Similarity distillation loss: mean of 1 − cosine over paired rows, no negatives.

Formula (the relational paper's similarity baseline)::

    L_sim = (1/N) Σ_i (1 − k_i·q_i)

Evidence: the form is [secondary] (the same as OpenScene's distillation loss and CLIP2Scene's consistency
term). Both inputs are L2-normalised [assumed: the paper does not say], so ``k_i·q_i`` is a cosine and the
loss lies in [0, 2]. The teacher is frozen: ``teacher`` is detached.

With unit-norm features this loss equals the diagonal part of the relational loss's cross-modal term
(``relational.py``: C_ii = |k_i·q_i − q_i·q_i| = 1 − k_i·q_i).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["similarity_loss"]


def similarity_loss(student: Tensor, teacher: Tensor, normalize: bool = True) -> Tensor:
    """Mean of ``1 − cos(k_i, q_i)`` over the N pairs.

    Args:
        student: K, (N, D) student features.
        teacher: Q, (N, D) frozen teacher features, row-paired with ``student`` (detached here).
        normalize: L2-normalise both inputs first (set False only if they are unit-norm already).

    Returns:
        Scalar tensor in [0, 2].
    """
    if student.dim() != 2 or student.shape != teacher.shape or student.shape[0] == 0:
        raise ValueError(
            "similarity_loss: student and teacher must be non-empty (N, D) tensors of the same shape; "
            f"got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    teacher = teacher.detach()
    if normalize:
        student = F.normalize(student, dim=1)
        teacher = F.normalize(teacher, dim=1)
    return (1.0 - (student * teacher).sum(dim=1)).mean()
