"""SemanticKITTI: synthetic writer, label files, learning map, prepare/resume, and a fine-tuning chain."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cmcr_core.data.semantickitti import (
    KITTI_CLASS_NAMES,
    LEARNING_MAP,
    KittiDataError,
    PreparedKitti,
    label_path,
    prepare_semantickitti,
    read_labels,
    read_scan,
    to_train_ids,
)
from cmcr_core.data.semantickitti.writer import FINE_TO_KITTI_RAW, write_semantickitti_world
from cmcr_core.data.synthetic import LidarModel
from cmcr_core.runs.finetune import run_finetune

from .conftest import TINY

SMALL_LIDAR = LidarModel(elevations_deg=tuple(np.linspace(-24.9, 2.0, 16).tolist()), azimuth_steps=256)


@pytest.fixture(scope="module")
def kitti_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    write_semantickitti_world(root, ("00", "01", "08"), scans_per_sequence=3, seed=4, lidar=SMALL_LIDAR)
    return root


@pytest.fixture(scope="module")
def kitti_prepared(kitti_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kitti_prepared")
    prepare_semantickitti(kitti_world, out)
    return out


def test_layout_frames_and_labels(kitti_world: Path) -> None:
    seq = kitti_world / "sequences" / "00"
    scans = sorted((seq / "velodyne").glob("*.bin"))
    assert [s.name for s in scans] == ["000000.bin", "000001.bin", "000002.bin"]
    raw_values = set(FINE_TO_KITTI_RAW.values())
    for scan in scans:
        points = read_scan(scan)
        raw = np.fromfile(label_path(scan), dtype=np.uint32)
        assert len(raw) == len(points) > 100
        assert set(np.unique(raw).tolist()) <= raw_values
        assert 0.0 <= points[:, 3].min() and points[:, 3].max() <= 1.0  # reflectance
        road = points[raw == 40]
        # Velodyne frame: z up, 1.73 m above the flat ground (range noise 1.5 cm).
        assert abs(float(np.median(road[:, 2])) + 1.73) < 0.05
    calib = dict(line.split(":", 1) for line in (seq / "calib.txt").read_text().splitlines())
    assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"} and all(len(v.split()) == 12 for v in calib.values())
    poses = np.loadtxt(seq / "poses.txt").reshape(-1, 3, 4)
    assert len(poses) == 3
    np.testing.assert_allclose(poses[0], np.eye(4)[:3], atol=1e-9)
    assert poses[2, 2, 3] > poses[1, 2, 3] > 0.2  # camera 0 looks along +z: the car drives forward


def test_label_files_mask_instances_and_map_to_train_ids(tmp_path: Path) -> None:
    raw = np.array([10, 252, 99, 60, 259, 81, 1, 1000, 44], dtype=np.uint32)
    path = tmp_path / "labels" / "000000.label"
    path.parent.mkdir()
    (raw | (np.arange(9, dtype=np.uint32) + 3) << 16).tofile(path)  # instance ids in the upper 16 bits
    semantic = read_labels(path, 9)
    np.testing.assert_array_equal(semantic, raw)
    np.testing.assert_array_equal(to_train_ids(semantic), [1, 1, 0, 9, 5, 19, 0, 0, 10])
    assert KITTI_CLASS_NAMES[19] == "traffic-sign" and len(KITTI_CLASS_NAMES) == 20
    assert all(KITTI_CLASS_NAMES[LEARNING_MAP[r]] for r in LEARNING_MAP)
    with pytest.raises(KittiDataError, match="9 labels for 10 points"):
        read_labels(path, 10)


def test_label_path_replaces_directory_and_extension_only() -> None:
    """Defect D22: 'bin' elsewhere in the path must survive."""
    scan = Path("/data/bin/velodyne_bin/sequences/00/velodyne/000001.bin")
    assert label_path(scan) == Path("/data/bin/velodyne_bin/sequences/00/labels/000001.label")
    with pytest.raises(KittiDataError):
        label_path(Path("/data/sequences/00/points/000001.bin"))


def test_prepare_reads_back_and_resumes(kitti_world: Path, kitti_prepared: Path) -> None:
    val = PreparedKitti(kitti_prepared, "val")
    assert val.tokens == ["08/000000", "08/000001", "08/000002"]
    assert PreparedKitti(kitti_prepared, "train").tokens[0] == "00/000000" and len(PreparedKitti(
        kitti_prepared, "train")) == 6
    item = val[1]
    scan = kitti_world / "sequences" / "08" / "velodyne" / "000001.bin"
    np.testing.assert_array_equal(item.points, read_scan(scan))
    np.testing.assert_array_equal(item.labels, to_train_ids(read_labels(label_path(scan), len(item.points))))
    report = prepare_semantickitti(kitti_world, kitti_prepared)
    assert report.written == () and report.kept == ("00", "01", "08")


def test_missing_label_file_is_named(kitti_world: Path, tmp_path: Path) -> None:
    import shutil

    root = Path(shutil.copytree(kitti_world, tmp_path / "copy"))
    (root / "sequences" / "01" / "labels" / "000002.label").unlink()
    with pytest.raises(KittiDataError, match="01/labels/000002.label"):
        prepare_semantickitti(root, tmp_path / "out")


def test_finetune_chain_and_exported_predictions(tiny_recipe, kitti_prepared: Path, tmp_path: Path) -> None:
    recipe = replace(tiny_recipe, data=replace(
        tiny_recipe.data, dataset="semantickitti", path=str(kitti_prepared), train_split="train",
        val_split="val", intensity_offset=1.0, fraction_skips=(4, 2, 1, 1, 1)), model=replace(
        tiny_recipe.model, **TINY), train=replace(tiny_recipe.train, max_steps=1))
    run = run_finetune(recipe, tmp_path / "run", export_predictions=tmp_path / "pred")
    assert run.subset["scans"] == 2  # sorted 00/000000..01/000002, [::4]
    val = PreparedKitti(kitti_prepared, "val")
    cm = np.zeros((20, 20), dtype=np.int64)
    for i in range(len(val)):
        seq, scan = val.tokens[i].split("/")
        raw = np.fromfile(tmp_path / "pred" / "sequences" / seq / "predictions" / f"{scan}.label", np.uint32)
        pred = to_train_ids(raw.astype(np.uint16)).astype(np.int64)
        assert pred.min() >= 1
        np.add.at(cm, (val[i].labels.astype(np.int64), pred), 1)
    cm[0] = 0
    np.testing.assert_array_equal(run.metrics.confusion, cm)
    # Absent = neither in the ground truth nor predicted (the world has no poles or trunks).
    empty = {KITTI_CLASS_NAMES[c] for c in range(1, 20) if cm[c].sum() + cm[:, c].sum() == 0}
    assert run.metrics.dataset == "semantickitti" and set(run.metrics.absent) == empty
    assert not {"pole", "trunk"} & {KITTI_CLASS_NAMES[c] for c in range(1, 20) if cm[c].sum()}
