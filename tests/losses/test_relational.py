"""Relational loss: each term against its definition (naive loops, on the CPU), invariants and the block-wise
path, computed on the test device (CMCR_TEST_DEVICE)."""

from __future__ import annotations

import pytest
import torch

from cmcr_core.losses.relational import relational_loss
from cmcr_core.losses.similarity import similarity_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(n: int, d: int, seed: int, device="cpu", dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k, q = torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)
    return k.to(device), q.to(device)


def _naive_terms(k: torch.Tensor, q: torch.Tensor) -> dict[str, float]:
    """Definitions of METHODS §8.4 with explicit loops over unit-normalised rows."""
    n = k.shape[0]
    kn = [row / row.norm() for row in k]
    qn = [row / row.norm() for row in q]
    diag = sum(abs(float(kn[i] @ qn[i]) - float(qn[i] @ qn[i])) for i in range(n)) / n
    cross = intra = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                cross += abs(float(kn[i] @ qn[j]) - float(qn[i] @ qn[j]))
                intra += abs(float(kn[i] @ kn[j]) - float(qn[i] @ qn[j]))
    return {"l_cross_diag": diag, "l_cross_offdiag": cross / (n * n - n), "l_intra": intra / (n * n - n)}


@pytest.mark.parametrize("block_size", [None, 1, 3, 7, 50])
def test_terms_match_naive_loops(block_size, device):
    k, q = _pair(7, 4, seed=0, device=device)
    out = relational_loss(k, q, lambda_cross=0.7, lambda_intra=1.9, block_size=block_size)
    ref = _naive_terms(k.cpu(), q.cpu())
    for name, value in ref.items():
        assert float(out[name]) == pytest.approx(value, rel=1e-12, abs=1e-14), name
    assert float(out["l_cross"]) == pytest.approx(ref["l_cross_diag"] + ref["l_cross_offdiag"], rel=1e-12)
    expected_total = 0.7 * (ref["l_cross_diag"] + ref["l_cross_offdiag"]) + 1.9 * ref["l_intra"]
    assert float(out["loss"]) == pytest.approx(expected_total, rel=1e-12)


def test_cross_diagonal_equals_similarity_loss(device):
    k, q = _pair(33, 8, seed=1, device=device)
    out = relational_loss(k, q)
    assert float(out["l_cross_diag"]) == pytest.approx(float(similarity_loss(k, q)), rel=1e-12)


@pytest.mark.parametrize("block_size", [None, 4])
def test_zero_when_student_equals_teacher(block_size, device):
    _, q = _pair(20, 6, seed=2, device=device)
    out = relational_loss(q.clone() * 3.0, q, block_size=block_size)  # scale is removed by normalisation
    for name in ("loss", "l_cross_diag", "l_cross_offdiag", "l_intra"):
        assert abs(float(out[name])) < 1e-12, name


@pytest.mark.parametrize("block_size", [1, 5, 16, 64])
def test_blockwise_matches_dense_values_and_gradients(block_size, device):
    k, q = _pair(16, 5, seed=3, device=device)
    grads = []
    for bs in (None, block_size):
        student = k.clone().requires_grad_(True)
        out = relational_loss(student, q, lambda_cross=1.3, lambda_intra=0.6, block_size=bs)
        out["loss"].backward()
        grads.append((out, student.grad))
    (dense, g_dense), (blocked, g_blocked) = grads
    for name in dense:
        expected = float(dense[name].detach())
        assert float(blocked[name].detach()) == pytest.approx(expected, rel=1e-12, abs=1e-14), name
    torch.testing.assert_close(g_blocked, g_dense, rtol=1e-10, atol=1e-12)


def test_blockwise_gradient_passes_gradcheck(device):
    k, q = _pair(6, 3, seed=4, device=device)
    student = k.clone().requires_grad_(True)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return relational_loss(x, q, lambda_cross=0.8, lambda_intra=1.1, block_size=4)["loss"]

    assert torch.autograd.gradcheck(fn, (student,), eps=1e-6, atol=1e-7)


def test_teacher_receives_no_gradient(device):
    k, q = _pair(10, 4, seed=5, device=device)
    student, teacher = k.requires_grad_(True), q.requires_grad_(True)
    for bs in (None, 3):
        relational_loss(student, teacher, block_size=bs)["loss"].backward()
    assert teacher.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_components_have_expected_ranges(device):
    k, q = _pair(40, 16, seed=6, device=device)
    out = relational_loss(k, q)
    # |cos − cos| ≤ 2 for every entry; the diagonal term is 1 − cos ∈ [0, 2].
    for name in ("l_cross_diag", "l_cross_offdiag", "l_intra"):
        assert 0.0 <= float(out[name]) <= 2.0


def test_bad_inputs_are_rejected():
    k, q = _pair(5, 4, seed=7)
    with pytest.raises(ValueError, match="same shape"):
        relational_loss(k, q[:, :3])
    with pytest.raises(ValueError, match="N ≥ 2"):
        relational_loss(k[:1], q[:1])
    with pytest.raises(ValueError, match="block_size"):
        relational_loss(k, q, block_size=0)
