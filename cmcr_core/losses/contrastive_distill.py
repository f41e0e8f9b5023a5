"""One-directional InfoNCE between paired student and teacher rows (contrastive distillation).

Formula (the relational paper's contrastive baseline)::

    L_con = -(1/N) Σ_i log( exp(k_i·q_i / τ) / Σ_j exp(k_i·q_j / τ) )

Row ``i`` of ``student`` (K) and row ``i`` of ``teacher`` (Q) form the positive pair; every other teacher
row is a negative for student row ``i``. The anchor is the student (one direction only), as in
PPKT/SLidR/ST-SLidR/CLIP2Scene.

Defaults and evidence:

* τ = 0.07 [code: PPKT/SLidR/ST-SLidR/CLIP2Scene]; the relational paper's τ is [unknown].
* Both inputs are L2-normalised [assumed: the paper does not say]; pass ``normalize=False`` when the caller
  has already normalised (the result is then the plain dot-product InfoNCE).
* The teacher is frozen: ``teacher`` is detached, so no gradient reaches it.

This is the same formula as the PointInfoNCE used by PPKT (``point_info_nce.py``) for rows that are
already paired; it is kept self-contained so the relational-distillation baselines depend only on tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["contrastive_distill_loss"]


def _check_pair(student: Tensor, teacher: Tensor, name: str) -> None:
    if student.dim() != 2 or teacher.dim() != 2:
        raise ValueError(
            f"{name}: student and teacher must be 2-D (N, D); got shapes "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if student.shape != teacher.shape:
        raise ValueError(
            f"{name}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must have the "
            "same shape (row i of each is a positive pair)"
        )
    if student.shape[0] == 0:
        raise ValueError(f"{name}: got N = 0 pairs; at least one pair is needed")


def contrastive_distill_loss(
    student: Tensor,
    teacher: Tensor,
    temperature: float = 0.07,
    normalize: bool = True,
) -> Tensor:
    """Contrastive (InfoNCE) distillation loss with the student as anchor.

    Args:
        student: K, (N, D) student features; row i pairs with ``teacher[i]``.
        teacher: Q, (N, D) frozen teacher features (detached here).
        temperature: τ > 0 dividing the cosine similarities.
        normalize: L2-normalise both inputs first.

    Returns:
        Scalar tensor, the mean over the N anchors; always ≥ 0.
    """
    _check_pair(student, teacher, "contrastive_distill_loss")
    if not temperature > 0:
        raise ValueError(f"contrastive_distill_loss: temperature must be > 0, got {temperature}")
    teacher = teacher.detach()
    if normalize:
        student = F.normalize(student, dim=1)
        teacher = F.normalize(teacher, dim=1)
    logits = student @ teacher.t() / temperature  # (N, N): anchor rows, candidate columns
    targets = torch.arange(student.shape[0], device=student.device)
    return F.cross_entropy(logits, targets)
