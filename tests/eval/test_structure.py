"""Structure metrics U, T, G, A against naive O(N²) references and analytic values (PROTOCOLS §13)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmcr_core.eval.structure import (
    alignment,
    compare_to_teacher,
    correlation,
    modality_gap,
    per_class_tolerance,
    tolerance,
    uniformity,
    uniformity_sampled,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _randn(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _naive_uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """−log mean_{i<j} exp(−t‖x̂_i − x̂_j‖²) by an explicit double loop (numpy float64)."""
    a = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    terms = [
        math.exp(-t * float(np.sum((a[i] - a[j]) ** 2))) for i in range(len(a)) for j in range(i + 1, len(a))
    ]
    return -math.log(sum(terms) / len(terms))


def _naive_tolerance(x: torch.Tensor, labels: torch.Tensor) -> float:
    a = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    lab = labels.numpy()
    total, pairs = 0.0, 0
    for i in range(len(a)):
        for j in range(len(a)):
            if i != j and lab[i] == lab[j]:
                total += float(a[i] @ a[j])
                pairs += 1
    return total / pairs


# ---------------------------------------------------------------- uniformity


@pytest.mark.parametrize("t", [2.0, 0.5, 7.0])
def test_uniformity_matches_naive(t):
    x = _randn(61, 5, seed=0)
    assert uniformity(x, t=t, block_size=16, compute_dtype=torch.float64) == pytest.approx(
        _naive_uniformity(x, t), rel=1e-12
    )


@pytest.mark.parametrize("block_size", [1, 2, 7, 32, 100, 101, 500])
def test_streamed_uniformity_equals_unstreamed(block_size):
    x = _randn(101, 6, seed=1)
    whole = uniformity(x, block_size=101, compute_dtype=torch.float64)  # one block = unstreamed
    assert whole == pytest.approx(_naive_uniformity(x), rel=1e-12)
    assert uniformity(x, block_size=block_size, compute_dtype=torch.float64) == pytest.approx(
        whole, rel=1e-12
    )
    # Default float32 blocks with float64 accumulation stay within float32 rounding.
    assert uniformity(x, block_size=block_size) == pytest.approx(whole, abs=2e-6)


def test_float64_compute_of_float32_features_is_exact():
    x = _randn(40, 9, seed=13).float()
    assert uniformity(x, block_size=9, compute_dtype=torch.float64) == pytest.approx(
        _naive_uniformity(x.double()), rel=1e-12
    )


def test_uniformity_of_identical_features_is_zero():
    x = torch.tensor([[0.3, -1.2, 2.0]]).repeat(50, 1)
    assert abs(uniformity(x, block_size=8)) < 1e-6
    assert abs(uniformity(x.double(), block_size=8, compute_dtype=torch.float64)) < 1e-12


@pytest.mark.parametrize("m", [2, 10, 37])
def test_uniformity_of_two_antipodal_clusters(m):
    v = torch.tensor([[1.0, 2.0, -2.0, 0.5]], dtype=torch.float64)
    x = torch.cat([v.repeat(m, 1), -2.5 * v.repeat(m, 1)])
    # m·(m−1) same-cluster pairs at distance 0, m² cross pairs at ‖x − y‖² = 4.
    expected = -math.log((m * (m - 1) + m * m * math.exp(-8.0)) / (m * (2 * m - 1)))
    assert uniformity(x, block_size=5, compute_dtype=torch.float64) == pytest.approx(expected, rel=1e-12)


def test_uniformity_of_uniform_s2():
    x = _randn(4000, 3, seed=2)  # Gaussian directions are uniform on the sphere
    analytic = -math.log((1.0 - math.exp(-8.0)) / 8.0)  # x·y ~ U[−1, 1] on S²: ≈ 2.0798
    assert uniformity(x) == pytest.approx(analytic, abs=5e-3)


def test_uniformity_of_uniform_high_dimensional_sphere():
    d = 512
    x = _randn(2000, d, seed=3)
    # Exact: E exp(−2‖x − y‖²) = e^{−4} E e^{4z}, z = x·y with density ∝ (1 − z²)^{(d−3)/2}.
    z = np.linspace(-1.0, 1.0, 400_001)
    log_w = 0.5 * (d - 3) * np.log1p(-np.clip(z * z, 0.0, 1.0 - 1e-16))
    w = np.exp(log_w - log_w.max())
    dz = z[1] - z[0]  # uniform grid: the trapezoid rule's end-point halves cancel in the ratio well enough
    exact = 4.0 - math.log(float(np.sum(w * np.exp(4.0 * z)) * dz) / float(np.sum(w) * dz))
    assert exact == pytest.approx(4.0 - 8.0 / d, abs=1e-3)  # the large-d limit of PROTOCOLS §13
    assert uniformity(x) == pytest.approx(exact, abs=2e-3)


def test_sampled_uniformity_estimates_the_exact_value():
    x = _randn(300, 4, seed=4)
    estimate = uniformity_sampled(x, num_pairs=400_000, generator=torch.Generator().manual_seed(0))
    assert estimate == pytest.approx(uniformity(x, compute_dtype=torch.float64), abs=1e-2)


def test_uniformity_rejects_degenerate_input():
    x = _randn(10, 3, seed=5)
    x[4] = 0.0
    with pytest.raises(ValueError, match=r"zero or non-finite norm \(first rows \[4\]\)"):
        uniformity(x)
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(x[:1])


# ---------------------------------------------------------------- tolerance


def test_tolerance_matches_naive_pairs():
    x = _randn(90, 7, seed=6)
    labels = torch.randint(0, 4, (90,), generator=torch.Generator().manual_seed(1))
    assert tolerance(x, labels) == pytest.approx(_naive_tolerance(x, labels), rel=1e-12)


def test_pooled_tolerance_equals_class_mean_for_balanced_classes():
    x = _randn(120, 5, seed=7)
    labels = torch.arange(120) % 4
    per_class, counts = per_class_tolerance(x, labels)
    assert counts.tolist() == [30, 30, 30, 30]
    for c in range(4):
        sel = labels == c
        assert float(per_class[c]) == pytest.approx(_naive_tolerance(x[sel], labels[sel]), rel=1e-12)
    assert tolerance(x, labels) == pytest.approx(float(per_class.mean()), rel=1e-12)


def test_tolerance_analytic_cases():
    same = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64).repeat(6, 1)
    assert tolerance(same, torch.zeros(6, dtype=torch.long)) == pytest.approx(1.0, abs=1e-12)
    # float32 features are normalised in float32: exact up to float32 rounding.
    assert tolerance(same.float(), torch.zeros(6, dtype=torch.long)) == pytest.approx(1.0, abs=1e-6)
    # Two antipodal points per class: every same-class pair has cosine −1.
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -3.0]])
    assert tolerance(x, torch.tensor([0, 0, 1, 1])) == pytest.approx(-1.0, abs=1e-12)


def test_tolerance_skips_singletons_and_ignored_rows():
    x = _randn(41, 4, seed=8)
    labels = torch.cat(
        [torch.zeros(20, dtype=torch.long), torch.ones(20, dtype=torch.long), torch.tensor([2])]
    )
    per_class, counts = per_class_tolerance(x, labels, num_classes=4)
    assert counts.tolist() == [20, 20, 1, 0]
    assert torch.isnan(per_class[2]) and torch.isnan(per_class[3])
    assert tolerance(x, labels) == pytest.approx(_naive_tolerance(x, labels), rel=1e-12)
    ignored = labels.clone()
    ignored[:20] = 255
    assert tolerance(x, ignored, ignore_index=255) == pytest.approx(
        _naive_tolerance(x[20:40], labels[20:40]), rel=1e-12
    )
    with pytest.raises(ValueError, match="no class has 2"):
        tolerance(x[:2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="out of range"):
        tolerance(x, labels, num_classes=2)


# ---------------------------------------------------------------- gap and alignment


def test_modality_gap_and_alignment_match_naive():
    a, b = _randn(50, 6, seed=9), _randn(50, 6, seed=10)
    an = a / a.norm(dim=1, keepdim=True)
    bn = b / b.norm(dim=1, keepdim=True)
    assert modality_gap(a, b) == pytest.approx(float((bn.mean(0) - an.mean(0)).norm()), rel=1e-12)
    assert alignment(a, b) == pytest.approx(float(((an - bn) ** 2).sum(1).mean()), rel=1e-12)
    assert alignment(a, b, alpha=1.0) == pytest.approx(float((an - bn).norm(dim=1).mean()), rel=1e-12)


def test_gap_and_alignment_analytic_cases():
    a = _randn(30, 4, seed=11)
    assert modality_gap(a, 2.0 * a) == pytest.approx(0.0, abs=1e-12)
    assert alignment(a, a) == pytest.approx(0.0, abs=1e-12)
    assert alignment(a, -a) == pytest.approx(4.0, rel=1e-12)
    e1 = torch.tensor([[1.0, 0.0, 0.0]]).repeat(8, 1)
    e2 = torch.tensor([[0.0, 1.0, 0.0]]).repeat(8, 1)
    assert modality_gap(e1, e2) == pytest.approx(math.sqrt(2.0), rel=1e-12)
    with pytest.raises(ValueError, match="row-paired"):
        modality_gap(a, a[:-1])


def test_compare_to_teacher_reports_differences():
    g = torch.Generator().manual_seed(12)
    labels = torch.randint(0, 3, (80,), generator=g)
    means = torch.randn(3, 8, generator=g, dtype=torch.float64)
    x2 = means[labels] + 0.3 * torch.randn(80, 8, generator=g, dtype=torch.float64)
    x3 = means[labels] + 1.0 * torch.randn(80, 8, generator=g, dtype=torch.float64)
    r = compare_to_teacher(x3, x2, labels, block_size=16)
    assert r.uniformity_3d == pytest.approx(_naive_uniformity(x3), abs=2e-6)
    assert r.uniformity_2d == pytest.approx(_naive_uniformity(x2), abs=2e-6)
    assert r.tolerance_3d == pytest.approx(_naive_tolerance(x3, labels), rel=1e-12)
    assert r.tolerance_2d == pytest.approx(_naive_tolerance(x2, labels), rel=1e-12)
    assert r.delta_uniformity == pytest.approx(r.uniformity_3d - r.uniformity_2d)
    assert r.delta_tolerance == pytest.approx(r.tolerance_3d - r.tolerance_2d)
    assert r.abs_delta_tolerance == pytest.approx(abs(r.delta_tolerance))
    assert r.modality_gap == pytest.approx(modality_gap(x3, x2))
    assert r.as_dict()["num_features"] == 80
    # Noisier student: more uniform and less tolerant than the teacher.
    assert r.delta_uniformity > 0 and r.delta_tolerance < 0


# ---------------------------------------------------------------- correlation


def test_correlation_against_numpy_and_ranks():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    r = correlation(x, y)
    assert r["pearson"] == pytest.approx(float(np.corrcoef(x, y)[0, 1]), rel=1e-12)
    ranks_x, ranks_y = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))  # no ties
    assert r["spearman"] == pytest.approx(float(np.corrcoef(ranks_x, ranks_y)[0, 1]), rel=1e-12)
    # Ties get their mean rank: x = [1, 2, 2, 3] → ranks [0, 1.5, 1.5, 3].
    tied = correlation([1.0, 2.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0])
    assert tied["spearman"] == pytest.approx(float(np.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1]))
    assert correlation([1, 2, 3, 4], [10, 8, 3, 1])["spearman"] == pytest.approx(-1.0)
