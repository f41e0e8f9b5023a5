"""Precomputed schedules vs closed forms and torch's own schedulers; optimiser construction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cmcr_core.engine.schedules import (
    OptimizerSettings,
    ScheduleSettings,
    build_optimizer,
    lr_factors,
    set_lr,
)


def _torch_scheduler_lrs(total: int, t_max: int, eta_min: float, steps_per_update: int = 1) -> list[float]:
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)
    lrs = []
    for step in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if (step + 1) % steps_per_update == 0:
            scheduler.step()
    return lrs


def test_constant():
    assert lr_factors(ScheduleSettings(kind="constant"), 7).tolist() == [1.0] * 7


def test_cosine_per_step_matches_closed_form_and_torch():
    factors = lr_factors(ScheduleSettings(kind="cosine", final_factor=0.1), 20).tolist()
    closed = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 20)) for s in range(20)]
    assert factors == pytest.approx(closed, abs=1e-12)
    assert factors == pytest.approx(_torch_scheduler_lrs(20, 20, 0.1), abs=1e-9)


def test_cosine_per_epoch_matches_slidr_style_epoch_stepping():
    # SLidR: CosineAnnealingLR(T_max = epochs) stepped once per epoch.
    settings = ScheduleSettings(kind="cosine", per_epoch=True)
    factors = lr_factors(settings, 5 * 6, steps_per_epoch=6).tolist()
    assert factors == pytest.approx(_torch_scheduler_lrs(30, 5, 0.0, steps_per_update=6), abs=1e-9)
    assert factors[:6] == [1.0] * 6 and len(set(factors)) == 5
    with pytest.raises(ValueError, match="steps_per_epoch"):
        lr_factors(settings, 30)


def test_linear_warmup_then_cosine():
    settings = ScheduleSettings(kind="cosine", warmup_steps=4, warmup_start_factor=0.2)
    factors = lr_factors(settings, 14).tolist()
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)])
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_factors(ScheduleSettings(warmup_steps=14), 14)


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)
    return model


def test_param_groups_with_own_learning_rates():
    model = _model()
    optimizer = build_optimizer(model, OptimizerSettings(name="adamw", lr=1e-3, lr_overrides={"1.": 0.1}))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"default", "1."}
    assert groups["default"]["params"] == [model[0].weight]  # the frozen bias is left out
    assert groups["1."]["params"] == [model[1].weight, model[1].bias]
    set_lr(optimizer, 0.5)
    assert (groups["default"]["lr"], groups["1."]["lr"]) == (5e-4, 0.05)
    assert groups["default"]["weight_decay"] == 0.01 and groups["default"]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="match no trainable parameter"):
        build_optimizer(model, OptimizerSettings(lr_overrides={"head.": 0.1}))


def test_sgd_settings_reach_torch():
    optimizer = build_optimizer(_model(), OptimizerSettings(name="sgd", lr=0.5, momentum=0.9, dampening=0.1,
                                                             weight_decay=1e-4))
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["dampening"], group["weight_decay"], group["nesterov"]) == (
        0.5, 0.9, 0.1, 1e-4, False)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(_model(), OptimizerSettings(name="lamb"))  # type: ignore[arg-type]


def test_caller_param_groups_without_decay_on_1d_tensors():
    model = _model()
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = build_optimizer(model, OptimizerSettings(lr=1e-3, weight_decay=0.05),
                                [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lr": 2e-3}])
    first, second = optimizer.param_groups
    assert (first["weight_decay"], first["base_lr"], first["name"]) == (0.05, 1e-3, "group0")
    assert (second["weight_decay"], second["base_lr"]) == (0.0, 2e-3)
    with pytest.raises(ValueError, match="in no param group"):
        build_optimizer(model, OptimizerSettings(), [{"params": decay}])
    with pytest.raises(ValueError, match="twice"):
        build_optimizer(model, OptimizerSettings(), [{"params": decay + no_decay}, {"params": decay}])
