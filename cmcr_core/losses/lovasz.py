"""Lovász-softmax: a convex surrogate of the per-class Jaccard loss (Berman et al., CVPR 2018).

For class c with ground-truth indicator y_c (P,) and predicted probability p_c (P,), the errors
e = |y_c − p_c| are sorted in decreasing order (permutation π) and the loss is the Lovász extension of
the Jaccard loss Δ_c(M) = |M| / |{y = c} ∪ M| evaluated at e:

    loss_c = Σ_i e_π(i) · (Δ_c({π(1..i)}) − Δ_c({π(1..i−1)}))

The segmentation fine-tuning of SLidR and CMCR (their downstream configs) adds it to the cross-entropy with
`classes="present"`: the mean over the classes that occur in the labels of the batch. The caller removes
ignored points (label 0) before calling, or passes `ignore_index`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["lovasz_grad", "lovasz_softmax"]


def lovasz_grad(sorted_foreground: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at sorted errors.

    Args:
        sorted_foreground: (P,) float 0/1 indicator of the class, ordered by decreasing error.
    Returns:
        (P,) Δ(prefix i) − Δ(prefix i − 1) for i = 1..P (Δ of the empty prefix is 0).
    """
    total = sorted_foreground.sum()
    intersection = total - sorted_foreground.cumsum(0)
    union = total + (1.0 - sorted_foreground).cumsum(0)
    jaccard = 1.0 - intersection / union
    if jaccard.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax(
    probabilities: Tensor,
    labels: Tensor,
    classes: Literal["present", "all"] = "present",
    ignore_index: int | None = None,
) -> Tensor:
    """Lovász-softmax loss averaged over classes.

    Args:
        probabilities: (P, C) class probabilities (softmax output), float.
        labels: (P,) int64 ground-truth class of each row, in 0..C−1.
        classes: "present" averages over the classes occurring in `labels` (reference setting);
            "all" averages over every class (a class absent from `labels` contributes Σ_i p_i,c ·
            gradient, i.e. it is penalised for false positives).
        ignore_index: rows with this label are dropped first.
    Returns:
        scalar loss; 0 (with a graph to `probabilities`) when no row or no present class remains.
    """
    if probabilities.dim() != 2:
        raise ValueError(f"probabilities: expected (P, C), got {tuple(probabilities.shape)}")
    if labels.shape != probabilities.shape[:1]:
        raise ValueError(f"labels: expected shape ({probabilities.shape[0]},), got {tuple(labels.shape)}")
    if ignore_index is not None:
        keep = labels != ignore_index
        probabilities, labels = probabilities[keep], labels[keep]
    zero = probabilities.sum() * 0.0
    if labels.numel() == 0:
        return zero
    if classes not in ("present", "all"):
        raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
    num_classes = probabilities.shape[1]
    low, high = torch.stack([labels.min(), labels.max()]).tolist()  # the one host sync of the loss
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {low}..{high}")
    # Every class at once: (P, C) errors sorted per column; the per-column gradient is lovasz_grad. The
    # present classes are weighted by a mask, not selected (selecting would wait for the device to count
    # them); an absent class's column is finite (its union is at least its rank) and gets weight 0.
    class_ids = torch.arange(num_classes, device=labels.device)
    foreground = (labels.unsqueeze(1) == class_ids.unsqueeze(0)).to(probabilities.dtype)
    errors = (foreground - probabilities).abs()
    errors_sorted, order = torch.sort(errors, dim=0, descending=True)
    fg_sorted = torch.gather(foreground, 0, order)
    total = fg_sorted.sum(0, keepdim=True)
    intersection = total - fg_sorted.cumsum(0)
    union = total + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    per_class = (errors_sorted * grad).sum(0)
    if classes == "all":
        return per_class.mean()
    present = total.squeeze(0) > 0
    return (per_class * present).sum() / present.sum()
