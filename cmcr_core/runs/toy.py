"""The toy distillation experiment (docs/analysis.md): a small MLP distilled from the source on S² with each
loss, U and T logged every iteration (source, settings and results: ``cmcr_core.eval.toy``)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cmcr_core.eval.structure import tolerance, uniformity
from cmcr_core.eval.toy import TOY_LOSSES, ToyConfig, ToyCurves, ToyResult, make_toy_data
from cmcr_core.losses.contrastive_distill import contrastive_distill_loss
from cmcr_core.losses.relational import relational_loss
from cmcr_core.losses.similarity import similarity_loss

__all__ = ["run_toy_experiment"]


def _init_mlp(hidden: int, generator: torch.Generator) -> list[Tensor]:
    """Weights of 2 → H → H → 3 with PyTorch's default Linear init bound 1/√fan_in, from ``generator``."""
    params = []
    for fan_in, fan_out in ((2, hidden), (hidden, hidden), (hidden, 3)):
        bound = 1.0 / math.sqrt(fan_in)
        params.append(torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=generator))
        params.append(torch.empty(fan_out).uniform_(-bound, bound, generator=generator))
    return params


def _mlp(params: list[Tensor], x: Tensor) -> Tensor:
    w1, b1, w2, b2, w3, b3 = params
    h = torch.relu(F.linear(x, w1, b1))
    h = torch.relu(F.linear(h, w2, b2))
    return F.normalize(F.linear(h, w3, b3), dim=1)


def _loss(name: str, k: Tensor, q: Tensor, cfg: ToyConfig) -> Tensor:
    if name == "contrastive":
        return contrastive_distill_loss(k, q, temperature=cfg.temperature)
    if name == "similarity":
        return similarity_loss(k, q)
    return relational_loss(k, q, lambda_cross=cfg.lambda_cross, lambda_intra=cfg.lambda_intra)["loss"]


def _structure(features: Tensor, labels: Tensor) -> tuple[float, float]:
    x = features.detach().double()
    return uniformity(x, block_size=x.shape[0], compute_dtype=torch.float64), tolerance(x, labels)


def run_toy_experiment(config: ToyConfig | None = None) -> ToyResult:
    """Distil the source into a fresh MLP with each loss of ``config.losses``; log U and T throughout.

    Args:
        config: settings (default ToyConfig(): one cluster).

    Returns:
        ToyResult with the source data, its U/T and one ToyCurves per loss.
    """
    cfg = config or ToyConfig()
    unknown = [name for name in cfg.losses if name not in TOY_LOSSES]
    if unknown:
        raise ValueError(f"toy experiment: unknown loss(es) {unknown}; choose from {list(TOY_LOSSES)}")
    if cfg.points_per_cluster < 2 or cfg.iterations < 1 or cfg.hidden < 1:
        raise ValueError(
            "toy experiment: points_per_cluster ≥ 2, iterations ≥ 1 and hidden ≥ 1 are required; got "
            f"{cfg.points_per_cluster}, {cfg.iterations}, {cfg.hidden}"
        )
    generator = torch.Generator().manual_seed(cfg.seed)
    inputs, targets, labels = make_toy_data(cfg, generator)
    initial = _init_mlp(cfg.hidden, generator)
    source_u, source_t = _structure(targets, labels)
    snapshot_at = set(cfg.snapshot_iterations)

    curves: dict[str, ToyCurves] = {}
    for name in cfg.losses:
        params = [p.clone().requires_grad_(True) for p in initial]
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        u_trace, t_trace, loss_trace = [], [], []
        snapshots: dict[int, np.ndarray] = {}
        for it in range(cfg.iterations + 1):
            k = _mlp(params, inputs)
            u, t = _structure(k, labels)
            u_trace.append(u)
            t_trace.append(t)
            if it in snapshot_at:
                snapshots[it] = k.detach().numpy().copy()
            if it == cfg.iterations:
                break  # the last pass only measures the trained model
            loss = _loss(name, k, targets, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_trace.append(float(loss.detach()))
        curves[name] = ToyCurves(
            uniformity=np.asarray(u_trace),
            tolerance=np.asarray(t_trace),
            loss=np.asarray(loss_trace),
            final_features=k.detach().numpy().copy(),
            snapshots=snapshots,
        )
    return ToyResult(
        config=cfg,
        inputs=inputs.numpy(),
        targets=targets.numpy(),
        labels=labels.numpy(),
        source_uniformity=source_u,
        source_tolerance=source_t,
        curves=curves,
    )
