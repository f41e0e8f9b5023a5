"""Fine-tuning / probing pieces: accuracy, mean-over-votes voting, linear probe, features, param groups."""

from __future__ import annotations

import pytest
import torch

from cmcr_core.eval.classification import (
    extract_global_features,
    overall_accuracy,
    vote_logits,
    voting_accuracy,
)
from cmcr_core.eval.probes import linear_probe
from cmcr_core.methods.recon import recon_param_groups
from cmcr_core.models.point_transformer import PointTransformerClassifier, ReConEncoder
from cmcr_core.ops.geometry import farthest_point_sample, gather_points


def test_overall_accuracy() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [0.0, 1.0]])
    assert overall_accuracy(logits, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.75)
    assert overall_accuracy(torch.tensor([1, 1]), torch.tensor([1, 0])) == pytest.approx(0.5)


def test_vote_logits_average_subsets_of_the_fps_pool() -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(3, 40, 3, generator=gen)

    def classify(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[..., 0].mean(1), x[..., 1].max(1).values], 1)

    got = vote_logits(
        classify, points, 10, num_subsets=4, fps_pool=20, generator=torch.Generator().manual_seed(7)
    )
    pool = gather_points(points, farthest_point_sample(points, 20))
    ref_gen = torch.Generator().manual_seed(7)
    expected = sum(classify(pool[:, torch.randperm(20, generator=ref_gen)[:10]]) for _ in range(4)) / 4
    assert torch.allclose(got, expected)


def test_voting_reports_the_mean_over_votes_not_the_max() -> None:
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(20, 30, 3, generator=gen)
    labels = torch.randint(0, 2, (20,), generator=gen)

    def noisy(x: torch.Tensor) -> torch.Tensor:  # depends on the subset, so votes differ
        return torch.stack([x[:, :3, 0].sum(1), x[:, :3, 1].sum(1)], 1)

    out = voting_accuracy(noisy, points, labels, num_points=10, num_votes=6, num_subsets=1, seed=3)
    votes = out["votes"]
    assert len(votes) == 6 and max(votes) > min(votes)
    assert out["mean"] == pytest.approx(sum(votes) / 6) and out["mean"] < max(votes)


def test_linear_probe_separable_and_chance() -> None:
    gen = torch.Generator().manual_seed(2)
    centres = torch.randn(4, 16, generator=gen) * 4
    y_train, y_test = torch.arange(80) % 4, torch.arange(40) % 4
    x_train = centres[y_train] + torch.randn(80, 16, generator=gen)
    x_test = centres[y_test] + torch.randn(40, 16, generator=gen)
    res = linear_probe(x_train, y_train, x_test, y_test, 4, epochs=100)
    assert res["train_acc"] == 1.0 and res["test_acc"] == 1.0
    noise = linear_probe(
        torch.randn(80, 16, generator=gen),
        y_train,
        torch.randn(400, 16, generator=gen),
        torch.arange(400) % 4,
        4,
        epochs=100,
    )
    assert noise["test_acc"] < 0.4


def test_global_features_match_their_definitions() -> None:
    torch.manual_seed(0)
    encoder = ReConEncoder(32, 2, 2, 8, 16, drop_path_rate=0.1)
    points = torch.rand(5, 128, 3)
    svm = extract_global_features(encoder, points, "svm", batch_size=2)
    full = extract_global_features(encoder, points, "finetune")
    assert encoder.training  # mode restored
    encoder.eval()
    with torch.no_grad():
        q, t = encoder(*encoder.group(points))
    assert svm.shape == (5, 64) and full.shape == (5, 128)
    assert torch.allclose(svm, torch.cat([q.max(1).values, t.max(1).values + t.mean(1)], 1), atol=1e-5)
    assert torch.allclose(full, torch.cat([q[:, 0], q[:, 1], q[:, 2], t.max(1).values], 1), atol=1e-5)
    tokens = extract_global_features(encoder, points, "tokens")
    assert torch.allclose(tokens, torch.cat([t.max(1).values, t.mean(1)], 1), atol=1e-5)
    with pytest.raises(ValueError, match="feature kind"):
        extract_global_features(encoder, points, "queries")


