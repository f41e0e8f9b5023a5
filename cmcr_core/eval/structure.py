"""Structure metrics of a representation: uniformity U, tolerance T, modality gap G, alignment A.

Definitions (docs/analysis.md, with the papers named below); every feature is L2-normalised first (x̂ = x/‖x‖):

* Uniformity (Wang & Isola 2020), t = 2: L_uniform = log mean_{i<j} exp(−t‖x̂_i − x̂_j‖²) and
  **U = −L_uniform** (higher = more uniform) [sign and t = 2 assumed; matches the paper's positive values].
  U = 0 for identical features, U ≤ 4t, U ≈ 2.08 on uniform S², U ≈ 4 − 8/d on uniform S^{d−1}, large d.
  Computed EXACTLY over all N(N−1)/2 pairs, streamed over upper-triangular blocks with a running
  log-sum-exp in float64, using ‖a − b‖² = 2 − 2a·b. Memory: the normalised copy of x plus one
  block_size² buffer (4096² fp32 ≈ 67 MB).
* Tolerance (Wang & Liu 2021): conditional mean cosine of same-class pairs,
  T = Σ_c Σ_{i≠j∈c} x̂_i·x̂_j / Σ_c n_c(n_c − 1), with Σ_{i≠j∈c} x̂_i·x̂_j = ‖S_c‖² − Σ_{i∈c}‖x̂_i‖²
  (= ‖S_c‖² − n_c for unit rows), S_c = Σ_{i∈c} x̂_i → O(N·D). Pairs i = j excluded
  [choice; the paper is silent, effect < 2e-4 at n_c = 5000].
* Modality gap (Liang et al. 2022): G = ‖mean_i x̂_i^{2D} − mean_i x̂_i^{3D}‖₂ over paired rows.
* Alignment (optional, Wang & Isola, α = 2): A = mean_i ‖x̂_i^{3D} − x̂_i^{2D}‖^α.
* Differences to the teacher: ΔU = U_3D − U_2D, ΔT = T_3D − T_2D, |ΔU|, |ΔT| and G reported separately;
  no weighted "structural gap" is invented (the relational paper defines none).

The O(N·D) reductions run over row chunks in the features' dtype (at least float32) with float64 running
totals, and fold the normalisation into the products (Σ x̂ = Σ x/‖x‖), so they never copy the whole
feature matrix; pass float64 features for reference-exact values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "StructureReport",
    "alignment",
    "compare_to_teacher",
    "correlation",
    "modality_gap",
    "normalize_features",
    "per_class_tolerance",
    "tolerance",
    "uniformity",
    "uniformity_sampled",
]

# Rows per chunk of the O(N·D) reductions: small enough that a chunk's temporaries stay ≈ 16 MB at D = 512.
_CHUNK_ROWS = 8192


def _as_features(x: Tensor | np.ndarray, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (N, D) feature matrix, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected floating-point features, got dtype {x.dtype}")
    return x


def _checked_chunk(
    chunk: Tensor, name: str, start: int, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """(chunk in at least ``dtype``, its (m,) row norms); refuse zero or non-finite rows."""
    chunk = chunk.to(torch.promote_types(chunk.dtype, dtype))
    norms = torch.linalg.vector_norm(chunk, dim=1)
    bad = ~(torch.isfinite(norms) & (norms > 0))
    if bool(bad.any()):
        rows = (torch.nonzero(bad).squeeze(1)[:5] + start).tolist()
        raise ValueError(
            f"{name}: {int(bad.sum())} row(s) have zero or non-finite norm (first rows {rows}); "
            "structure metrics need finite non-zero features"
        )
    return chunk, norms


def _chunks(x: Tensor, name: str, dtype: torch.dtype = torch.float32):
    """Yield (start, rows, ‖row‖) over row chunks of x.

    The O(N·D) metrics fold the normalisation into the reductions (Σ x̂ = Σ x/‖x‖ as a weighted matrix
    product), so they read x twice and never write a normalised copy.
    """
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        yield (start, *_checked_chunk(x[start : start + _CHUNK_ROWS], name, start, dtype))


def normalize_features(x: Tensor, name: str = "features", dtype: torch.dtype | None = None) -> Tensor:
    """Row-wise L2 normalisation that refuses zero or non-finite rows (they have no direction).

    Args:
        x: (N, D) features.
        name: what to call ``x`` in error messages.
        dtype: output dtype (default: that of ``x``, at least float32).

    Returns:
        (N, D) unit rows, computed chunk by chunk in the wider of ``dtype`` and the input dtype.
    """
    x = _as_features(x, name)
    out_dtype = dtype or torch.promote_types(x.dtype, torch.float32)
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    for start, chunk, norms in _chunks(x, name, out_dtype):
        out[start : start + chunk.shape[0]] = chunk / norms[:, None]
    return out


def uniformity(
    x: Tensor | np.ndarray,
    t: float = 2.0,
    block_size: int = 4096,
    compute_dtype: torch.dtype = torch.float32,
) -> float:
    """Exact uniformity U = −log mean_{i<j} exp(−t‖x̂_i − x̂_j‖²) over all pairs, streamed.

    Args:
        x: (N, D) features, N ≥ 2 (normalised here).
        t: the uniformity temperature (2 in the paper).
        block_size: rows per block; memory ≈ block_size² elements of ``compute_dtype``.
        compute_dtype: dtype of the block matrix products (float64 for reference-exact results).

    Returns:
        U as a Python float (float64 accumulation across blocks).
    """
    if not t > 0:
        raise ValueError(f"uniformity: t must be > 0, got {t}")
    if block_size < 1:
        raise ValueError(f"uniformity: block_size must be ≥ 1, got {block_size}")
    x = _as_features(x, "uniformity")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniformity: needs at least 2 features, got N = {n}")
    # Pre-scaling by √(2t) makes each block product equal 2t·x̂_i·x̂_j, so the exponent
    # −t‖x̂_i − x̂_j‖² = 2t·x̂_i·x̂_j − 2t needs no extra pass over the block.
    xs = normalize_features(x, "uniformity", dtype=compute_dtype).mul_(math.sqrt(2.0 * t))
    bounds = [(s, min(s + block_size, n)) for s in range(0, n, block_size)]
    side = min(block_size, n)
    buffer = torch.empty((side, side), dtype=compute_dtype, device=x.device)
    # Pairs j ≤ i of a diagonal block are not pairs i < j; the top-left corner serves a shorter last block.
    not_upper = torch.ones((side, side), dtype=torch.bool, device=x.device).tril_()
    run_max = -math.inf  # running log-sum-exp state: total = exp(run_max)·run_sum
    run_sum = 0.0
    for bi, (i0, i1) in enumerate(bounds):
        for j0, j1 in bounds[bi:]:
            block = buffer[: i1 - i0, : j1 - j0]
            torch.mm(xs[i0:i1], xs[j0:j1].t(), out=block)
            if i0 == j0:
                # Diagonal block: only the strict upper triangle holds pairs i < j.
                block.masked_fill_(not_upper[: i1 - i0, : i1 - i0], -math.inf)
                if i1 - i0 < 2:
                    continue
            block_max = float(block.max())
            block.sub_(block_max).exp_()
            block_sum = float(block.sum(dtype=torch.float64 if compute_dtype == torch.float64 else None))
            new_max = max(run_max, block_max)
            run_sum = run_sum * math.exp(run_max - new_max) + block_sum * math.exp(block_max - new_max)
            run_max = new_max
    num_pairs = n * (n - 1) / 2.0
    log_mean = run_max - 2.0 * t + math.log(run_sum) - math.log(num_pairs)
    return -log_mean


def uniformity_sampled(
    x: Tensor | np.ndarray,
    num_pairs: int,
    generator: torch.Generator,
    t: float = 2.0,
    chunk_pairs: int = 1_000_000,
) -> float:
    """Stochastic uniformity over ``num_pairs`` uniformly drawn pairs i ≠ j (with replacement).

    Args:
        x: (N, D) features, N ≥ 2.
        num_pairs: number of random pairs (e.g. 10⁷ at the paper's 80,000 features).
        generator: explicit torch RNG (on the device of ``x``).
        t: uniformity temperature.
        chunk_pairs: pairs evaluated at once (memory bound).

    Returns:
        Estimate of U as a Python float.
    """
    x = normalize_features(x, "uniformity_sampled")
    n = x.shape[0]
    if n < 2 or num_pairs < 1:
        raise ValueError(f"uniformity_sampled: needs N ≥ 2 and num_pairs ≥ 1, got N = {n}, {num_pairs}")
    run_max, run_sum, done = -math.inf, 0.0, 0
    while done < num_pairs:
        m = min(chunk_pairs, num_pairs - done)
        i = torch.randint(0, n, (m,), generator=generator, device=x.device)
        j = torch.randint(0, n - 1, (m,), generator=generator, device=x.device)
        j = j + (j >= i).long()  # uniform over j ≠ i
        expo = (-t * (x[i] - x[j]).pow(2).sum(dim=1)).double()
        block_max = float(expo.max())
        new_max = max(run_max, block_max)
        block_sum = float((expo - block_max).exp().sum())
        run_sum = run_sum * math.exp(run_max - new_max) + block_sum * math.exp(block_max - new_max)
        run_max, done = new_max, done + m
    return -(run_max + math.log(run_sum) - math.log(num_pairs))


def _class_sums(x: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class Σx̂ (C, D), Σ‖x̂‖² (C,) and counts (C,), all float64, streamed over row chunks."""
    sums = torch.zeros((num_classes, x.shape[1]), dtype=torch.float64, device=x.device)
    sq = torch.zeros(num_classes, dtype=torch.float64, device=x.device)
    for start, chunk, norms in _chunks(x, "tolerance"):
        m, inv = chunk.shape[0], norms.reciprocal()
        lab = labels[start : start + m]
        # Row c of `weights` holds 1/‖x_i‖ for the members i of class c, so weights @ chunk = Σ_{i∈c} x̂_i
        # in one BLAS call. Chunk sums in the feature dtype, running totals in float64:
        # ‖S_c‖² − Σ‖x̂‖² cancels heavily when T ≈ 0, so the totals must not lose digits.
        weights = torch.zeros((num_classes, m), dtype=chunk.dtype, device=x.device)
        weights[lab, torch.arange(m, device=x.device)] = inv
        sums += weights @ chunk
        sq.index_add_(0, lab, (inv * norms).double().pow(2))  # ‖x̂_i‖² = 1 up to rounding
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    return sums, sq, counts


def _prepare_labels(
    x: Tensor, labels: Tensor | np.ndarray, num_classes: int | None, ignore_index: int | None
) -> tuple[Tensor, Tensor, int]:
    labels = torch.as_tensor(labels, device=x.device)
    if labels.dim() != 1 or labels.shape[0] != x.shape[0]:
        raise ValueError(
            f"tolerance: labels must be (N,) with N = {x.shape[0]} (rows of features), "
            f"got shape {tuple(labels.shape)}"
        )
    labels = labels.long()
    if ignore_index is not None:
        keep = labels != ignore_index
        x, labels = x[keep], labels[keep]
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"tolerance: labels must be ≥ 0 (or ignore_index), found {int(labels.min())}")
    top = int(labels.max()) + 1 if labels.numel() else 0
    if num_classes is None:
        num_classes = top
    elif top > num_classes:
        raise ValueError(f"tolerance: label {top - 1} out of range for num_classes = {num_classes}")
    return x, labels, num_classes


