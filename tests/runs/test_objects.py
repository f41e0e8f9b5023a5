"""ReCon through the shared engine and the CLI: pretraining, probing and fine-tuning on synthetic objects."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from support import RECIPES

from cmcr_cli.app import app
from cmcr_core import config
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.engine.schedules import OptimizerSettings, build_optimizer
from cmcr_core.eval.classification import extract_global_features
from cmcr_core.eval.probes import linear_probe
from cmcr_core.methods.classification import ClassifierMethod, classifier_param_groups
from cmcr_core.methods.recon import RECON_PRESETS, ReConMethod
from cmcr_core.models.point_transformer import PointTransformerClassifier
from cmcr_core.runs.object_classification import (
    eval_points,
    load_recon_encoder,
    run_object_finetune,
    run_object_probe,
)
from cmcr_core.runs.objects import read_objects


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pretraining_through_the_engine_lowers_the_losses(pretrain_run: Path) -> None:
    records = _records(pretrain_run)
    assert [r["step"] for r in records] == list(range(1, 25))
    for name in ("rec", "img", "text"):
        first = sum(r[name] for r in records[:4]) / 4
        last = sum(r[name] for r in records[-4:]) / 4
        assert last < first, (name, first, last)
    assert "smc" not in records[0]


def test_pretraining_schedule_is_the_reference_cosine(pretrain_run: Path) -> None:
    # group 0 is the decayed main group at base lr 2e-3; 4 steps per epoch, 1 warmup epoch from 1e-6
    base, start, floor, warmup, total = 2e-3, 1e-6, 1e-6, 4, 24
    for record in _records(pretrain_run):
        s = record["step"] - 1  # the lr the step ran at
        if s < warmup:
            expected = start + (base - start) * s / warmup
        else:
            expected = floor + (base - floor) * 0.5 * (
                1 + math.cos(math.pi * (s - warmup) / (total - warmup))
            )
        assert record["lr"] == pytest.approx(expected, rel=1e-9)


def test_checkpoint_hands_the_encoder_to_a_classifier(pretrain_run: Path) -> None:
    student = load_checkpoint(pretrain_run / "checkpoint.pt")["student"]
    model = PointTransformerClassifier(
        8, **{k: v for k, v in RECON_PRESETS["ci"].items() if "decoder" not in k}
    )
    load_recon_encoder(model.encoder, pretrain_run / "checkpoint.pt")
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, student[key])
    wrong = PointTransformerClassifier(
        8, **{k: v for k, v in RECON_PRESETS["ci64"].items() if "decoder" not in k}
    )
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_recon_encoder(wrong.encoder, pretrain_run / "checkpoint.pt")


def test_logistic_probe_matches_the_linear_probe_helper(
    objects_root: Path, pretrain_run: Path, tmp_path: Path
) -> None:
    recipe = config.load_recipe(
        RECIPES / "recon_probe_synthetic.yaml",
        [
            f"data.path={objects_root / 'modelnet40_normal_resampled'}",
            "model.preset=ci",
            "data.num_points=128",
            "eval.num_votes=2",
            "eval.num_subsets=2",
            "eval.probe_classifier=logistic",
            "eval.probe_epochs=100",
        ],
        kind=config.ObjectClassifyRecipe,
    )
    metrics = run_object_probe(recipe, tmp_path / "probe", pretrain_run / "checkpoint.pt")
    assert json.loads((tmp_path / "probe" / "metrics.json").read_text()) == metrics
    # independent reference: the method module's linear_probe on features extracted here
    method = ReConMethod(**RECON_PRESETS["ci"], img_dim=32, text_dim=24)
    method.encoder.load_state_dict(load_checkpoint(pretrain_run / "checkpoint.pt")["student"])
    train, test = read_objects(recipe.data, "train"), read_objects(recipe.data, "test")
    fx = [extract_global_features(method.encoder, eval_points(s, recipe.data), "svm") for s in (train, test)]
    ref = linear_probe(
        fx[0], torch.from_numpy(train.labels), fx[1], torch.from_numpy(test.labels), 8, epochs=100, seed=0
    )
    assert metrics["overall_accuracy"] == pytest.approx(ref["test_acc"])
    assert metrics["train_accuracy"] == pytest.approx(ref["train_acc"])
    # per-class accuracies weighted by class counts give the overall accuracy back
    counts = {name: int((test.labels == i).sum()) for i, name in enumerate(test.class_names)}
    weighted = sum(acc * counts[name] for name, acc in metrics["per_class_accuracy"].items()) / len(test)
    assert weighted == pytest.approx(metrics["overall_accuracy"])
    votes = metrics["voting_votes"]
    assert metrics["voting_mean"] == pytest.approx(sum(votes) / len(votes))


def test_finetune_runs_seeds_through_the_engine(
    objects_root: Path, pretrain_run: Path, tmp_path: Path
) -> None:
    recipe = config.load_recipe(
        RECIPES / "recon_finetune_synthetic.yaml",
        [
            f"data.path={objects_root / 'ScanObjectNN' / 'h5_files'}",
            "model.preset=ci",
            "data.num_points=128",
            "data.batch_size=8",
            "train.epochs=1",
            "eval.num_votes=2",
            "eval.num_subsets=2",
        ],
        kind=config.ObjectClassifyRecipe,
    )
    summary = run_object_finetune(recipe, tmp_path / "ft", pretrain_run / "checkpoint.pt", seeds=(0, 1))
    for seed in ("0", "1"):
        records = _records(tmp_path / "ft" / f"seed{seed}")
        assert records[-1]["step"] == 4 and "ce" in records[-1]
        run = summary["seeds"][seed]
        assert run["voting_mean"] == pytest.approx(sum(run["voting_votes"]) / 2)
    accs = [summary["seeds"][s]["overall_accuracy"] for s in ("0", "1")]
    assert summary["overall_accuracy"]["mean"] == pytest.approx(sum(accs) / 2)


def test_finetune_param_groups_give_cls_and_head_ten_times_the_lr() -> None:
    recipe = config.load_recipe(
        RECIPES / "recon_finetune_scanobjectnn.yaml", [], kind=config.ObjectClassifyRecipe
    )
    model = PointTransformerClassifier(
        15, **{k: v for k, v in RECON_PRESETS["ci"].items() if "decoder" not in k}
    )
    method = ClassifierMethod(model)
    optimizer = build_optimizer(method, OptimizerSettings(), classifier_param_groups(
        method, recipe.optim.lr, recipe.optim.weight_decay, recipe.optim.cls_lr_scale))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, param in method.named_parameters():
        fast = "cls" in name or name.startswith("model.head.")
        assert lr_of[id(param)] == pytest.approx(2e-4 if fast else 2e-5), name
        no_decay = param.ndim == 1 or "token" in name
        assert decay_of[id(param)] == (0.0 if no_decay else 0.05), name


def test_cli_dispatches_recon_recipes(runner) -> None:
    result = runner.invoke(app, ["pretrain", "--recipe", str(RECIPES / "recon_shapenet.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "method: recon" in result.output and "warmup_epochs: 10" in result.output
    bad = runner.invoke(
        app,
        [
            "pretrain",
            "--recipe",
            str(RECIPES / "recon_shapenet.yaml"),
            "--set",
            "model.preset=huge",
            "--dry-run",
        ],
    )
    assert bad.exit_code == 2 and "model.preset" in bad.output


def test_batch_norm_recalibration_gives_the_dataset_statistics() -> None:
    from cmcr_core.data.objects import ObjectPointDataset, make_synthetic_objects
    from cmcr_core.runs.object_classification import recalibrate_batch_norm

    objects = make_synthetic_objects(2, 256, seed=3, image_size=8).objects
    dataset = ObjectPointDataset(objects, 128, "random", True, "rotate_y", seed=1)
    sizes = {k: v for k, v in RECON_PRESETS["ci"].items() if "decoder" not in k}
    model = PointTransformerClassifier(8, **sizes, head="linear")
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    seen: list[torch.Tensor] = []
    first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().transpose(0, 1).flatten(1)))
    first.running_mean.fill_(5.0)  # stale statistics that recalibration must replace
    recalibrate_batch_norm(model, dataset, passes=2, batch_size=4)
    assert len(seen) == 2 * 4 and not model.training and first.momentum == 0.1
    # equal batches: the cumulative average of batch means is the mean over every BN input value
    expected = torch.cat(seen, dim=1).mean(1)
    torch.testing.assert_close(first.running_mean, expected, rtol=1e-4, atol=1e-6)
