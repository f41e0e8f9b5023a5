"""Object classification metrics of a ReCon encoder: frozen global features, accuracy, voting, zero-shot.

Voting is reported as the mean (and std) over votes, not the maximum over 299 voting rounds that ReCon's
code (qizekun/ReCon) reports (docs/recon.md). Zero-shot follows its zero-shot model: a cloud's feature is
``ratio · text_proj(q_text) + img_proj(q_img)``, a class's embedding the sum of its prompts' text features
(unnormalised), the prediction the class of highest cosine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.models.point_transformer import ReConEncoder, finetune_features, svm_features, token_features
from cmcr_core.ops.geometry import farthest_point_sample, gather_points

__all__ = [
    "ZERO_SHOT_FEATURES", "class_prompt_sum", "cosine_logits", "extract_global_features", "overall_accuracy",
    "per_class_accuracy", "vote_logits", "voting_accuracy", "zero_shot_features",
]

ZERO_SHOT_FEATURES = ("full", "text", "image")


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
    return _encode_in_batches(encoder, points, batch_size, kinds[kind])


def _encode_in_batches(encoder: ReConEncoder, points: Tensor, batch_size: int,
                       head: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``head(queries, tokens)`` of every cloud, ``batch_size`` clouds per pass, the encoder in eval mode
    (its mode restored after)."""
    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, points.shape[0], batch_size):
        neighbourhoods, centres = encoder.group(points[start : start + batch_size])
        out.append(head(*encoder(neighbourhoods, centres, mask=None)))
    encoder.train(was_training)
    return torch.cat(out)


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


@torch.no_grad()
def zero_shot_features(
    encoder: ReConEncoder,
    img_proj: nn.Module | None,
    text_proj: nn.Module | None,
    points: Tensor,
    feature: str = "full",
    ratio: float = 0.25,
    batch_size: int = 64,
) -> Tensor:
    """ReCon's zero-shot feature of each cloud (eval mode, no masking).

    Args:
        img_proj, text_proj: the pretraining projections of the image and text queries.
        points: B x N x 3.
        feature: ``full`` (``ratio`` x text_proj(q_text) + img_proj(q_img)), ``text`` or ``image``.

    Returns:
        B x D.
    """
    if feature not in ZERO_SHOT_FEATURES:
        raise ValueError(f"zero-shot feature must be one of {ZERO_SHOT_FEATURES}, got {feature!r}")

    def head(queries: Tensor, _tokens: Tensor) -> Tensor:
        text = text_proj(queries[:, 2]) if feature in ("full", "text") else None
        image = img_proj(queries[:, 1]) if feature in ("full", "image") else None
        return image if text is None else text if image is None else ratio * text + image

    return _encode_in_batches(encoder, points, batch_size, head)


def class_prompt_sum(embeddings: Tensor) -> Tensor:
    """Class embeddings C x D from C x D or C x P x D (P prompts per class, summed without normalising)."""
    if embeddings.dim() == 3:
        return embeddings.sum(dim=1)
    if embeddings.dim() != 2:
        raise ValueError(f"class embeddings must be C x D or C x P x D, got shape {tuple(embeddings.shape)}")
    return embeddings


def cosine_logits(features: Tensor, class_embeddings: Tensor) -> Tensor:
    """B x C cosine similarities between B x D features and C x D class embeddings."""
    return F.normalize(features.float(), dim=-1) @ F.normalize(class_embeddings.float(), dim=-1).T
