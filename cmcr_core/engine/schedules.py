"""Optimisers (AdamW, SGD) with named parameter groups, and learning-rate schedules precomputed per step.

A schedule is a (total_steps,) float64 tensor of factors; step ``s`` (0-based) of every parameter group runs
at ``group["base_lr"] * factors[s]``. Precomputing keeps the loop free of scheduler objects and makes the
schedule position (= the step) the only state to checkpoint.

Schedules (those of valeoai/SLidR and Eaphan/CMCR):

* ``constant``: factor 1 (CMCR).
* ``cosine``: ``final + (1 − final)·(1 + cos(π·t/T))/2``, the closed form of ``CosineAnnealingLR`` with
  ``eta_min = final·base_lr``. Per step: t = s − warmup, T = total − warmup. Per epoch (SLidR,
  ``steps_per_epoch`` given): t = s // steps_per_epoch, T = ⌈total / steps_per_epoch⌉ epochs.
* optional linear warmup: for s < warmup the factor is ``start + (1 − start)·s/warmup`` (reaches 1 at the
  first step after warmup), replacing the schedule's value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["OptimizerSettings", "ScheduleSettings", "build_optimizer", "lr_factors", "set_lr"]


@dataclass(frozen=True)
class OptimizerSettings:
    """Optimiser hyper-parameters. ``lr_overrides`` maps a parameter-name prefix to its own base lr
    (longest prefix wins), e.g. ``{"student.final.": 0.1}`` for a head trained faster than the backbone."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    lr_overrides: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleSettings:
    """Learning-rate schedule: ``kind``, linear warmup, cosine floor, per-epoch stepping."""

    kind: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    warmup_start_factor: float = 0.0
    final_factor: float = 0.0
    per_epoch: bool = False


def lr_factors(
    settings: ScheduleSettings, total_steps: int, steps_per_epoch: int | None = None
) -> torch.Tensor:
    """(total_steps,) float64 factors of the base learning rates, one per optimizer step."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = settings.warmup_steps
    if not 0 <= warmup < total_steps:
        raise ValueError(f"warmup_steps must lie in [0, total_steps={total_steps}), got {warmup}")
    steps = torch.arange(total_steps, dtype=torch.float64)
    if settings.kind == "constant":
        factors = torch.ones(total_steps, dtype=torch.float64)
    elif settings.kind == "cosine":
        if settings.per_epoch:
            if not steps_per_epoch or steps_per_epoch < 1:
                raise ValueError("a per-epoch cosine schedule needs steps_per_epoch >= 1")
            t = torch.div(steps, steps_per_epoch, rounding_mode="floor")
            period = float(math.ceil(total_steps / steps_per_epoch))
        else:
            t, period = steps - warmup, float(total_steps - warmup)
        final = settings.final_factor
        factors = final + (1.0 - final) * 0.5 * (1.0 + torch.cos(math.pi * t / period))
    else:
        raise ValueError(f"unknown schedule kind {settings.kind!r}; expected 'constant' or 'cosine'")
    if warmup:
        start = settings.warmup_start_factor
        factors[:warmup] = start + (1.0 - start) * steps[:warmup] / warmup
    return factors


def _group_of(name: str, prefixes: list[str]) -> str | None:
    matches = [p for p in prefixes if name.startswith(p)]
    return max(matches, key=len) if matches else None


def _custom_groups(module: nn.Module, groups: Sequence[Mapping[str, Any]], lr: float) -> list[dict[str, Any]]:
    """Check caller-made groups (each trainable parameter exactly once); fill name, lr and base_lr."""
    trainable = {id(p): n for n, p in module.named_parameters() if p.requires_grad}
    seen: set[int] = set()
    out = []
    for index, group in enumerate(groups):
        params = list(group["params"])
        for parameter in params:
            if id(parameter) in seen or id(parameter) not in trainable:
                raise ValueError(f"param group {index} holds a parameter twice or one that is not trainable")
            seen.add(id(parameter))
        group_lr = group.get("lr", lr)
        out.append({**group, "params": params, "name": group.get("name", f"group{index}"), "lr": group_lr,
                    "base_lr": group.get("base_lr", group_lr)})
    left = [name for key, name in trainable.items() if key not in seen]
    if left:
        raise ValueError(f"{len(left)} trainable parameters are in no param group, e.g. {left[:5]}")
    return out


def build_optimizer(
    module: nn.Module, settings: OptimizerSettings, param_groups: Sequence[Mapping[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters of ``module``.

    Groups: one per ``settings.lr_overrides`` prefix (plus ``"default"``), or the caller's ``param_groups``
    (torch-style dicts, e.g. without weight decay on 1-D tensors; they must cover every trainable
    parameter exactly once). Every group carries ``name`` and ``base_lr`` (see ``set_lr``).
    """
    if param_groups is not None:
        if settings.lr_overrides:
            raise ValueError("pass either lr_overrides or param_groups, not both")
        return _make_optimizer(_custom_groups(module, param_groups, settings.lr), settings)
    prefixes = list(settings.lr_overrides)
    groups: dict[str, list[nn.Parameter]] = {}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(_group_of(name, prefixes) or "default", []).append(parameter)
    if not groups:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    unused = [p for p in prefixes if p not in groups]
    if unused:
        raise ValueError(
            f"lr_overrides prefixes {unused} match no trainable parameter of {type(module).__name__}"
        )
    made = [
        {"params": params, "name": key, "lr": settings.lr_overrides.get(key, settings.lr),
         "base_lr": settings.lr_overrides.get(key, settings.lr)}
        for key, params in groups.items()
    ]
    return _make_optimizer(made, settings)


def _make_optimizer(param_groups: list[dict[str, Any]], settings: OptimizerSettings) -> torch.optim.Optimizer:
    if settings.name == "adamw":
        return torch.optim.AdamW(
            param_groups, lr=settings.lr, betas=settings.betas, eps=settings.eps,
            weight_decay=settings.weight_decay,
        )
    if settings.name == "sgd":
        return torch.optim.SGD(
            param_groups, lr=settings.lr, momentum=settings.momentum, dampening=settings.dampening,
            weight_decay=settings.weight_decay, nesterov=settings.nesterov,
        )
    raise ValueError(f"unknown optimizer {settings.name!r}; expected 'adamw' or 'sgd'")


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to ``base_lr * factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
