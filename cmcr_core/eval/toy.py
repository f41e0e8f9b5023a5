"""Toy experiment of relational distillation (the relational paper's toy; docs/analysis.md): the source on S²,
its settings and results.

The training of the student MLP with each loss is ``cmcr_core.runs.toy.run_toy_experiment``.

The paper reports a 1-cluster and a 3-cluster setup of an MLP mapping inputs to 3-D unit vectors, with the
source representation at U = 0.89, T = 0.66 [paper]; every other setting is [unknown]. Recipe used here
[assumed]:

* Source: von Mises–Fisher clusters on S² (κ = 5.35 → U ≈ 0.89, T ≈ 0.66 for one cluster; see
  :func:`vmf_s2_uniformity`). Cluster means: the north pole for one cluster, otherwise equally spaced on
  the equator.
* Inputs: 2-D Gaussian blobs, one per cluster (centres on a circle of radius ``blob_spacing``).
* Pairing: each point has a latent z ~ N(0, I₂) (Latin-hypercube stratified); its target is the vMF
  sample obtained from z by the inverse-CDF map with (u, v) = Φ(z) (so targets are exactly
  vMF-distributed and a smooth function of z), and the student sees ``centre + z + input_noise·ε``.
  The noise is information the student cannot recover, as when 3-D points cannot predict everything in
  their paired 2-D features; it is what separates the losses (with ``input_noise = 0`` every loss can
  fit the map almost exactly and the curves end near the source).
* Student: 3-layer ReLU MLP 2 → H → H → 3, then L2 normalisation; Adam, full batch; every loss starts
  from the same initial weights.
* Logged every iteration (on the features of that iteration's forward pass): U (t = 2) and T (clusters as
  classes), as defined in cmcr_core.eval.structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "TOY_LOSSES",
    "ToyConfig",
    "ToyCurves",
    "ToyResult",
    "cluster_means",
    "make_toy_data",
    "sample_vmf_s2",
    "toy_setups",
    "vmf_s2_from_uniform",
    "vmf_s2_uniformity",
]

TOY_LOSSES: tuple[str, ...] = ("contrastive", "similarity", "relational")


def _orthonormal_frame(mean_direction: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mu = mean_direction.to(torch.float64)
    norm = float(mu.norm())
    if mu.shape != (3,) or not norm > 0:
        raise ValueError(f"vMF on S²: mean_direction must be a non-zero 3-vector, got {mean_direction}")
    mu = mu / norm
    # Any axis not nearly parallel to μ gives a well-conditioned Gram–Schmidt step.
    axis = torch.zeros(3, dtype=torch.float64)
    axis[int(torch.argmin(mu.abs()))] = 1.0
    e1 = axis - (axis @ mu) * mu
    e1 = e1 / e1.norm()
    return mu, e1, torch.linalg.cross(mu, e1)


def vmf_s2_from_uniform(mean_direction: Tensor, kappa: float, u: Tensor, v: Tensor) -> Tensor:
    """Map uniforms (u, v) ∈ [0, 1)² to vMF(μ, κ) on S² by inverting the CDF of w = μ·x.

    On S² the density of w is κ e^{κw} / (2 sinh κ), whose inverse CDF is
    w = 1 + log(u + (1 − u) e^{−2κ}) / κ; the azimuth 2πv is uniform and independent.

    Args:
        mean_direction: (3,) μ (normalised here).
        kappa: concentration κ > 0.
        u: (N,) uniforms for the polar part.
        v: (N,) uniforms for the azimuth.

    Returns:
        (N, 3) float64 unit vectors.
    """
    if not kappa > 0:
        raise ValueError(f"vMF on S²: kappa must be > 0, got {kappa}")
    mu, e1, e2 = _orthonormal_frame(mean_direction)
    u, v = u.to(torch.float64), v.to(torch.float64)
    # For huge κ, e^{−2κ} underflows and u = 0 gives −inf; the clamp maps that to the antipode w = −1.
    w = 1.0 + torch.log(u + (1.0 - u) * math.exp(-2.0 * kappa)) / kappa
    w = w.clamp(-1.0, 1.0)
    radius = (1.0 - w * w).clamp_min(0.0).sqrt()
    phi = 2.0 * math.pi * v
    return w[:, None] * mu + radius[:, None] * (torch.cos(phi)[:, None] * e1 + torch.sin(phi)[:, None] * e2)


def sample_vmf_s2(mean_direction: Tensor, kappa: float, num: int, generator: torch.Generator) -> Tensor:
    """Draw ``num`` samples of the von Mises–Fisher distribution on S² (exact, inverse CDF).

    Args:
        mean_direction: (3,) mean direction μ.
        kappa: concentration κ > 0.
        num: number of samples.
        generator: explicit CPU torch RNG.

    Returns:
        (num, 3) float64 unit vectors.
    """
    u = torch.rand(num, generator=generator, dtype=torch.float64)
    v = torch.rand(num, generator=generator, dtype=torch.float64)
    return vmf_s2_from_uniform(mean_direction, kappa, u, v)


def vmf_s2_uniformity(kappa: float, t: float = 2.0, grid: int = 200_001) -> float:
    """Population uniformity U of one vMF(κ) cluster on S² (pairs of independent samples).

    E exp(−t‖x − y‖²) = e^{−2t} E_x E_y e^{2t x·y}, and for y ~ vMF(μ, κ) on S²
    E_y e^{s·y} = (κ / sinh κ) · sinh‖κμ + s‖ / ‖κμ + s‖; with w = μ·x, ‖κμ + 2t x‖² = κ² + 4t² + 4tκw,
    leaving a 1-D integral over the density of w (trapezoid rule on ``grid`` nodes).

    Returns:
        U = −log E exp(−t‖x − y‖²).
    """
    w = np.linspace(-1.0, 1.0, grid)
    # Work with logs: sinh of large arguments overflows for big κ.
    log_two_sinh_kappa = kappa + math.log1p(-math.exp(-2 * kappa))
    log_density = math.log(kappa) + kappa * w - log_two_sinh_kappa  # κ e^{κw} / (2 sinh κ)
    r = np.sqrt(kappa**2 + 4 * t * t + 4 * t * kappa * w)
    log_sinh_ratio = r + np.log1p(-np.exp(-2 * r)) - math.log(2) - np.log(r)
    log_norm = math.log(kappa) - (log_two_sinh_kappa - math.log(2))  # κ / sinh κ
    integrand = np.exp(log_density + log_norm + log_sinh_ratio - 2 * t)
    return -math.log(float(np.sum((integrand[1:] + integrand[:-1]) * np.diff(w)) / 2.0))


def cluster_means(num_clusters: int) -> Tensor:
    """(K, 3) unit mean directions: the north pole for K = 1, else K equally spaced on the equator."""
    if num_clusters < 1:
        raise ValueError(f"toy experiment: num_clusters must be ≥ 1, got {num_clusters}")
    if num_clusters == 1:
        return torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    angles = torch.arange(num_clusters, dtype=torch.float64) * (2.0 * math.pi / num_clusters)
    return torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros_like(angles)], dim=1)


@dataclass(frozen=True)
class ToyConfig:
    """Settings of one toy setup; defaults run in a few seconds on one CPU core."""

    num_clusters: int = 1
    points_per_cluster: int = 256
    kappa: float = 5.35
    blob_spacing: float = 4.0
    input_noise: float = 0.3
    hidden: int = 64
    iterations: int = 400
    lr: float = 1e-3
    temperature: float = 0.07
    lambda_cross: float = 1.0
    lambda_intra: float = 1.0
    losses: tuple[str, ...] = TOY_LOSSES
    snapshot_iterations: tuple[int, ...] = ()
    seed: int = 0


def toy_setups(seed: int = 0, iterations: int = 400) -> dict[str, ToyConfig]:
    """The paper's two setups: one cluster and three clusters (point counts [assumed]: 256 and 3 × 128)."""
    return {
        "one_cluster": ToyConfig(num_clusters=1, points_per_cluster=256, iterations=iterations, seed=seed),
        "three_clusters": ToyConfig(num_clusters=3, points_per_cluster=128, iterations=iterations, seed=seed),
    }


