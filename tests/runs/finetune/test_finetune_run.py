"""End-to-end fine-tuning and probing on the synthetic world: devkit-equal mIoU, frozen probing, resume;
training and evaluation on the test device (CMCR_TEST_DEVICE, through `tiny_recipe`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support.checkpoints import write_pretraining_checkpoint

from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.engine import load_checkpoint
from cmcr_core.methods.registry import build_segmentation_model
from cmcr_core.runs.finetune import learning_rates, run_finetune, run_probe, run_seeds


@pytest.fixture(scope="module")
def finetuned(tiny_recipe, cylindrical_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ft")
    run = run_finetune(tiny_recipe, out / "run", weights=cylindrical_checkpoint,
                       export_predictions=out / "predictions")
    return run, out / "predictions"


def test_miou_equals_devkit_lidarseg_eval(finetuned, synthetic_world: Path) -> None:
    from nuscenes.eval.lidarseg.evaluate import LidarSegEval
    from nuscenes.nuscenes import NuScenes

    run, predictions = finetuned
    nusc = NuScenes(version="v1.0-mini", dataroot=str(synthetic_world), verbose=False)
    devkit = LidarSegEval(nusc, str(predictions), "mini_val").evaluate()
    saved = json.loads((run.out_dir / "metrics.json").read_text())
    assert saved["miou"] == pytest.approx(devkit["miou"], abs=1e-6)
    for name, iou in saved["iou_per_class"].items():
        if iou is None:
            assert np.isnan(devkit["iou_per_class"][name])
        else:
            assert iou == pytest.approx(devkit["iou_per_class"][name], abs=1e-6)
    assert saved["num_scans"] == 4 and saved["split"] == "mini_val"


def test_miou_equals_naive_confusion_of_exported_predictions(finetuned, prepared_world: Path) -> None:
    run, predictions = finetuned
    cm = np.zeros((17, 17), dtype=np.int64)
    val = PreparedDataset(prepared_world, "mini_val")
    files = sorted((predictions / "lidarseg" / "mini_val").glob("*_lidarseg.bin"))
    assert len(files) == len(val) == 4
    for i in range(len(val)):
        item = val[i]
        file = predictions / "lidarseg" / "mini_val" / f"{item.lidar_token}_lidarseg.bin"
        pred = np.fromfile(file, np.uint8)
        assert len(pred) == len(item.points) and pred.min() >= 1 and pred.max() <= 16
        np.add.at(cm, (item.labels.astype(np.int64), pred.astype(np.int64)), 1)
    cm[0, :] = 0
    ious = []
    for c in range(1, 17):
        union = cm[c].sum() + cm[:, c].sum() - cm[c, c]
        if union:
            ious.append(cm[c, c] / union)
    assert run.metrics.miou == pytest.approx(float(np.mean(ious)), abs=1e-12)
    np.testing.assert_array_equal(run.metrics.confusion, cm)


def test_finetuning_moves_the_trunk(finetuned, cylindrical_checkpoint: Path) -> None:
    run, _ = finetuned
    pre = load_checkpoint(cylindrical_checkpoint)["student"]
    post = load_checkpoint(run.out_dir / "checkpoint.pt")
    assert not torch.equal(pre["conv0p1s1.kernel"], post["student"]["conv0p1s1.kernel"])
    assert not torch.equal(pre["bn0.bn.running_mean"], post["student"]["bn0.bn.running_mean"])
    assert run.init["pretrained"]["method"] == "ppkt" and run.init["lr_head"] == 2.0


def test_resume_gives_the_uninterrupted_result(finetuned, tiny_recipe, tmp_path: Path, device,
                                              tolerance) -> None:
    run, _ = finetuned
    first = run_finetune(tiny_recipe, tmp_path / "run", weights=run.init["weights"], stop_at=1)
    assert first.result.position.step == 1
    resumed = run_finetune(tiny_recipe, tmp_path / "run", resume=True)
    assert resumed.result.position.step == run.result.position.step
    tolerance.same(device, resumed.metrics.confusion, run.metrics.confusion)
    with pytest.raises(FileExistsError):
        run_finetune(tiny_recipe, tmp_path / "run")


def test_probe_changes_only_the_head(tiny_recipe, cylindrical_checkpoint: Path, tmp_path: Path, device,
                                    tolerance) -> None:
    recipe = replace(tiny_recipe, data=replace(tiny_recipe.data, label_fraction=1.0),
                     train=replace(tiny_recipe.train, mode="probe", max_steps=3),
                     optim=replace(tiny_recipe.optim, lr=0.05, lr_head=None))
    runs, summary = run_seeds(recipe, tmp_path, seeds=2, weights=cylindrical_checkpoint)
    pre = load_checkpoint(cylindrical_checkpoint)["student"]
    for run in runs:
        post = load_checkpoint(run.out_dir / "checkpoint.pt")["student"]
        fresh_head = build_segmentation_model(recipe, 17, run.metrics.extra["seed"]).state_dict()
        for key, value in post.items():
            if key.startswith("final."):
                assert not torch.equal(value, fresh_head[key]), key
            else:  # weights, BN running statistics and num_batches_tracked, bit for bit
                assert torch.equal(value, pre[key]), key
        assert run.subset["scans"] == 6 and run.init["lr"] == 0.05
    assert summary["miou"]["mean"] == pytest.approx(np.mean([r.metrics.miou for r in runs]))
    assert summary["miou"]["std"] == pytest.approx(np.std([r.metrics.miou for r in runs], ddof=1))
    assert json.loads((tmp_path / "metrics.json").read_text())["seeds"] == [0, 1]
    # --resume over seeds: finished seeds are re-evaluated unchanged, a new seed starts.
    more, _ = run_seeds(recipe, tmp_path, seeds=3, weights=cylindrical_checkpoint, resume=True)
    assert [r.result.position.step for r in more] == [3, 3, 3] and more[2].result.records
    for before, after in zip(runs, more, strict=False):
        assert not after.result.records
        tolerance.same(device, after.metrics.confusion, before.metrics.confusion)


def test_protocol_guards_and_scratch_learning_rates(tiny_recipe, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finetune recipe"):
        run_probe(tiny_recipe, tmp_path / "x")
    assert learning_rates(tiny_recipe, pretrained=False) == (0.05, 0.05)  # SLidR issue #11
    assert learning_rates(tiny_recipe, pretrained=True) == (0.02, 2.0)


def test_input_scaling_follows_the_checkpoint(tiny_recipe, tmp_path: Path) -> None:
    """Unset data.intensity_scale = the pretraining scale (1/255 here); a set value wins; no weights = 1."""
    from cmcr_core.runs.finetune import resolve_input_scale

    scale = 1.0 / 255.0
    weights = write_pretraining_checkpoint(tmp_path / "pre", cylindrical=True, intensity_scale=scale)
    probe = replace(tiny_recipe, train=replace(tiny_recipe.train, mode="probe", max_steps=1))
    assert probe.data.intensity_scale is None
    assert resolve_input_scale(probe, weights, tmp_path, False).data.intensity_scale == scale
    assert resolve_input_scale(probe, None, tmp_path, False).data.intensity_scale == 1.0
    explicit = replace(probe, data=replace(probe.data, intensity_scale=0.5))
    assert resolve_input_scale(explicit, weights, tmp_path, False).data.intensity_scale == 0.5

    run = run_probe(probe, tmp_path / "run", weights=weights)
    saved = yaml.safe_load((run.out_dir / "recipe.yaml").read_text())
    assert saved["data"]["intensity_scale"] == scale
    # A resumed run without --weights finds the checkpoint through init.json (and its recipe matches).
    assert resolve_input_scale(probe, None, run.out_dir, True).data.intensity_scale == scale


def test_finetuning_can_re_estimate_batch_norm_statistics_and_a_probe_refuses_it(tiny_recipe, tmp_path: Path,
                                                                                  device, tolerance):
    """train.recalibrate_bn_batches: the final checkpoint's statistics are plain averages over that many
    labelled batches (counter = batches); the weights equal those of the plain run."""
    plain = run_finetune(tiny_recipe, tmp_path / "plain")
    again = replace(tiny_recipe, train=replace(tiny_recipe.train, recalibrate_bn_batches=3))
    run = run_finetune(again, tmp_path / "recal")
    a = load_checkpoint(plain.out_dir / "checkpoint.pt")["student"]
    b = load_checkpoint(run.out_dir / "checkpoint.pt")["student"]
    assert b["bn0.bn.num_batches_tracked"].item() == 3 != a["bn0.bn.num_batches_tracked"].item()
    for k in a:
        if "running" not in k and "num_batches" not in k:
            tolerance.same(device, b[k], a[k], msg=k)
    assert any(not torch.equal(a[k], b[k]) for k in a if "running_var" in k)
    probe = replace(again, train=replace(again.train, mode="probe"))
    with pytest.raises(ValueError, match="recalibrate_bn_batches"):
        run_probe(probe, tmp_path / "probe")
