"""`cmcr prepare objects --teacher hf_vit:DIR --text hf_clip:DIR` on the synthetic ShapeNet-55 copy: targets
checked against the teachers run by hand, written twice to the same bytes, then a short ReCon pretraining
from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support import RECIPES
from support.hf import vit_dir  # noqa: F401

from cmcr_cli.app import app
from cmcr_core.data.objects import load_teacher_targets, read_shapenet55, read_shapenet_image
from cmcr_core.models.hf_global_teachers import load_global_teacher
from cmcr_core.runs.object_teachers import clip_prompt_features

pytest.importorskip("transformers")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def hf_targets(objects_root: Path, vit_dir: Path, clip_dir: Path, tmp_path_factory,  # noqa: F811
               runner) -> Path:
    out = tmp_path_factory.mktemp("hf_targets") / "targets.npz"
    args = ["prepare", "objects", "--dataroot", str(objects_root / "ShapeNet55-34"),
            "--teacher", f"hf_vit:{vit_dir}", "--text", f"hf_clip:{clip_dir}", "--out", str(out),
            "--image-size", "32", "--views", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_targets_are_the_vit_pre_logits_and_the_clip_prompt_features(
    hf_targets: Path, objects_root: Path, vit_dir: Path, clip_dir: Path  # noqa: F811
) -> None:
    root = objects_root / "ShapeNet55-34"
    shapenet = read_shapenet55(root, "whole")
    targets = load_teacher_targets(hf_targets)
    assert targets.ids == shapenet.ids
    assert targets.img.shape == (48, 2, 32) and targets.text.shape == (48, 60, 24)
    # image view 0: the 32 px render as BGR in [0, 1] (no resize) through the ViT teacher
    teacher = load_global_teacher("hf_vit", vit_dir)
    for row in (0, 13):
        image = torch.from_numpy(read_shapenet_image(root, shapenet.ids[row]).copy()).float() / 255
        expected = teacher(image.permute(2, 0, 1).flip(0)[None])[0].numpy()
        np.testing.assert_allclose(targets.img[row, 0], expected, atol=1e-5)
    assert np.abs(targets.img).max() < 1.0
    # text: the 60 prompt features of the object's class description, in the prompts' order
    class_text = clip_prompt_features(clip_dir, shapenet.class_names)
    np.testing.assert_allclose(targets.text, class_text[shapenet.labels], atol=1e-5)
    np.testing.assert_allclose(np.load(hf_targets.with_suffix(".class_text.npy")), class_text, atol=1e-6)


def test_preparing_twice_gives_the_same_targets(
    hf_targets: Path, objects_root: Path, vit_dir: Path, clip_dir: Path, tmp_path: Path, runner  # noqa: F811
) -> None:
    again = tmp_path / "again.npz"
    args = ["prepare", "objects", "--dataroot", str(objects_root / "ShapeNet55-34"),
            "--teacher", f"hf_vit:{vit_dir}", "--text", f"hf_clip:{clip_dir}", "--out", str(again),
            "--image-size", "32", "--views", "2"]
    assert runner.invoke(app, args).exit_code == 0
    first, second = load_teacher_targets(hf_targets), load_teacher_targets(again)
    np.testing.assert_array_equal(first.img, second.img)
    np.testing.assert_array_equal(first.text, second.text)


def test_text_sources_are_exclusive_and_specs_checked(objects_root: Path, clip_dir: Path, tmp_path: Path,
                                                      runner) -> None:
    base = ["prepare", "objects", "--dataroot", str(objects_root / "ShapeNet55-34"), "--out",
            str(tmp_path / "t.npz"), "--image-size", "32"]
    np.save(tmp_path / "text.npy", np.zeros((8, 4), np.float32))
    both = runner.invoke(app, [*base, "--text", f"hf_clip:{clip_dir}", "--text-embeddings",
                               str(tmp_path / "text.npy")])
    assert both.exit_code == 2 and "give one" in both.output
    wrong = runner.invoke(app, [*base, "--text", str(clip_dir)])
    assert wrong.exit_code == 2 and "hf_clip:DIR" in wrong.output
    bad = runner.invoke(app, [*base, "--teacher", "hf_vit:" + str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "--teacher" in bad.output and "config.json" in bad.output


def test_a_short_pretraining_learns_from_the_transformers_targets(
    hf_targets: Path, objects_root: Path, tmp_path: Path, runner
) -> None:
    out = tmp_path / "pre"
    sets = [f"data.targets={hf_targets}", "model.preset=ci", "model.img_dim=32", "model.text_dim=24",
            "data.num_points=128", "data.batch_size=8", "train.epochs=5", "train.log_every=1",
            "optim.lr=2e-3"]
    args = ["pretrain", "--recipe", str(RECIPES / "recon_synthetic.yaml"), "--data",
            str(objects_root / "ShapeNet55-34"), "--out", str(out)]
    result = runner.invoke(app, [*args, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 20  # the 32 train objects, batch 8: 4 steps per epoch
    for term in ("rec", "img", "text"):
        values = [r[term] for r in records]
        assert all(math.isfinite(v) for v in values)
        assert sum(values[-4:]) < sum(values[:4]), term
