"""Feature regression (ReCon's image/text targets): every kind against a naive per-element loop, analytic
values, and the frozen target, computed on the test device."""

from __future__ import annotations

import math

import pytest
import torch

from cmcr_core.losses.feature_regression import REGRESSION_KINDS, feature_regression

torch.set_num_threads(1)


def naive(pred: list[list[float]], target: list[list[float]], kind: str, beta: float) -> float:
    """Plain Python: the mean over elements (rows for cosine) of the named per-element loss."""
    if kind == "cosine":
        values = []
        for p, t in zip(pred, target, strict=True):
            dot = sum(a * b for a, b in zip(p, t, strict=True))
            norm = max(math.sqrt(sum(a * a for a in p)), 1e-8) * max(math.sqrt(sum(b * b for b in t)), 1e-8)
            values.append(1.0 - dot / norm)
        return sum(values) / len(values)
    values = []
    for p, t in zip(pred, target, strict=True):
        for a, b in zip(p, t, strict=True):
            d = abs(a - b)
            if kind == "smooth_l1":
                values.append(0.5 * d * d / beta if d < beta else d - 0.5 * beta)
            elif kind == "mse":
                values.append(d * d)
            else:
                values.append(d)
    return sum(values) / len(values)


@pytest.mark.parametrize("kind", REGRESSION_KINDS)
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_every_kind_matches_the_naive_loop(kind: str, beta: float, device) -> None:
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2
    target = torch.randn(7, 5, generator=g, dtype=torch.float64)
    got = float(feature_regression(pred.to(device), target.to(device), kind, beta=beta))
    assert got == pytest.approx(naive(pred.tolist(), target.tolist(), kind, beta), rel=1e-12, abs=1e-12)


def test_analytic_values_and_a_frozen_target(device) -> None:
    pred = torch.tensor([[3.0, 4.0]], device=device, requires_grad=True)
    target = torch.tensor([[0.0, 0.0]], device=device, requires_grad=True)
    assert feature_regression(pred, target, "l1").item() == pytest.approx(3.5)
    assert feature_regression(pred, target, "mse").item() == pytest.approx(12.5)
    other = torch.tensor([[4.0, -3.0]], device=device)
    assert feature_regression(pred, other, "cosine").item() == pytest.approx(1.0)
    feature_regression(pred, target, "l1").backward()
    assert target.grad is None and pred.grad.tolist() == [[0.5, 0.5]]
    with pytest.raises(ValueError, match="differ"):
        feature_regression(pred, torch.zeros(1, 3, device=device))
