"""Batch-norm recalibration ("precise BN") and why a linear input scale changed what a short run hands off.

The finding pinned here (docs/cmcr.md, "The input scale"): MinkUNet normalises its first convolution
with a batch norm, so in training mode scaling the single input channel by s changes nothing but that
batch norm's eps (exactly: scaling eps by s² as well gives the same training trajectory). What a linear
input scale does change is the *running* statistics a network in eval mode uses: they start at variance 1
and keep (1 − momentum)^k of it after k steps, which at intensity / 255 (first-layer variance ~5e-4)
dominates the true variance, so an eval-mode network shrinks its first layer's output. Re-estimating the
statistics with the final weights removes the leftover.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cmcr_core.engine.batch_norm import batch_norms, recalibrate_batch_norm
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.sparse import SparseTensor

torch.set_num_threads(1)

TINY = {"planes": (8, 8, 8, 8, 8, 8, 8, 8), "layers": (1,) * 8, "init_dim": 8}
SCALE = 1.0 / 255.0
STEPS = 4


def test_recalibration_is_the_plain_average_of_batch_statistics(device) -> None:
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3), nn.ReLU(), nn.Linear(4, 2))
    net = net.to(device)
    batches = [(torch.randn(8 + i, 3, generator=generator) * (i + 1)).to(device) for i in range(4)]
    net.eval()
    params = {k: v.clone() for k, v in net.named_parameters()}
    used = recalibrate_batch_norm(net, batches, net)
    assert used == 4
    with torch.no_grad():
        pre = [net[0](b) for b in batches]  # the batch norm's inputs
    # Naive reference: equal-weight mean of the per-batch means and of the unbiased per-batch variances.
    mean = torch.stack([x.mean(0) for x in pre]).mean(0)
    var = torch.stack([x.var(0, unbiased=True) for x in pre]).mean(0)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert bn.momentum == 0.3 and not net.training and not bn.training  # restored
    for k, v in net.named_parameters():
        torch.testing.assert_close(v, params[k], rtol=0, atol=0)
    # No input: nothing changes.
    before = bn.running_var.clone()
    assert recalibrate_batch_norm(net, [], net) == 0
    torch.testing.assert_close(bn.running_var, before, rtol=0, atol=0)


Cloud = tuple[torch.Tensor, torch.Tensor]


def _cloud(seed: int) -> Cloud:
    """(features, coordinates) of a sparse cloud with intensity-like features (4..117, as on the
    synthetic world)."""
    generator = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, 24, (900, 3), generator=generator), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int64), coords], 1).int()
    feats = (torch.rand(len(coords), 1, generator=generator) ** 2 * 113 + 4).round()
    return feats, coords


def _train(student: MinkUNet34C, clouds: list[Cloud], scale: float, steps: int) -> None:
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    student.train()
    for step in range(steps):
        feats, coords = clouds[step % len(clouds)]
        out = student(SparseTensor(feats * scale, coords)).features
        loss = (out - torch.linspace(-1, 1, out.shape[1])).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _eval_features(student: MinkUNet34C, cloud: Cloud, scale: float) -> torch.Tensor:
    student.eval()
    with torch.no_grad():
        return student.forward_features(SparseTensor(cloud[0] * scale, cloud[1])).features


@pytest.fixture(scope="module")
def trained_pair() -> tuple[MinkUNet34C, MinkUNet34C, MinkUNet34C, list[Cloud]]:
    """The same student trained 4 steps on raw inputs, on inputs / 255, and on inputs / 255 with the
    first batch norm's eps / 255² (momentum 0.05 as in pretraining). Few steps: SGD amplifies float
    rounding chaotically, so equal maths gives visibly different weights after a few dozen steps."""
    clouds = [_cloud(seed) for seed in range(3)]
    base = MinkUNet34C(1, 8, bn_momentum=0.05, **TINY)
    base.init_weights(torch.Generator().manual_seed(3))
    raw, scaled, scaled_eps = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    scaled_eps.bn0.bn.eps = base.bn0.bn.eps * SCALE**2
    _train(raw, clouds, 1.0, STEPS)
    _train(scaled, clouds, SCALE, STEPS)
    _train(scaled_eps, clouds, SCALE, STEPS)
    return raw, scaled, scaled_eps, clouds


def test_input_scale_acts_only_through_the_first_batch_norms_eps(trained_pair) -> None:
    raw, scaled, scaled_eps, _ = trained_pair
    params = dict(raw.named_parameters())
    rounding = max((v - params[n]).abs().max().item() for n, v in scaled_eps.named_parameters())
    assert rounding < 1e-5  # identical trajectory, float rounding aside
    # With the usual eps the trajectories differ, but only slightly (eps is ~5 % of the variance here).
    drift = max((v - params[n]).abs().max().item() for n, v in scaled.named_parameters())
    assert 100 * rounding < drift < 0.05


def test_short_run_running_statistics_shrink_the_first_layer_and_recalibration_fixes_it(trained_pair) -> None:
    raw, _, scaled_eps, clouds = trained_pair
    # 4 steps at momentum 0.05 leave 0.95^4 = 81 % of the initial running variance 1 in bn0: raw inputs
    # (first-layer variance ~ 10 here) hardly notice, inputs / 255 (variance ~ 2e-4) do.
    leftover = 0.95**STEPS
    assert scaled_eps.bn0.bn.running_var.min() > leftover
    probe = _cloud(7)
    before = (_eval_features(scaled_eps, probe, SCALE) - _eval_features(raw, probe, 1.0)).abs().max()
    assert before > 0.1
    for student, scale in ((raw, 1.0), (scaled_eps, SCALE)):
        inputs = [SparseTensor(feats * scale, coords) for feats, coords in clouds]
        assert recalibrate_batch_norm(student, inputs, student) == len(clouds)
        assert not student.training
    after = (_eval_features(scaled_eps, probe, SCALE) - _eval_features(raw, probe, 1.0)).abs().max()
    assert after < 1e-3 < before
    assert len(batch_norms(raw)) == len(batch_norms(scaled_eps)) > 8
