"""Lovász-softmax against the definition of the Lovász extension (python sets) and analytic values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.losses.lovasz import lovasz_softmax


def naive_lovasz_class(errors: list[float], foreground: list[bool]) -> float:
    """Σ_i e_π(i)·(Δ(prefix_i) − Δ(prefix_{i−1})) with Δ(M) = |M| / |GT ∪ M| computed on python sets."""
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    gt = {i for i, f in enumerate(foreground) if f}

    def jaccard_loss(mispredicted: set[int]) -> float:
        union = gt | mispredicted
        return len(mispredicted) / len(union) if union else 0.0

    total, previous, prefix = 0.0, 0.0, set()
    for i in order:
        prefix.add(i)
        value = jaccard_loss(prefix)
        total += errors[i] * (value - previous)
        previous = value
    return total


def naive_lovasz_softmax(probabilities: torch.Tensor, labels: torch.Tensor, classes: str) -> float:
    p, y = probabilities.tolist(), labels.tolist()
    chosen = sorted(set(y)) if classes == "present" else range(probabilities.shape[1])
    losses = []
    for c in chosen:
        fg = [label == c for label in y]
        losses.append(naive_lovasz_class([abs(float(f) - row[c]) for f, row in zip(fg, p, strict=True)], fg))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("classes", ["present", "all"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_set_definition(classes: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (40,), generator=generator)  # class 4 never present
    probabilities = F.softmax(logits, dim=1)
    ours = lovasz_softmax(probabilities, labels, classes=classes)
    assert ours.item() == pytest.approx(naive_lovasz_softmax(probabilities, labels, classes), abs=1e-12)


def test_hard_predictions_give_one_minus_iou() -> None:
    """At 0/1 errors the Lovász extension equals the Jaccard loss itself: mean over classes of 1 − IoU."""
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    predicted = torch.tensor([0, 1, 0, 1, 2, 2, 2, 0, 2, 1])
    loss = lovasz_softmax(F.one_hot(predicted, 3).double(), labels)
    ious = []
    for c in range(3):
        inter = int(((labels == c) & (predicted == c)).sum())
        union = int(((labels == c) | (predicted == c)).sum())
        ious.append(inter / union)
    assert loss.item() == pytest.approx(sum(1 - i for i in ious) / 3, abs=1e-12)
    assert lovasz_softmax(F.one_hot(labels, 3).double(), labels).item() == 0.0


def test_ignore_index_drops_rows_and_gradient_flows() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(30, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (30,), generator=generator)
    keep = labels != 0
    loss = lovasz_softmax(F.softmax(logits, 1), labels, ignore_index=0)
    expected = naive_lovasz_softmax(F.softmax(logits, 1)[keep].detach(), labels[keep], "present")
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[keep].abs().sum() > 0
    assert logits.grad[~keep].abs().sum() == 0


def test_empty_input_is_zero_with_graph() -> None:
    probabilities = torch.rand(0, 3, requires_grad=True)
    loss = lovasz_softmax(probabilities, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0 and loss.requires_grad
