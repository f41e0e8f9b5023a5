"""Lovász-softmax against the definition of the Lovász extension (python sets) and analytic values, on the
test device (CMCR_TEST_DEVICE; the references run on the CPU)."""

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
def test_matches_set_definition(classes: str, seed: int, device) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (40,), generator=generator)  # class 4 never present
    probabilities = F.softmax(logits, dim=1)
    ours = lovasz_softmax(probabilities.to(device), labels.to(device), classes=classes)
    assert ours.item() == pytest.approx(naive_lovasz_softmax(probabilities, labels, classes), abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_absent_classes_get_no_gradient_with_present(device, dtype, tolerance) -> None:
    """classes="present" weighs the absent classes' columns by 0: the same value and gradient as the loss
    over the present columns alone."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(30, 6, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 2, 3, 5] * 7 + [2, 3])  # classes 1 and 4 absent
    probabilities = F.softmax(logits, dim=1).to(device, dtype).requires_grad_(True)
    lovasz_softmax(probabilities, labels.to(device)).backward()
    present = torch.tensor([0, 2, 3, 5])
    reference = F.softmax(logits, dim=1)[:, present].requires_grad_(True)  # float64 CPU, present columns
    expected = lovasz_softmax(reference, torch.searchsorted(present, labels), classes="all")
    expected.backward()
    grad = probabilities.grad.cpu()
    assert torch.equal(grad[:, [1, 4]], torch.zeros(30, 2, dtype=dtype))
    tolerance.check(grad[:, present], reference.grad, dtype)


def test_hard_predictions_give_one_minus_iou(device) -> None:
    """At 0/1 errors the Lovász extension equals the Jaccard loss itself: mean over classes of 1 − IoU."""
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1], device=device)
    predicted = torch.tensor([0, 1, 0, 1, 2, 2, 2, 0, 2, 1], device=device)
    loss = lovasz_softmax(F.one_hot(predicted, 3).double(), labels)
    ious = []
    for c in range(3):
        inter = int(((labels == c) & (predicted == c)).sum())
        union = int(((labels == c) | (predicted == c)).sum())
        ious.append(inter / union)
    assert loss.item() == pytest.approx(sum(1 - i for i in ious) / 3, abs=1e-12)
    assert lovasz_softmax(F.one_hot(labels, 3).double(), labels).item() == 0.0


def test_ignore_index_drops_rows_and_gradient_flows(device) -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(30, 4, generator=generator, dtype=torch.float64).to(device).requires_grad_(True)
    labels = torch.randint(0, 4, (30,), generator=generator).to(device)
    keep = labels != 0
    loss = lovasz_softmax(F.softmax(logits, 1), labels, ignore_index=0)
    expected = naive_lovasz_softmax(F.softmax(logits, 1)[keep].detach().cpu(), labels[keep].cpu(), "present")
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[keep].abs().sum() > 0
    assert logits.grad[~keep].abs().sum() == 0


def test_empty_input_is_zero_with_graph(device) -> None:
    probabilities = torch.rand(0, 3, device=device, requires_grad=True)
    loss = lovasz_softmax(probabilities, torch.zeros(0, dtype=torch.int64, device=device))
    assert loss.item() == 0.0 and loss.requires_grad
