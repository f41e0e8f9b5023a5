"""Similarity loss against a naive loop (on the CPU) and analytic values, computed on the test device."""

from __future__ import annotations

import math

import pytest
import torch

from cmcr_core.losses.similarity import similarity_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_matches_naive_loop(device):
    g = torch.Generator().manual_seed(0)
    k = torch.randn(25, 6, generator=g, dtype=torch.float64)
    q = torch.randn(25, 6, generator=g, dtype=torch.float64)
    expected = sum(
        1.0 - float(a @ b) / math.sqrt(float(a @ a) * float(b @ b)) for a, b in zip(k, q, strict=True)
    )
    assert float(similarity_loss(k.to(device), q.to(device))) == pytest.approx(expected / 25, rel=1e-12)


def test_analytic_values(device):
    eye = torch.eye(4, dtype=torch.float64, device=device)
    assert float(similarity_loss(eye, eye)) == pytest.approx(0.0, abs=1e-15)
    assert float(similarity_loss(-eye, eye)) == pytest.approx(2.0)
    assert float(similarity_loss(eye.roll(1, dims=1), eye)) == pytest.approx(1.0)  # orthogonal pairs
    # Positive row scales do not matter after normalisation.
    scales = torch.tensor([[0.5], [2.0], [7.0], [1e-3]], dtype=torch.float64, device=device)
    assert float(similarity_loss(eye * scales, eye)) == pytest.approx(0.0, abs=1e-15)


def test_teacher_is_detached_and_student_gets_gradient(device):
    g = torch.Generator().manual_seed(1)
    k = torch.randn(8, 3, generator=g).to(device).requires_grad_(True)
    q = torch.randn(8, 3, generator=g).to(device).requires_grad_(True)
    similarity_loss(k, q).backward()
    assert q.grad is None
    assert k.grad is not None and float(k.grad.abs().sum()) > 0


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="same shape"):
        similarity_loss(torch.zeros(3, 4), torch.zeros(3, 5))
