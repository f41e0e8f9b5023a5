"""`cmcr finetune` / `cmcr probe` with classification recipes: dispatch, refused flags, metrics.json contents.

The accuracies in metrics.json are recomputed here independently: the probe's with scikit-learn's
LinearSVC (the reference's probe) on features of the checkpoint's encoder, the fine-tuned models' from the
run folders' final checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import RECIPES

from cmcr_cli.app import app
from cmcr_core.data.objects import normalize_unit_sphere
from cmcr_core.data.objects.readers import read_modelnet_resampled, read_scanobjectnn
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.eval.classification import extract_global_features
from cmcr_core.methods.recon import RECON_PRESETS
from cmcr_core.models.point_transformer import PointTransformerClassifier
from cmcr_core.ops.geometry import farthest_point_sample_np

SIZES = {k: v for k, v in RECON_PRESETS["ci"].items() if "decoder" not in k}
SMALL = ["model.preset=ci", "data.num_points=128", "eval.num_votes=3", "eval.num_subsets=2"]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _fps_clouds(clouds: list[np.ndarray], n: int) -> torch.Tensor:
    """FPS from index 0, then unit-sphere normalisation (the evaluation protocol), done here by hand."""
    out = [normalize_unit_sphere(c[farthest_point_sample_np(c, n)]) for c in clouds]
    return torch.from_numpy(np.stack(out).astype(np.float32))


def _check_votes(metrics: dict) -> None:
    votes = metrics["voting_votes"]
    assert len(votes) == 3
    assert metrics["voting_mean"] == pytest.approx(float(np.mean(votes)))
    assert metrics["voting_std"] == pytest.approx(float(np.std(votes)))


def test_probe_command_reports_the_reference_svc_accuracy(
    runner, objects_root: Path, pretrain_run: Path, tmp_path: Path
) -> None:
    sklearn_svm = pytest.importorskip("sklearn.svm")
    data = objects_root / "modelnet40_normal_resampled"
    out = tmp_path / "probe"
    args = ["probe", "--recipe", str(RECIPES / "recon_probe_synthetic.yaml"), "--data", str(data)]
    args += ["--weights", str(pretrain_run / "checkpoint.pt"), "--out", str(out), *_sets(SMALL)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "voting (mean over votes)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights"] == str(pretrain_run / "checkpoint.pt")
    # independent: LinearSVC(C = 0.075) on raw SVM-protocol features of the checkpoint's encoder
    model = PointTransformerClassifier(8, **SIZES)
    model.encoder.load_state_dict(load_checkpoint(pretrain_run / "checkpoint.pt")["student"])
    train, test = read_modelnet_resampled(data, "train"), read_modelnet_resampled(data, "test")
    fx = [extract_global_features(model.encoder, _fps_clouds(s.points, 128), "svm") for s in (train, test)]
    svc = sklearn_svm.LinearSVC(C=0.075, tol=1e-8, max_iter=100000).fit(fx[0].numpy(), train.labels)
    test_acc = float((svc.predict(fx[1].numpy()) == test.labels).mean())
    train_acc = float((svc.predict(fx[0].numpy()) == train.labels).mean())
    assert metrics["overall_accuracy"] == pytest.approx(test_acc)
    assert metrics["train_accuracy"] == pytest.approx(train_acc)
    _check_votes(metrics)


def test_probe_command_with_seeds_aggregates_random_encoders(
    runner, objects_root: Path, tmp_path: Path
) -> None:
    data = objects_root / "modelnet40_normal_resampled"
    out = tmp_path / "probe_random"
    args = ["probe", "--recipe", str(RECIPES / "recon_probe_synthetic.yaml"), "--data", str(data)]
    result = runner.invoke(app, [*args, "--out", str(out), "--seeds", "2", *_sets(SMALL)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["weights"] is None and sorted(summary["seeds"]) == ["0", "1"]
    per_seed = [json.loads((out / f"seed{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert [summary["seeds"][s] for s in ("0", "1")] == per_seed
    for key in ("overall_accuracy", "voting_mean"):
        values = [m[key] for m in per_seed]
        assert summary[key]["mean"] == pytest.approx(float(np.mean(values)))
        assert summary[key]["std"] == pytest.approx(float(np.std(values)))
    for metrics in per_seed:
        _check_votes(metrics)
    # seed s of `--seeds` is the run `--set train.seed=s` (same random encoder, same votes)
    single = tmp_path / "probe_seed1"
    result = runner.invoke(app, [*args, "--out", str(single), *_sets([*SMALL, "train.seed=1"])])
    assert result.exit_code == 0, result.output
    assert json.loads((single / "metrics.json").read_text()) == per_seed[1]


def test_finetune_command_reports_the_final_models_accuracy(
    runner, objects_root: Path, pretrain_run: Path, tmp_path: Path
) -> None:
    data = objects_root / "ScanObjectNN" / "h5_files"
    out = tmp_path / "ft"
    sets = [*SMALL, "data.batch_size=8", "train.epochs=2", "eval.recalibrate_bn=0"]
    args = ["finetune", "--recipe", str(RECIPES / "recon_finetune_synthetic.yaml"), "--data", str(data)]
    args += ["--weights", str(pretrain_run / "checkpoint.pt"), "--out", str(out), "--seeds", "2"]
    args += _sets(sets)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    test = read_scanobjectnn(data, "test", "obj_bg")
    points, labels = _fps_clouds(test.points, 128), torch.from_numpy(test.labels)
    accs = []
    for seed in ("0", "1"):
        run = summary["seeds"][seed]
        # independent: the engine's final checkpoint of this seed, evaluated here in eval mode
        model = PointTransformerClassifier(len(test.class_names), **SIZES, head="mlp3")
        state = load_checkpoint(out / f"seed{seed}" / "checkpoint.pt")["model"]
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        with torch.no_grad():
            pred = model.eval()(points).argmax(1)
        assert run["overall_accuracy"] == pytest.approx(float((pred == labels).float().mean()))
        _check_votes(run)
        accs.append(run["overall_accuracy"])
    assert summary["overall_accuracy"]["mean"] == pytest.approx(float(np.mean(accs)))
    assert summary["overall_accuracy"]["std"] == pytest.approx(float(np.std(accs)))
    votes = [summary["seeds"][s]["voting_mean"] for s in ("0", "1")]
    assert summary["voting_mean"]["mean"] == pytest.approx(float(np.mean(votes)))


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("finetune", ["--label-fraction", "0.1"]),
        ("probe", ["--export-predictions", "preds"]),
        ("finetune", ["--resume"]),
        ("probe", ["--allow-voxel-mismatch"]),
    ],
)
def test_segmentation_only_flags_are_refused(runner, command: str, flag: list[str]) -> None:
    name = "recon_finetune_synthetic.yaml" if command == "finetune" else "recon_probe_synthetic.yaml"
    result = runner.invoke(app, [command, "--recipe", str(RECIPES / name), *flag, "--dry-run"])
    assert result.exit_code == 2
    assert flag[0] in result.output and "task: classification" in result.output


def test_classification_recipes_resolve_through_both_commands(runner) -> None:
    for command, name in (("finetune", "recon_finetune_synthetic"), ("probe", "recon_probe_synthetic")):
        result = runner.invoke(app, [command, "--recipe", str(RECIPES / f"{name}.yaml"), "--dry-run"])
        assert result.exit_code == 0, result.output
        assert "task: classification" in result.output and f"name: {name}" in result.output
    recipe = str(RECIPES / "recon_probe_synthetic.yaml")
    bad = runner.invoke(app, ["probe", "--recipe", recipe, "--seeds", "0"])
    assert bad.exit_code == 2 and "--seeds" in bad.output
