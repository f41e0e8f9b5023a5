"""A CLIP teacher in the pipeline: relational pretraining from a recipe, rebuild, `cmcr zeroshot --clip`
(on the test device, CMCR_TEST_DEVICE)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.config import load_recipe
from cmcr_core.eval.zeroshot import (
    CLIP2SCENE_CLASS_NAMES,
    OPENSCENE_TEMPLATES,
    clip_text_embeddings,
    text_classifier,
)
from cmcr_core.runs.pretrain import load_pretraining_run, run_pretraining

pytest.importorskip("transformers")

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
PROJECTION_DIM = 24


@pytest.fixture(scope="module")
def clip_run(prepared_world: Path, clip_dir: Path, tmp_path_factory: pytest.TempPathFactory, device) -> Path:
    sets = [f"data.path={prepared_world}", f"teacher.weights={clip_dir}",
            f"student.out_channels={PROJECTION_DIM}", "data.crop_size=[64,112]", "data.min_pairs=64",
            "data.num_workers=0", "data.split=mini_train",
            "loss.num_matches=128", "student.planes=[8,8,8,8,8,8,8,8]", "student.init_dim=8",
            "train.max_steps=2", "train.checkpoint_every=0", "train.log_every=1", f"train.device={device}"]
    # The published recipe, shrunk: teacher arch hf_clip, method relational, point_nce off.
    recipe = load_recipe(RECIPES / "relational_nuscenes.yaml", sets)
    assert recipe.teacher.arch == "hf_clip" and recipe.method == "relational"
    out = tmp_path_factory.mktemp("clip_run") / "relational_clip"
    run = run_pretraining(recipe, out)
    assert all(np.isfinite(r["relational"]) for r in run.result.records)
    return out / "checkpoint.pt"


def test_checkpoint_names_the_clip_directory_and_rebuilds(clip_run: Path, clip_dir: Path) -> None:
    ckpt = torch.load(clip_run, weights_only=True)
    assert ckpt["teacher"]["arch"] == "hf_clip" and ckpt["teacher"]["source"] == str(clip_dir)
    assert not any(k.startswith("teacher.") for k in ckpt["model"])  # frozen weights stay out of checkpoints
    loaded = load_pretraining_run(clip_run)
    assert loaded.method.teacher.out_channels == PROJECTION_DIM
    for key, value in ckpt["student"].items():
        assert torch.equal(loaded.method.student.state_dict()[key], value)


def test_zeroshot_with_clip_text_embeddings(clip_run: Path, clip_dir: Path, prepared_world: Path,
                                            tmp_path: Path, device) -> None:
    out = tmp_path / "zs"
    result = CliRunner().invoke(app, ["zeroshot", "--weights", str(clip_run), "--data", str(prepared_world),
                                      "--out", str(out), "--split", "mini_val", "--clip", str(clip_dir),
                                      "--templates", "openscene", "--class-names", "clip2scene",
                                      "--device", str(device)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classifier"]["kind"] == "clip_text" and metrics["classifier"]["num_templates"] == 1
    assert 0.0 <= metrics["miou"] <= 1.0
    expected = text_classifier(clip_text_embeddings(clip_dir, CLIP2SCENE_CLASS_NAMES, OPENSCENE_TEMPLATES))
    np.testing.assert_allclose(np.load(out / "class_embeddings.npy"), expected.numpy(), atol=1e-6)
