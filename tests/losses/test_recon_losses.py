"""ReCon losses against naive references (on the CPU) and analytic values, computed on the test device."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.losses.chamfer import chamfer_l1, chamfer_l2
from cmcr_core.losses.feature_regression import feature_regression
from cmcr_core.losses.single_modal_contrastive import multi_positive_contrastive
from cmcr_core.ops.geometry import nearest_squared_distances


def naive_nearest(a: list, b: list) -> list[float]:
    return [min(sum((p[i] - q[i]) ** 2 for i in range(3)) for q in b) for p in a]


def test_chamfer_l2_matches_double_loop(device) -> None:
    gen = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(3, 6, 3, generator=gen), torch.randn(3, 9, 3, generator=gen)
    to_gt = [d for b in range(3) for d in naive_nearest(pred[b].tolist(), gt[b].tolist())]
    to_pred = [d for b in range(3) for d in naive_nearest(gt[b].tolist(), pred[b].tolist())]
    pred, gt = pred.to(device), gt.to(device)
    expected = sum(to_gt) / len(to_gt) + sum(to_pred) / len(to_pred)
    assert chamfer_l2(pred, gt).item() == pytest.approx(expected, rel=1e-5)
    assert chamfer_l2(pred, gt, chunk_size=1).item() == pytest.approx(expected, rel=1e-5)
    expected_l1 = (sum(map(math.sqrt, to_gt)) / len(to_gt) + sum(map(math.sqrt, to_pred)) / len(to_pred)) / 2
    assert chamfer_l1(pred, gt).item() == pytest.approx(expected_l1, rel=1e-5)


def test_chamfer_zero_on_identical_sets_and_symmetric(device, tolerance) -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 8, 3, generator=gen), torch.randn(2, 8, 3, generator=gen)
    shuffled = a[:, torch.randperm(8, generator=gen)]
    a, b, shuffled = a.to(device), b.to(device), shuffled.to(device)
    assert chamfer_l2(a, shuffled).item() == 0.0
    assert chamfer_l2(a, b).item() == pytest.approx(chamfer_l2(b, a).item(), rel=tolerance.on(device, 1e-6))


def test_chamfer_analytic_value_and_gradient(device) -> None:
    # one predicted point at the origin, targets at (+-2, 0, 0): every nearest squared distance is 4
    pred = torch.zeros(1, 1, 3, device=device, requires_grad=True)
    gt = torch.tensor([[[2.0, 0, 0], [-2.0, 0, 0]]], device=device)
    loss = chamfer_l2(pred, gt)
    assert loss.item() == pytest.approx(4.0 + 4.0)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    to_gt, to_pred = nearest_squared_distances(pred.detach(), gt)
    assert to_gt.tolist() == [[4.0]] and to_pred.tolist() == [[4.0, 4.0]]


def test_feature_regression_smooth_l1_analytic_and_detached_target(device) -> None:
    pred = torch.tensor([[0.5, 3.0]], device=device, requires_grad=True)
    target = torch.tensor([[0.0, 0.0]], device=device, requires_grad=True)
    loss = feature_regression(pred, target)
    # beta = 1: 0.5 * 0.5^2 for |x| < 1, |x| - 0.5 otherwise; mean over elements
    assert loss.item() == pytest.approx((0.125 + 2.5) / 2)
    loss.backward()
    assert target.grad is None
    assert pred.grad.tolist() == [[0.25, 0.5]]
    with pytest.raises(ValueError, match="unknown regression kind"):
        feature_regression(pred, target, "huber")


def test_feature_regression_mse_and_cosine(device) -> None:
    pred, target = torch.tensor([[1.0, 0.0]], device=device), torch.tensor([[0.0, 2.0]], device=device)
    assert feature_regression(pred, target, "mse").item() == pytest.approx(2.5)
    assert feature_regression(pred, target, "cosine").item() == pytest.approx(1.0)
    assert feature_regression(pred, 3 * pred, "cosine").item() == pytest.approx(0.0, abs=1e-7)


def naive_smc(z: torch.Tensor, labels: list[int], tau: float) -> float:
    """The reference ContrastiveHead: per anchor CE([mean(pos), negs...] / tau, 0), averaged."""
    sim = z @ z.t()
    total = 0.0
    for i in range(len(labels)):
        pos = [sim[i, j].item() for j in range(len(labels)) if labels[j] == labels[i]]
        neg = [sim[i, j].item() for j in range(len(labels)) if labels[j] != labels[i]]
        logits = [sum(pos) / len(pos)] + neg
        lse = math.log(sum(math.exp(x / tau) for x in logits))
        total += lse - logits[0] / tau
    return total / len(labels)


def test_multi_positive_contrastive_matches_reference_loop(device, tolerance) -> None:
    gen = torch.Generator().manual_seed(3)
    z = F.normalize(torch.randn(7, 5, generator=gen), dim=1)
    labels = [0, 1, 0, 2, 1, 0, 3]
    got = multi_positive_contrastive(z.to(device), torch.tensor(labels, device=device), 0.1).item()
    assert got == pytest.approx(naive_smc(z, labels, 0.1), rel=tolerance.on(device, 1e-5))
    # all samples of one class: only the positive logit remains, loss 0
    one_class = torch.zeros(7, dtype=torch.long, device=device)
    assert multi_positive_contrastive(z.to(device), one_class).item() == pytest.approx(0.0, abs=1e-6)
