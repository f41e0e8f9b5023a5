"""Contrastive distillation (one-directional InfoNCE) against a naive loop (on the CPU) and an analytic value,
computed on the test device."""

from __future__ import annotations

import math

import pytest
import torch

from cmcr_core.losses.contrastive_distill import contrastive_distill_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _naive(k: torch.Tensor, q: torch.Tensor, tau: float) -> float:
    kn = [row / row.norm() for row in k]
    qn = [row / row.norm() for row in q]
    total = 0.0
    for i in range(len(kn)):
        denom = sum(math.exp(float(kn[i] @ qn[j]) / tau) for j in range(len(qn)))
        total += -math.log(math.exp(float(kn[i] @ qn[i]) / tau) / denom)
    return total / len(kn)


@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
def test_matches_naive_loop_and_is_non_negative(tau, device):
    g = torch.Generator().manual_seed(0)
    k = torch.randn(12, 5, generator=g, dtype=torch.float64)
    q = torch.randn(12, 5, generator=g, dtype=torch.float64)
    value = float(contrastive_distill_loss(k.to(device), q.to(device), temperature=tau))
    assert value == pytest.approx(_naive(k, q, tau), rel=1e-10)
    assert value >= 0.0


def test_one_directional_anchor_is_the_student(device):
    g = torch.Generator().manual_seed(1)
    k = torch.randn(10, 4, generator=g, dtype=torch.float64)
    q = torch.randn(10, 4, generator=g, dtype=torch.float64)
    kd, qd = k.to(device), q.to(device)
    forward, backward = float(contrastive_distill_loss(kd, qd)), float(contrastive_distill_loss(qd, kd))
    assert forward == pytest.approx(_naive(k, q, 0.07), rel=1e-10)
    assert abs(forward - backward) > 1e-6  # not symmetrised


def test_analytic_value_for_orthonormal_pairs(device):
    n, tau = 6, 0.07
    eye = torch.eye(n, dtype=torch.float64, device=device)
    expected = math.log1p((n - 1) * math.exp(-1.0 / tau))  # diagonal logit 1/τ, others 0
    assert float(contrastive_distill_loss(eye, eye, temperature=tau)) == pytest.approx(expected, rel=1e-10)


def test_teacher_is_detached(device):
    g = torch.Generator().manual_seed(2)
    k = torch.randn(8, 3, generator=g).to(device).requires_grad_(True)
    q = torch.randn(8, 3, generator=g).to(device).requires_grad_(True)
    contrastive_distill_loss(k, q).backward()
    assert q.grad is None and k.grad is not None


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        contrastive_distill_loss(torch.zeros(3, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="temperature"):
        contrastive_distill_loss(torch.ones(3, 4), torch.ones(3, 4), temperature=0.0)
