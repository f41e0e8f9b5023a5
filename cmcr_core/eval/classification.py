"""Object classification metrics of a ReCon encoder: frozen global features, accuracy, voting (the protocols
of qizekun/ReCon, docs/recon.md). Voting is reported as the mean (and std) over votes, not the reference's max
over rounds."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cmcr_core.models.point_transformer import ReConEncoder, finetune_features, svm_features, token_features
from cmcr_core.ops.geometry import farthest_point_sample, gather_points

__all__ = [
    "extract_global_features", "overall_accuracy", "per_class_accuracy", "vote_logits", "voting_accuracy",
]


@torch.no_grad()
def extract_global_features(
    encoder: ReConEncoder, points: Tensor, kind: str = "svm", batch_size: int = 64
) -> Tensor:
    """Frozen global features for linear probes / SVM (eval mode, no masking, no grad).

    Args:
        points: B x N x 3.
        kind: ``svm`` (2C: max over queries, max + mean pool of tokens), ``tokens`` (2C: max pool and
            mean pool of the tokens, no queries) or ``finetune`` (4C).

    Returns:
        B x 2C or B x 4C.
    """
    kinds = {"svm": svm_features, "tokens": token_features, "finetune": finetune_features}
    if kind not in kinds:
        raise ValueError(f"feature kind must be one of {sorted(kinds)}, got {kind!r}")
    was_training = encoder.training
    encoder.eval()
    feats = []
    for start in range(0, points.shape[0], batch_size):
        neighbourhoods, centres = encoder.group(points[start : start + batch_size])
        queries, tokens = encoder(neighbourhoods, centres, mask=None)
        feats.append(kinds[kind](queries, tokens))
    encoder.train(was_training)
    return torch.cat(feats)


def overall_accuracy(logits_or_pred: Tensor, labels: Tensor) -> float:
    """Overall accuracy in [0, 1] from B x classes logits or B predicted labels."""
    pred = logits_or_pred.argmax(-1) if logits_or_pred.dim() == 2 else logits_or_pred
    if pred.shape != labels.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(labels.shape)} differ")
    return float((pred == labels).float().mean()) if labels.numel() else float("nan")


@torch.no_grad()
def vote_logits(
    classify: Callable[[Tensor], Tensor],
    points: Tensor,
    num_points: int,
    num_subsets: int = 10,
    fps_pool: int | None = None,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One vote: logits averaged over ``num_subsets`` random subsets of an FPS pool, each augmented.

    Args:
        classify: B x N x 3 -> B x classes.
        points: B x P x 3.
        fps_pool: FPS pool size (default P: random subsets of the whole cloud in FPS order).
        augment: optional test-time augmentation ``(points, generator) -> points``.

    Returns:
        B x classes mean logits.
    """
    pool_size = min(fps_pool or points.shape[1], points.shape[1])
    pool = gather_points(points, farthest_point_sample(points, pool_size))
    total = None
    for _ in range(num_subsets):
        choice = torch.randperm(pool_size, generator=generator)[:num_points].to(points.device)
        subset = pool[:, choice]
        if augment is not None:
            subset = augment(subset, generator)
        logits = classify(subset)
        total = logits if total is None else total + logits
    return total / num_subsets


def voting_accuracy(
    classify: Callable[[Tensor], Tensor],
    points: Tensor,
    labels: Tensor,
    num_points: int,
    num_votes: int = 10,
    num_subsets: int = 10,
    fps_pool: int | None = None,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Voting evaluation reported as the MEAN (and std) over votes, not the reference's max over rounds."""
    generator = torch.Generator().manual_seed(seed)
    accs = [
        overall_accuracy(
            vote_logits(classify, points, num_points, num_subsets, fps_pool, augment, generator), labels
        )
        for _ in range(num_votes)
    ]
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
    return {"mean": mean, "std": std, "votes": accs}


def per_class_accuracy(pred: Tensor, labels: Tensor, class_names: list[str]) -> dict[str, float]:
    """Accuracy of each class present in ``labels`` (name -> accuracy)."""
    return {
        class_names[c]: float((pred[labels == c] == c).float().mean()) for c in sorted(set(labels.tolist()))
    }
