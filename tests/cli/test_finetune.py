"""`cmcr finetune` / `cmcr probe` on the command line: a full run, clean errors, recipe resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmcr_cli.app import app

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FT = str(RECIPES / "finetune_synthetic.yaml")
TINY_SETS = ["--set", "model.planes=[8, 8, 8, 8, 8, 8, 8, 8]", "--set", "model.init_dim=8",
             "--set", "data.fraction_skips=[3, 2, 1, 1, 1]", "--set", "train.device=cpu"]
runner = CliRunner()


@pytest.fixture(scope="module")
def prepared_world(nosp_prepared_world: Path) -> Path:
    """The shared world prepared without superpixels (what the fine-tuning tests run on)."""
    return nosp_prepared_world


def invoke(*args: str):
    return runner.invoke(app, [*args], catch_exceptions=False)


def test_finetune_runs_and_writes_metrics(prepared_world: Path, tmp_path: Path) -> None:
    result = invoke("finetune", "--recipe", FT, "--data", str(prepared_world),
                    "--out", str(tmp_path / "run"), *TINY_SETS, "--set", "train.max_steps=1")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "driveable_surface" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) >= {"miou", "iou_per_class", "confusion_matrix"} and metrics["split"] == "mini_val"


def test_cartesian_checkpoint_is_refused_with_a_hint(prepared_world: Path, cartesian_checkpoint: Path,
                                                     tmp_path: Path) -> None:
    result = invoke("finetune", "--recipe", FT, "--data", str(prepared_world),
                    "--weights", str(cartesian_checkpoint), "--out", str(tmp_path / "run"), *TINY_SETS)
    assert result.exit_code == 2
    assert "cartesian" in result.output and "--allow-voxel-mismatch" in result.output


def test_probe_refuses_a_finetune_recipe_and_fraction_errors(prepared_world: Path, tmp_path: Path) -> None:
    result = invoke("probe", "--recipe", FT, "--data", str(prepared_world),
                    "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "finetune recipe" in result.output
    result = invoke("finetune", "--recipe", FT, "--data", str(prepared_world),
                    "--out", str(tmp_path / "b"), "--label-fraction", "0.01")
    # The 5-scene test world has 3 mini_train scenes: skip 8 keeps none (defect D21: an error, no fallback).
    assert result.exit_code == 2 and "empty" in result.output


def test_dry_run_resolves_label_fraction_and_data() -> None:
    probe = str(RECIPES / "probe_nuscenes.yaml")
    result = invoke("probe", "--recipe", probe, "--data", "/x", "--label-fraction", "0.25", "--dry-run")
    assert result.exit_code == 0
    for line in ("label_fraction: 0.25", "path: /x", "mode: probe"):
        assert line in result.output


def test_shipped_nuscenes_recipes_take_the_input_scale_from_the_checkpoint() -> None:
    """nuScenes downstream recipes leave data.intensity_scale unset (null: the checkpoint's scale), so a
    CMCR student pretrained on intensity / 255 is probed on intensity / 255 without a --set."""
    for name in ("finetune_nuscenes", "probe_nuscenes", "finetune_synthetic", "probe_synthetic"):
        result = invoke("finetune" if name.startswith("finetune") else "probe", "--recipe",
                        str(RECIPES / f"{name}.yaml"), "--data", "/x", "--dry-run")
        assert result.exit_code == 0, result.output
        assert "intensity_scale: null" in result.output, name
