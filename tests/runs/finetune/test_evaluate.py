"""`cmcr evaluate`: a fine-tuned run scored on its own gives fine-tuning's numbers; test-time augmentation
is the average over the eight symmetries of the square; unlabelled splits are predicted and exported in
the benchmarks' submission layouts (checked by nuscenes-devkit's own submission validator)."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.data.prepare_nuscenes import PrepareOptions, prepare_nuscenes
from cmcr_core.data.segmentation_dataset import SegmentationDataset, collate_segmentation
from cmcr_core.data.semantickitti import LEARNING_MAP_INV, prepare_semantickitti
from cmcr_core.data.semantickitti.writer import write_semantickitti_world
from cmcr_core.data.synthetic import LidarModel
from cmcr_core.engine import load_checkpoint
from cmcr_core.eval.segmentation import tta_views
from cmcr_core.runs.evaluate import find_weights, run_evaluate
from cmcr_core.runs.finetune import open_split, run_finetune, segmentation_settings
from cmcr_core.sparse import SparseTensor

from .conftest import TINY

runner = CliRunner()


@pytest.fixture(scope="module")
def finetuned(tiny_recipe, tmp_path_factory: pytest.TempPathFactory):
    return run_finetune(tiny_recipe, tmp_path_factory.mktemp("evaluate") / "run")


def test_evaluate_gives_what_fine_tuning_scored(finetuned, tmp_path: Path) -> None:
    assert find_weights(finetuned.out_dir) == finetuned.out_dir / "last.pt"  # no best.pt without validation
    args = ["evaluate", "--weights", str(finetuned.out_dir), "--out", str(tmp_path / "e")]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    np.testing.assert_array_equal(saved["confusion_matrix"], finetuned.metrics.confusion)
    assert saved["miou"] == finetuned.metrics.miou and saved["labelled_scans"] == 4
    assert saved["weights"] == str(finetuned.out_dir / "last.pt")
    assert f"{100 * saved['miou']:.2f}" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_the_views_are_the_symmetries_of_the_square() -> None:
    views = tta_views()
    assert len(views) == 8 and np.array_equal(views[0], np.eye(3))
    keys = {v.astype(int).tobytes() for v in views}
    assert len(keys) == 8
    for a, b in itertools.product(views, views):
        assert (a @ b).astype(int).tobytes() in keys  # a group: closed under composition
    for v in views:
        np.testing.assert_array_equal(v @ v.T, np.eye(3))
        assert v[2, 2] == 1 and not v[2, :2].any()  # z untouched


@dataclass
class _Moved:
    points: np.ndarray
    labels: np.ndarray
    token: str
    lidar_token: str


def test_tta_is_the_average_of_the_logits_over_the_eight_views(finetuned) -> None:
    payload = load_checkpoint(finetuned.out_dir / "last.pt")
    from cmcr_core import config
    from cmcr_core.config import FinetuneRecipe
    from cmcr_core.methods.registry import build_segmentation_model

    recipe = config.resolve(FinetuneRecipe, payload["recipe"], "last.pt")
    source, names = open_split(recipe, recipe.data.val_split)
    model = build_segmentation_model(recipe, len(names), 0).eval()
    model.load_state_dict({k.removeprefix("model."): v for k, v in payload["model"].items()})
    quarter = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float64)  # 90 degrees about z
    flip = np.diag([1.0, -1.0, 1.0])
    matrices = [np.linalg.matrix_power(quarter, k) @ f for k in range(4) for f in (np.eye(3), flip)]
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    with torch.no_grad():
        for scan in source:
            total = None
            for m in matrices:
                moved = scan.points.copy()
                moved[:, :3] = (scan.points[:, :3].astype(np.float64) @ m.T).astype(np.float32)
                one = collate_segmentation([SegmentationDataset(
                    [_Moved(moved, scan.labels, scan.token, scan.lidar_token)], segmentation_settings(recipe),
                    train=False)[0]])
                logits = model(SparseTensor(one.feats, one.coords)).features[one.point_to_voxel]
                total = logits if total is None else total + logits
            total[:, 0] = -np.inf
            np.add.at(confusion, (scan.labels.astype(np.int64), (total / 8).argmax(1).numpy()), 1)
    confusion[0], confusion[:, 0] = 0, 0
    tta = run_evaluate(finetuned.out_dir, tta=True, device="cpu")
    np.testing.assert_array_equal(tta.metrics.confusion, confusion)
    assert tta.metrics.extra["tta_views"] == 8


def test_an_unlabelled_nuscenes_split_is_exported_as_a_valid_submission(finetuned, world_copy: Path,
                                                                       synthetic_world: Path,
                                                                       tmp_path: Path) -> None:
    from nuscenes.eval.lidarseg.validate_submission import validate_submission
    from nuscenes.nuscenes import NuScenes

    (world_copy / "v1.0-mini" / "lidarseg.json").unlink()  # a release without labels, as v1.0-test
    shutil.rmtree(world_copy / "lidarseg")
    prepare_nuscenes(world_copy, "v1.0-mini", tmp_path / "unlabelled", PrepareOptions(superpixels="none"))
    export = tmp_path / "submission"
    result = runner.invoke(app, ["evaluate", "--weights", str(finetuned.out_dir), "--data",
                                 str(tmp_path / "unlabelled"), "--split", "mini_val",
                                 "--export-predictions", str(export)])
    assert result.exit_code == 0, result.output
    assert "no labels, nothing to score" in " ".join(result.output.split())
    # the devkit's validator: the folder layout, submission.json, and one file of the right length per scan
    nusc = NuScenes(version="v1.0-mini", dataroot=str(synthetic_world), verbose=False)
    validate_submission(nusc, str(export), "mini_val")
    assert len(list((export / "lidarseg" / "mini_val").glob("*_lidarseg.bin"))) == 4


SMALL_LIDAR = LidarModel(elevations_deg=tuple(np.linspace(-24.9, 2.0, 8).tolist()), azimuth_steps=128)


def test_semantickitti_test_sequences_are_exported_as_label_files(tiny_recipe, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_semantickitti_world(raw, ("00", "08", "11"), scans_per_sequence=2, seed=3, lidar=SMALL_LIDAR)
    assert not (raw / "sequences" / "11" / "labels").exists()  # the test split has no labels
    prepare_semantickitti(raw, tmp_path / "prepared")
    recipe = replace(tiny_recipe, data=replace(
        tiny_recipe.data, dataset="semantickitti", path=str(tmp_path / "prepared"), train_split="train",
        val_split="val", intensity_offset=1.0, fraction_skips=(1, 1, 1, 1, 1)),
        model=replace(tiny_recipe.model, **TINY), train=replace(tiny_recipe.train, max_steps=1))
    run_finetune(recipe, tmp_path / "run")
    export = tmp_path / "pred"
    weights = tmp_path / "run" / "last.pt"
    result = runner.invoke(app, ["evaluate", "--weights", str(weights), "--split", "test",
                                 "--export-predictions", str(export), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert (saved["labelled_scans"], saved["num_scans"], saved["miou"]) == (0, 2, None)
    allowed = set(LEARNING_MAP_INV[1:])
    for scan in sorted((raw / "sequences" / "11" / "velodyne").glob("*.bin")):
        label = export / "sequences" / "11" / "predictions" / f"{scan.stem}.label"
        values = np.fromfile(label, dtype=np.uint32)
        assert len(values) == scan.stat().st_size // 16  # one uint32 per float32 (x, y, z, r) point
        assert set(np.unique(values).tolist()) <= allowed


def test_weights_that_are_not_a_fine_tuned_run_are_refused(tmp_path: Path, cylindrical_checkpoint: Path):
    (tmp_path / "seeds" / "seed0").mkdir(parents=True)
    for weights, expected in ((tmp_path / "seeds", "several seeds"), (tmp_path / "nothing", "no such file"),
                              (cylindrical_checkpoint, "not written by `cmcr finetune`")):
        result = runner.invoke(app, ["evaluate", "--weights", str(weights)])
        assert result.exit_code == 2 and expected in " ".join(result.output.split()), result.output
