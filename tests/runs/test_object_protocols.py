"""ReCon's downstream protocols through the commands: few-shot folds (`cmcr probe` / `cmcr finetune`),
zero-shot (`cmcr zeroshot --objects`), and the published recipes' settings against the reference's
configuration files.

Accuracies are recomputed here independently: the few-shot probe's with scikit-learn's LinearSVC on a
fold drawn again, the fine-tuned folds' from their final checkpoints, zero-shot's from the checkpoint's
encoder and projections applied by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import RECIPES

from cmcr_cli.app import app
from cmcr_core import config
from cmcr_core.data.objects import ObjectPointDataset, normalize_unit_sphere
from cmcr_core.data.objects.fewshot import sample_fold
from cmcr_core.data.objects.readers import read_modelnet_resampled
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.eval.classification import extract_global_features
from cmcr_core.methods.recon import RECON_PRESETS
from cmcr_core.models.point_transformer import PointTransformerClassifier, ReConEncoder
from cmcr_core.ops.geometry import farthest_point_sample_np

torch.set_num_threads(1)

SIZES = {k: v for k, v in RECON_PRESETS["ci"].items() if "decoder" not in k}
FEWSHOT = ["model.preset=ci", "data.num_points=128", "fewshot.way=3", "fewshot.shot=2", "fewshot.queries=2",
           "fewshot.folds=3", "fewshot.seed=7", "data.batch_size=6", "train.epochs=1", "eval.num_subsets=2"]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _fps(clouds: list[np.ndarray], n: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([normalize_unit_sphere(c[farthest_point_sample_np(c, n)])
                                      for c in clouds]).astype(np.float32))


def test_fewshot_probe_runs_every_fold_and_reports_mean_and_std(
    runner, objects_root: Path, pretrain_run: Path, tmp_path: Path
) -> None:
    sklearn_svm = pytest.importorskip("sklearn.svm")
    data, out = objects_root / "modelnet40_normal_resampled", tmp_path / "fs"
    args = ["probe", "--recipe", str(RECIPES / "recon_fewshot_synthetic.yaml"), "--data", str(data), "--out",
            str(out), "--weights", str(pretrain_run / "checkpoint.pt"), *_sets(FEWSHOT)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3-way 2-shot, 3 folds" in result.output
    summary = json.loads((out / "metrics.json").read_text())
    accs = [json.loads((out / f"fold{f}" / "metrics.json").read_text())["overall_accuracy"] for f in range(3)]
    expected = {"mean": float(np.mean(accs)), "std": float(np.std(accs))}
    assert summary["overall_accuracy"] == pytest.approx(expected)
    # folds.json records exactly the folds drawn again here from the same seed
    train, test = read_modelnet_resampled(data, "train"), read_modelnet_resampled(data, "test")
    recorded = json.loads((out / "folds.json").read_text())
    assert recorded["seed"] == 7 and recorded["way"] == 3
    folds = [sample_fold(train, test, 3, 2, 2, 7, f) for f in range(3)]
    assert recorded["folds"] == [f.record() for f in folds]
    # fold 1 independently: LinearSVC(C = 0.075) on the checkpoint encoder's SVM features
    encoder = PointTransformerClassifier(3, **SIZES).encoder
    encoder.load_state_dict(load_checkpoint(pretrain_run / "checkpoint.pt")["student"])
    fold = folds[1]
    fx = [extract_global_features(encoder, _fps(s.points, 128), "svm") for s in (fold.train, fold.test)]
    svc = sklearn_svm.LinearSVC(C=0.075, tol=1e-8, max_iter=100000).fit(fx[0].numpy(), fold.train.labels)
    assert accs[1] == pytest.approx(float((svc.predict(fx[1].numpy()) == fold.test.labels).mean()))


def test_fewshot_finetuning_trains_one_fresh_head_per_fold(
    runner, objects_root: Path, pretrain_run: Path, tmp_path: Path
) -> None:
    data, out = objects_root / "modelnet40_normal_resampled", tmp_path / "fsft"
    args = ["finetune", "--recipe", str(RECIPES / "recon_fewshot_synthetic.yaml"), "--data", str(data),
            "--out", str(out), "--weights", str(pretrain_run / "checkpoint.pt"),
            *_sets([*FEWSHOT, "fewshot.folds=2", "eval.recalibrate_bn=0"])]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    recorded = json.loads((out / "folds.json").read_text())["folds"]
    test = read_modelnet_resampled(data, "test")
    for f in range(2):
        model = PointTransformerClassifier(3, **SIZES, head="mlp3")  # a 3-way head: the fold's own classes
        state = load_checkpoint(out / f"fold{f}" / "checkpoint.pt")["model"]
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        rows = [test.ids.index(i) for i in recorded[f]["test_ids"]]
        labels = torch.tensor([recorded[f]["classes"].index(int(test.labels[r])) for r in rows])
        with torch.no_grad():
            pred = model.eval()(_fps([test.points[r] for r in rows], 128)).argmax(1)
        accuracy = float((pred == labels).float().mean())
        assert summary["folds"][str(f)]["overall_accuracy"] == pytest.approx(accuracy)
    refused = runner.invoke(app, [*args[:-2 * len(FEWSHOT) - 4], "--seeds", "2", *_sets(FEWSHOT)])
    assert refused.exit_code == 2 and "fewshot.folds" in refused.output


def _zeroshot(runner, objects_root: Path, out: Path, *extra: str):
    args = ["zeroshot", "--objects", "--recipe", str(RECIPES / "recon_zeroshot_synthetic.yaml"), "--data",
            str(objects_root / "modelnet40_normal_resampled"), "--out", str(out), "--set", "model.preset=ci",
            "--set", "data.num_points=128", *extra]
    return runner.invoke(app, args)


def test_zeroshot_is_the_cosine_of_the_projected_queries_with_the_summed_prompts(
    runner, objects_root: Path, pretrain_run: Path, tmp_path: Path
) -> None:
    classes = np.random.default_rng(3).normal(size=(8, 3, 24)).astype(np.float32)
    np.save(tmp_path / "classes.npy", classes)
    weights = pretrain_run / "checkpoint.pt"
    result = _zeroshot(runner, objects_root, tmp_path / "zs", "--weights", str(weights), "--text-embeddings",
                       str(tmp_path / "classes.npy"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    # independent: the checkpoint's encoder and text projection by hand on the recipe's sampled clouds
    payload = load_checkpoint(weights)
    encoder = ReConEncoder(**SIZES, drop_path_rate=0.0, stop_grad=False)
    encoder.load_state_dict(payload["student"])
    w, b = payload["model"]["text_proj.weight"], payload["model"]["text_proj.bias"]
    recipe = config.load_recipe(RECIPES / "recon_zeroshot_synthetic.yaml",
                                [f"data.path={objects_root / 'modelnet40_normal_resampled'}",
                                 "data.num_points=128"], kind=config.ObjectClassifyRecipe)
    test = read_modelnet_resampled(recipe.data.path, "test")
    dataset = ObjectPointDataset(test, 128, "fps_random", True, "none", fps_pool=154, seed=0)
    points = torch.from_numpy(np.stack([dataset[i]["points"] for i in range(len(dataset))]))
    with torch.no_grad():
        queries, _ = encoder.eval()(*encoder.group(points), mask=None)
        feats = queries[:, 2] @ w.T + b
    cos = F.normalize(feats, dim=1) @ F.normalize(torch.from_numpy(classes.sum(1)), dim=1).T
    expected = float((cos.argmax(1).numpy() == test.labels).mean())
    assert metrics["overall_accuracy"] == pytest.approx(expected)
    assert metrics["split"] == "test" and metrics["objects"] == len(test) and metrics["feature"] == "text"


def test_zeroshot_with_the_clip_text_tower_equals_its_prompt_features_as_a_file(
    runner, objects_root: Path, pretrain_run: Path, clip_dir: Path, tmp_path: Path
) -> None:
    from cmcr_core.runs.object_teachers import clip_prompt_features

    pytest.importorskip("transformers")
    weights = ["--weights", str(pretrain_run / "checkpoint.pt")]
    result = _zeroshot(runner, objects_root, tmp_path / "clip", *weights, "--clip", str(clip_dir))
    assert result.exit_code == 0, result.output
    names = read_modelnet_resampled(objects_root / "modelnet40_normal_resampled", "test").class_names
    np.save(tmp_path / "clip.npy", clip_prompt_features(clip_dir, names))
    result = _zeroshot(runner, objects_root, tmp_path / "file", *weights, "--text-embeddings",
                       str(tmp_path / "clip.npy"))
    assert result.exit_code == 0, result.output
    by_clip, by_file = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("clip", "file"))
    assert by_clip["overall_accuracy"] == by_file["overall_accuracy"]
    assert by_clip["per_class_accuracy"] == by_file["per_class_accuracy"]
    assert "60 prompts per class" in by_clip["class_embeddings"]


def test_zeroshot_refusals_are_clear(runner, objects_root: Path, pretrain_run: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.ones((8, 24), np.float32))
    weights = ["--weights", str(pretrain_run / "checkpoint.pt")]
    none = _zeroshot(runner, objects_root, tmp_path / "a", *weights)
    assert none.exit_code == 2 and "--text-embeddings FILE or --clip DIR" in none.output
    full = _zeroshot(runner, objects_root, tmp_path / "b", *weights, "--text-embeddings",
                     str(tmp_path / "c.npy"), "--set", "zeroshot.feature=full")
    assert full.exit_code == 2 and "32-d" in full.output and "zeroshot.feature=text" in full.output
    np.save(tmp_path / "rows.npy", np.ones((5, 24), np.float32))
    rows = _zeroshot(runner, objects_root, tmp_path / "c", *weights, "--text-embeddings",
                     str(tmp_path / "rows.npy"))
    assert rows.exit_code == 2 and "one row per class (8" in rows.output
    no_recipe = runner.invoke(app, ["zeroshot", "--objects", "--data", str(objects_root)])
    assert no_recipe.exit_code == 2 and "--recipe" in no_recipe.output
    lidar = runner.invoke(app, ["zeroshot", "--data", str(objects_root)])
    assert lidar.exit_code == 2 and "--weights" in lidar.output
    # without weights: a random initialisation, the chance baseline, runs and says so
    random = _zeroshot(runner, objects_root, tmp_path / "d", "--text-embeddings", str(tmp_path / "c.npy"))
    assert random.exit_code == 0, random.output
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["weights"] is None


# The reference's configuration files (qizekun/ReCon cfgs/full/*, cfgs/zeroshot/*), typed in by hand.
PUBLISHED = {
    "recon_finetune_modelnet40.yaml": {
        "data.num_points": 1024, "data.sampling": "fps_random", "data.normalize": True,
        "data.augmentation": "scale_translate", "data.batch_size": 32, "model.num_groups": 64,
        "model.group_size": 32, "model.drop_path_rate": 0.2, "optim.lr": 1e-5, "optim.weight_decay": 0.05,
        "optim.warmup_epochs": 10, "optim.grad_clip": 10.0, "optim.cls_lr_scale": 10.0, "train.epochs": 300,
        "eval.num_subsets": 10, "eval.vote_augmentation": "scale", "fewshot.way": 0,
    },
    "recon_fewshot_modelnet40.yaml": {
        "data.num_points": 1024, "data.normalize": True, "data.augmentation": "rotate_y",
        "data.batch_size": 32, "model.num_groups": 64, "model.group_size": 32, "model.drop_path_rate": 0.1,
        "optim.lr": 5e-4,
        "optim.warmup_epochs": 10, "optim.grad_clip": 10.0, "train.epochs": 150, "fewshot.way": 5,
        "fewshot.shot": 10, "fewshot.folds": 10, "fewshot.queries": 20,
    },
    "recon_finetune_scanobjectnn.yaml": {
        "data.num_points": 2048, "data.normalize": False, "data.augmentation": "rotate_y",
        "model.num_groups": 128, "model.group_size": 32, "optim.lr": 2e-5, "train.epochs": 300,
    },
    "recon_zeroshot_modelnet40.yaml": {
        "data.num_points": 1024, "data.normalize": True, "model.num_groups": 64, "model.group_size": 32,
        "zeroshot.ratio": 0.25, "zeroshot.feature": "full", "data.test_split": "test",
    },
    "recon_zeroshot_scanobjectnn.yaml": {
        "data.variant": "obj_bg", "data.num_points": 2048, "data.normalize": False, "model.num_groups": 64,
        "model.group_size": 64, "zeroshot.ratio": 0.1,
    },
    "recon_zeroshot_scanobjectnn_objonly.yaml": {
        "data.variant": "obj_only", "model.num_groups": 32, "model.group_size": 128, "zeroshot.ratio": 0.15,
    },
    "recon_zeroshot_scanobjectnn_hardest.yaml": {
        "data.variant": "hardest", "model.num_groups": 64, "model.group_size": 64, "zeroshot.ratio": 0.05,
    },
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_recipes_carry_the_reference_settings(name: str) -> None:
    recipe = config.to_dict(config.load_recipe(RECIPES / name, [], kind=config.ObjectClassifyRecipe))
    for key, value in PUBLISHED[name].items():
        section, field = key.split(".")
        assert recipe[section][field] == value, key
