"""`cmcr render`: pictures of a prepared scan, of a fine-tuned network's prediction (the same prediction
`cmcr evaluate` exports) and of a pretrained feature space; the colour rules on their own."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.checkpoints import TINY_UNET
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.config import FinetuneRecipe
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.eval.scan_pictures import CORRECT_GREY, IGNORE_GREY, WRONG_RED, error_colours, feature_colours
from cmcr_core.runs.finetune import run_finetune
from cmcr_core.runs.render import render_scan

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def finetuned(nosp_prepared_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = FinetuneRecipe()
    recipe = replace(base, name="tiny", model=replace(base.model, **TINY_UNET), data=replace(
        base.data, path=str(nosp_prepared_world), train_split="mini_train", val_split="mini_val",
        fraction_skips=(3, 2, 1, 1, 1), batch_size=2, eval_batch_size=2, num_workers=0),
        train=replace(base.train, epochs=1, checkpoint_every=0, device="cpu"))
    out = tmp_path_factory.mktemp("render") / "run"
    run_finetune(recipe, out)
    return out


def test_a_scan_with_its_labels(nosp_prepared_world: Path, tmp_path: Path) -> None:
    token = PreparedDataset(nosp_prepared_world, "mini_val").tokens[1]
    args = ["render", "--data", str(nosp_prepared_world), "--split", "mini_val", "--sample", token,
            "--out", str(tmp_path / "scan.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "scan.png").read_bytes()[:8] == PNG and token in result.output
    width, height = Image.open(tmp_path / "scan.png").size
    assert width > 1000 and height > 800  # a bird's-eye view over two rows of three cameras
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_the_prediction_is_the_one_evaluate_exports(finetuned: Path, nosp_prepared_world: Path,
                                                     tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--weights", str(finetuned), "--export-predictions",
                                 str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    scans = PreparedDataset(nosp_prepared_world, "mini_val")
    picture = render_scan(nosp_prepared_world, tmp_path / "p.png", sample="2", weights=finetuned)
    assert picture.what == "prediction" and picture.token == scans.tokens[2]
    lidar = scans[2].lidar_token
    exported = np.fromfile(tmp_path / "pred" / "lidarseg" / "mini_val" / f"{lidar}_lidarseg.bin", np.uint8)
    np.testing.assert_array_equal(picture.predicted, exported)
    truth = scans[2].labels
    assert picture.accuracy == pytest.approx(float((exported == truth)[truth != 0].mean()))


def test_a_pretrained_feature_space(runs: dict[str, Path], nosp_prepared_world: Path, tmp_path: Path) -> None:
    picture = render_scan(nosp_prepared_world, tmp_path / "f.png", split="mini_val",
                          weights=runs["relational"])
    assert picture.what == "features" and picture.predicted is None
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG


def test_a_sample_that_is_not_there_is_named(nosp_prepared_world: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", "--data", str(nosp_prepared_world), "--split", "mini_val",
                                 "--sample", "99", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "--sample '99'" in result.output and not (tmp_path / "x.png").exists()


def test_error_and_feature_colours() -> None:
    colours = error_colours(np.array([0, 3, 3, 5]), np.array([2, 3, 4, 5]))
    np.testing.assert_array_equal(colours, [IGNORE_GREY, CORRECT_GREY, WRONG_RED, CORRECT_GREY])
    t = np.linspace(-1.0, 1.0, 201)
    rng = np.random.default_rng(0)
    features = np.column_stack([5 * t, 0.01 * rng.standard_normal((201, 7))])
    rgb = feature_colours(features)
    assert rgb.shape == (201, 3) and rgb.min() >= 0 and rgb.max() <= 1
    first = rgb[:, 0] if np.corrcoef(rgb[:, 0], t)[0, 1] > 0 else 1 - rgb[:, 0]  # a component's sign is free
    assert np.all(np.diff(first[5:-5]) >= 0) and first[2] == 0 and first[-3] == 1  # stretched 1 %..99 %
