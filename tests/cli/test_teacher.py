"""`cmcr teacher train/info/eval`, and the teacher file accepted by `cmcr pretrain` and every decoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from support.teacher import TEACHER_RECIPE as RECIPE
from support.teacher import TINY_TEACHER as TINY
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.config import TeacherConfig
from cmcr_core.data.prepare_nuscenes import PrepareOptions, prepare_nuscenes
from cmcr_core.engine import load_checkpoint
from cmcr_core.methods.registry import teacher_from_config
from cmcr_core.models.resnet import build_resnet
from cmcr_core.models.semantic_teacher import SEMANTIC_TEACHER_ARCH

runner = CliRunner()
ROOT = RECIPE.parents[1]


def _sets(*assignments: str) -> list[str]:
    return [part for item in assignments for part in ("--set", item)]


def test_train_dry_run_prints_the_resolved_recipe(tmp_path: Path):
    args = ["teacher", "train", "--recipe", str(RECIPE), "--dataroot", str(tmp_path / "w a"),
            "--eval-dataroot", str(tmp_path / "b"), "--dry-run", *_sets("optim.lr=0.02")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["data"]["world"] == str(tmp_path / "w a")
    assert resolved["data"]["eval_worlds"] == [str(tmp_path / "b")]
    assert resolved["optim"]["lr"] == 0.02 and resolved["model"]["widths"] == [32, 64, 96, 128]


def test_train_errors_are_one_clear_line(tmp_path: Path):
    result = runner.invoke(app, ["teacher", "train", "--recipe", str(RECIPE), "--dataroot", str(tmp_path),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "cmcr prepare synthetic" in result.output
    result = runner.invoke(app, ["teacher", "train", "--recipe", str(RECIPE), *_sets("model.width=3")])
    assert result.exit_code == 2 and "model.widths" in result.output
    not_teacher = tmp_path / "plain.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, not_teacher)
    result = runner.invoke(app, ["teacher", "info", "--weights", str(not_teacher)])
    assert result.exit_code == 2 and "not a cmcr-teacher file" in result.output


def test_cli_train_then_info_and_eval(synthetic_world: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = ["teacher", "train", "--recipe", str(RECIPE), "--dataroot", str(synthetic_world), "--out",
            str(out), *_sets(*TINY, "train.max_steps=3", "optim.warmup_steps=0")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "teacher.pt").is_file() and (out / "metrics.json").is_file()
    assert "held-out scenes: pixel accuracy" in result.output
    meta = torch.load(out / "teacher.pt", weights_only=True)["meta"]
    holdout = meta["metrics"]["holdout"]
    assert holdout["scenes"] == ["scene-0553"]

    info = runner.invoke(app, ["teacher", "info", "--weights", str(out / "teacher.pt")])
    assert info.exit_code == 0, info.output
    text = " ".join(info.output.split())  # rich wraps long lines
    assert SEMANTIC_TEACHER_ARCH in text and "scene-0061" in text
    assert f"{sum(meta['prototype_present'])}/16 classes" in text
    assert f"pixel accuracy {holdout['pixel_accuracy']:.3f}, mIoU {holdout['miou']:.3f}" in text

    scored = runner.invoke(app, ["teacher", "eval", "--weights", str(out / "teacher.pt"), "--dataroot",
                                 str(synthetic_world), "--scene", "scene-0553", "--out",
                                 str(tmp_path / "scores.json")])
    assert scored.exit_code == 0, scored.output
    text = " ".join(scored.output.split())
    assert "the training world" in text and f"pixel accuracy {holdout['pixel_accuracy']:.3f}" in text
    assert json.loads((tmp_path / "scores.json").read_text())["miou"] == pytest.approx(holdout["miou"])


@pytest.fixture(scope="module")
def prepared(synthetic_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared_for_teacher")
    report = prepare_nuscenes(synthetic_world, "v1.0-mini", out, PrepareOptions(superpixels="none"))
    assert not report.failures
    return out


def test_pretrain_runs_with_the_semantic_teacher(trained, prepared: Path, tmp_path: Path):
    # The recipe names a ResNet-18 teacher; the cmcr-teacher file carries its own arch and wins.
    out = tmp_path / "ppkt"
    args = ["pretrain", "--recipe", str(ROOT / "recipes" / "ppkt_synthetic.yaml"), "--data", str(prepared),
            "--out", str(out), *_sets(f"teacher.weights={trained.teacher}", "train.max_steps=2",
                                      "train.checkpoint_every=0", "data.num_workers=0")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["step"] == 2
    assert checkpoint["teacher"]["arch"] == SEMANTIC_TEACHER_ARCH
    assert checkpoint["teacher"]["source"] == str(trained.teacher)
    assert not any(key.startswith("teacher.") for key in checkpoint["model"])  # frozen: not checkpointed


def test_every_decoder_accepts_the_semantic_teacher(trained, tmp_path: Path):
    plain = teacher_from_config(TeacherConfig(arch="resnet50", weights=str(trained.teacher)))
    dilated = teacher_from_config(TeacherConfig(arch="resnet18", weights=str(trained.teacher),
                                                 decoder="dilation"))
    assert plain.output_stride == 8 and dilated.output_stride == 4  # SLidR's decoder wants stride 4
    images = torch.rand(1, 3, 64, 96)
    assert torch.allclose(dilated(images)[:, :, ::2, ::2], plain(images), rtol=1e-4, atol=1e-5)
    # Third-party ResNet files still have to match the recipe's arch.
    resnet_file = tmp_path / "resnet18.pth"
    torch.save(build_resnet("resnet18").state_dict(), resnet_file)
    with pytest.raises(ValueError, match=r"holds resnet18 weights, but teacher.arch is 'resnet34'"):
        teacher_from_config(TeacherConfig(arch="resnet34", weights=str(resnet_file)))