def per_class_tolerance(
    x: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean pairwise cosine within each class (i ≠ j).

    Args:
        x: (N, D) features.
        labels: (N,) integer class ids in [0, C).
        num_classes: C (default: max label + 1).
        ignore_index: label whose rows are dropped.

    Returns:
        (tolerance (C,) float64, NaN where a class has < 2 members; counts (C,) int64).
    """
    x = _as_features(x, "tolerance")
    x, labels, num_classes = _prepare_labels(x, labels, num_classes, ignore_index)
    sums, sq, counts = _class_sums(x, labels, num_classes)
    pairs = counts * (counts - 1)
    within = sums.pow(2).sum(dim=1) - sq  # Σ_{i≠j∈c} x̂_i·x̂_j
    tol = torch.where(pairs > 0, within / pairs.clamp_min(1), torch.full_like(within, math.nan))
    return tol, counts.long()


def tolerance(
    x: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> float:
    """Pooled tolerance T = Σ_c Σ_{i≠j∈c} x̂_i·x̂_j / Σ_c n_c(n_c − 1).

    Args:
        x: (N, D) features.
        labels: (N,) integer class ids.
        num_classes: C (default: max label + 1).
        ignore_index: label whose rows are dropped.

    Returns:
        T as a Python float in [−1, 1]; classes with fewer than 2 members contribute no pair.
    """
    x = _as_features(x, "tolerance")
    x, labels, num_classes = _prepare_labels(x, labels, num_classes, ignore_index)
    sums, sq, counts = _class_sums(x, labels, num_classes)
    pairs = float((counts * (counts - 1)).sum())
    if pairs == 0:
        raise ValueError("tolerance: no class has 2 or more members, so there is no same-class pair")
    return float((sums.pow(2).sum(dim=1) - sq).sum()) / pairs


def _paired(x_3d: Tensor | np.ndarray, x_2d: Tensor | np.ndarray, name: str) -> tuple[Tensor, Tensor]:
    a, b = _as_features(x_3d, f"{name} (3D features)"), _as_features(x_2d, f"{name} (2D features)")
    if a.shape != b.shape:
        raise ValueError(
            f"{name}: 3D features {tuple(a.shape)} and 2D features {tuple(b.shape)} must be row-paired "
            "with the same shape"
        )
    return a, b


def modality_gap(x_3d: Tensor | np.ndarray, x_2d: Tensor | np.ndarray) -> float:
    """G = ‖mean_i x̂_i^{2D} − mean_i x̂_i^{3D}‖₂ over paired rows (float64).

    Args:
        x_3d: (N, D) student (point) features.
        x_2d: (N, D) teacher (pixel) features, row i paired with ``x_3d[i]``.

    Returns:
        G as a Python float in [0, 2].
    """
    a, b = _paired(x_3d, x_2d, "modality_gap")
    diff = torch.zeros(a.shape[1], dtype=torch.float64, device=a.device)
    chunks = zip(_chunks(b, "modality_gap"), _chunks(a, "modality_gap"), strict=True)
    for (_, chunk_b, norms_b), (_, chunk_a, norms_a) in chunks:
        diff += chunk_b.t() @ norms_b.reciprocal()  # Σ x̂^{2D} over the chunk
        diff -= chunk_a.t() @ norms_a.reciprocal()
    return float(diff.norm()) / a.shape[0]


def alignment(x_3d: Tensor | np.ndarray, x_2d: Tensor | np.ndarray, alpha: float = 2.0) -> float:
    """A = mean_i ‖x̂_i^{3D} − x̂_i^{2D}‖^α (Wang & Isola alignment; lower = better aligned).

    Args:
        x_3d: (N, D) student features.
        x_2d: (N, D) teacher features, row-paired.
        alpha: exponent α > 0.

    Returns:
        A as a Python float in [0, 2^α].
    """
    if not alpha > 0:
        raise ValueError(f"alignment: alpha must be > 0, got {alpha}")
    a, b = _paired(x_3d, x_2d, "alignment")
    total = 0.0
    chunks = zip(_chunks(a, "alignment"), _chunks(b, "alignment"), strict=True)
    for (_, chunk_a, norms_a), (_, chunk_b, norms_b) in chunks:
        dtype = torch.promote_types(chunk_a.dtype, chunk_b.dtype)
        cos = torch.linalg.vecdot(chunk_a.to(dtype), chunk_b.to(dtype)) / (norms_a * norms_b)
        # ‖x̂ − ŷ‖² = 2 − 2 cos for unit rows.
        sq_dist = (2.0 - 2.0 * cos.double()).clamp_min(0.0)
        total += float(sq_dist.pow(alpha / 2.0).sum())
    return total / a.shape[0]


@dataclass(frozen=True)
class StructureReport:
    """U, T of student (3D) and teacher (2D), their differences, and the paired gap/alignment."""

    uniformity_3d: float
    uniformity_2d: float
    tolerance_3d: float
    tolerance_2d: float
    delta_uniformity: float  # U_3D − U_2D
    delta_tolerance: float  # T_3D − T_2D
    abs_delta_uniformity: float
    abs_delta_tolerance: float
    modality_gap: float
    alignment: float
    num_features: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare_to_teacher(
    x_3d: Tensor | np.ndarray,
    x_2d: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int | None = None,
    t: float = 2.0,
    block_size: int = 4096,
) -> StructureReport:
    """All structure metrics of paired student/teacher features and their differences.

    Args:
        x_3d: (N, D) student point features.
        x_2d: (N, D) teacher features paired row-wise.
        labels: (N,) class ids shared by the pairs.
        num_classes: C (default: max label + 1).
        t: uniformity temperature.
        block_size: block rows of the streamed uniformity.

    Returns:
        A StructureReport.
    """
    a, b = _paired(x_3d, x_2d, "compare_to_teacher")
    u3, u2 = uniformity(a, t, block_size), uniformity(b, t, block_size)
    t3, t2 = tolerance(a, labels, num_classes), tolerance(b, labels, num_classes)
    return StructureReport(
        uniformity_3d=u3,
        uniformity_2d=u2,
        tolerance_3d=t3,
        tolerance_2d=t2,
        delta_uniformity=u3 - u2,
        delta_tolerance=t3 - t2,
        abs_delta_uniformity=abs(u3 - u2),
        abs_delta_tolerance=abs(t3 - t2),
        modality_gap=modality_gap(a, b),
        alignment=alignment(a, b),
        num_features=int(a.shape[0]),
    )


def _average_ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.arange(len(v), dtype=np.float64)
    for value in np.unique(v):  # ties share their mean rank
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def correlation(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> dict[str, float]:
    """Pearson and Spearman (average ranks for ties) correlation of a metric with a performance figure.

    Args:
        x: (M,) metric values, one per model.
        y: (M,) performance values (e.g. mIoU), M ≥ 3.

    Returns:
        {"pearson": r, "spearman": ρ}; NaN when one side is constant.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1 or xa.shape[0] < 3:
        raise ValueError(
            f"correlation: need two 1-D sequences of equal length ≥ 3, got shapes {xa.shape} and {ya.shape}"
        )

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        den = math.sqrt(float((a * a).sum() * (b * b).sum()))
        return float((a * b).sum()) / den if den > 0 else math.nan

    return {"pearson": pearson(xa, ya), "spearman": pearson(_average_ranks(xa), _average_ranks(ya))}