def exact_linear_svc(x: torch.Tensor, labels: torch.Tensor, classes: int, c: float) -> torch.Tensor:
    """Independent reference: per class (one-vs-rest), min 0.5 |w|^2 + c * sum max(0, 1 - y w.[x, 1])^2, the
    LinearSVC objective with the intercept penalised as liblinear does, minimised exactly by a generalised
    Newton method with backtracking (strongly convex, piecewise quadratic). Returns (D + 1) x classes; for
    two classes class 0's problem is class 1's with y negated, so its column is minus class 1's."""
    xb = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    eye = torch.eye(xb.shape[1], dtype=torch.float64)
    columns = []
    for k in range(classes):
        y = (labels == k).double() * 2 - 1
        w = torch.zeros(xb.shape[1], dtype=torch.float64)

        def objective(w: torch.Tensor, y: torch.Tensor = y) -> torch.Tensor:
            return 0.5 * w @ w + c * (1 - y * (xb @ w)).clamp_min(0).square().sum()

        for _ in range(100):
            margin = 1 - y * (xb @ w)
            active = margin > 0
            grad = w - 2 * c * xb[active].T @ (y[active] * margin[active])
            if float(grad.norm()) <= 1e-12 * max(1.0, float(w.norm())):
                break
            step = torch.linalg.solve(eye + 2 * c * xb[active].T @ xb[active], grad)
            value, t = objective(w), 1.0
            while t > 1e-12 and objective(w - t * step) > value - 1e-4 * t * (grad @ step):
                t /= 2
            w = w - t * step
        columns.append(w)
    return torch.stack(columns, 1)


@pytest.mark.parametrize(("c", "classes"), [(0.075, 5), (1.0, 5), (0.075, 2)])
def test_linear_svc_reaches_the_exact_minimum_of_its_objective(c: float, classes: int) -> None:
    from cmcr_core.eval.probes import fit_linear_svc

    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(60) % classes
    # overlapping classes (not separable), features of unequal scale and a non-zero mean
    x = torch.randn(60, 12, generator=gen) * torch.linspace(0.2, 3.0, 12) + 0.5
    x[:, :classes] += torch.nn.functional.one_hot(labels, classes) * 1.5
    test = torch.randn(30, 12, generator=gen) * 2
    decision = fit_linear_svc(x, labels, classes, c)(test)
    w = exact_linear_svc(x, labels, classes, c)
    expected = (test.double() @ w[:-1] + w[-1]).float()
    torch.testing.assert_close(decision, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="C must be > 0"):
        fit_linear_svc(x, labels, classes, 0.0)
    with pytest.raises(ValueError, match=rf"classes \[{classes}\] have no training sample"):
        fit_linear_svc(x, labels, classes + 1, c)


def test_classifier_heads_and_param_groups() -> None:
    torch.manual_seed(0)
    model = PointTransformerClassifier(7, 32, 1, 2, 8, 16, head="linear")
    assert model(torch.rand(2, 64, 3)).shape == (2, 7)
    groups = {g["name"]: g for g in recon_param_groups(model, 1e-3, 0.05, cls_lr_scale=10.0)}
    params = dict(model.named_parameters())
    by_id = {id(p): g["name"] for g in groups.values() for p in g["params"]}
    assert by_id[id(params["encoder.cls_token"])] == "cls_no_decay"
    assert by_id[id(params["encoder.img_token"])] == "main_no_decay"
    assert by_id[id(params["encoder.blocks.0.attn.qkv.weight"])] == "main"
    assert by_id[id(params["encoder.norm.weight"])] == "main_no_decay"
    assert groups["cls_no_decay"]["lr"] == pytest.approx(1e-2) and groups["main"]["weight_decay"] == 0.05
    assert groups["main_no_decay"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups.values()) == len(params)