@dataclass(frozen=True)
class ToyCurves:
    """Per-loss training trace. Index k of ``uniformity``/``tolerance`` is measured at iteration k."""

    uniformity: np.ndarray  # (iterations + 1,): before each step, plus the final model
    tolerance: np.ndarray  # (iterations + 1,)
    loss: np.ndarray  # (iterations,)
    final_features: np.ndarray  # (N, 3)
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)  # iteration → (N, 3)


@dataclass(frozen=True)
class ToyResult:
    """Source data, its structure metrics and the curves of every loss."""

    config: ToyConfig
    inputs: np.ndarray  # (N, 2) student inputs
    targets: np.ndarray  # (N, 3) source unit vectors
    labels: np.ndarray  # (N,) cluster ids
    source_uniformity: float  # U of the sampled source points
    source_tolerance: float  # T of the sampled source points
    curves: dict[str, ToyCurves]


def _latin_hypercube(num: int, generator: torch.Generator) -> Tensor:
    """(num, 2) uniforms with one point per 1/num stratum in each coordinate.

    Stratifying cuts the spread of the sampled source's U from ≈ 0.02 (i.i.d., 256 points) to ≈ 0.001,
    so the source line of the curves sits at the population value even with few points.
    """
    columns = []
    for _ in range(2):
        strata = torch.randperm(num, generator=generator).to(torch.float64)
        columns.append((strata + torch.rand(num, generator=generator, dtype=torch.float64)) / num)
    return torch.stack(columns, dim=1).clamp(1e-12, 1.0 - 1e-12)  # keep Φ⁻¹ finite


def make_toy_data(cfg: ToyConfig, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs (N, 2) float32, targets (N, 3) float32 unit vectors, labels (N,) cluster ids) of a setup."""
    means = cluster_means(cfg.num_clusters)
    inputs, targets, labels = [], [], []
    n = cfg.points_per_cluster
    for c in range(cfg.num_clusters):
        angle = 2.0 * math.pi * c / cfg.num_clusters
        centre = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
        centre = centre * (cfg.blob_spacing if cfg.num_clusters > 1 else 0.0)
        uniforms = _latin_hypercube(n, generator)
        z = torch.special.ndtri(uniforms)  # Φ⁻¹: each coordinate is exactly N(0, 1)-distributed
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        targets.append(vmf_s2_from_uniform(means[c], cfg.kappa, uniforms[:, 0], uniforms[:, 1]))
        inputs.append(centre + z + cfg.input_noise * noise)
        labels.append(torch.full((n,), c, dtype=torch.long))
    return torch.cat(inputs).float(), torch.cat(targets).float(), torch.cat(labels)
