"""`data.normalize` on hand-written reader fixtures: ScanObjectNN clouds reach the model as stored, ModelNet40
clouds in the unit sphere, as each published recipe says (the reference normalises ShapeNet-55 and ModelNet40,
never ScanObjectNN)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from support import RECIPES

from cmcr_core import config
from cmcr_core.ops.geometry import farthest_point_sample_np
from cmcr_core.runs.object_classification import eval_points
from cmcr_core.runs.objects import read_objects, train_dataset

torch.set_num_threads(1)

OFFSET, SCALE = np.array([10.0, -3.0, 2.0], np.float32), 5.0


def _clouds(count: int, points: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(count, points, 3)) * SCALE + OFFSET).astype(np.float32)


@pytest.fixture(scope="module")
def scanobjectnn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OBJ_BG h5 files written with h5py directly: 4 train / 3 test clouds of 300 points, far off-centre."""
    root = tmp_path_factory.mktemp("sonn")
    (root / "main_split").mkdir()
    for name, count, seed in (("training", 4, 0), ("test", 3, 1)):
        with h5py.File(root / "main_split" / f"{name}_objectdataset.h5", "w") as f:
            f.create_dataset("data", data=_clouds(count, 300, seed))
            f.create_dataset("label", data=np.arange(count) % 2)
    return root


@pytest.fixture(scope="module")
def modelnet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The modelnet40_normal_resampled layout by hand: two classes, one train and one test shape each."""
    root = tmp_path_factory.mktemp("modelnet")
    (root / "modelnet40_shape_names.txt").write_text("cup\nnight_stand\n")
    clouds = iter(_clouds(4, 300, 2))
    ids = {"train": ["cup_0001", "night_stand_0001"], "test": ["cup_0002", "night_stand_0002"]}
    for split, names in ids.items():
        (root / f"modelnet40_{split}.txt").write_text("".join(f"{n}\n" for n in names))
        for name in names:
            folder = root / name.rsplit("_", 1)[0]
            folder.mkdir(exist_ok=True)
            rows = np.concatenate([next(clouds), np.zeros((300, 3))], axis=1)
            np.savetxt(folder / f"{name}.txt", rows, fmt="%.6f", delimiter=",")
    return root


def _recipe(name: str, data: Path, sets: tuple[str, ...] = ()) -> config.ObjectClassifyRecipe:
    return config.load_recipe(RECIPES / name, [f"data.path={data}", "data.num_points=64", *sets],
                              kind=config.ObjectClassifyRecipe)


def _unit_sphere(cloud: np.ndarray) -> np.ndarray:
    centred = cloud - cloud.mean(axis=0)
    return centred / np.sqrt((centred**2).sum(axis=1)).max()


def test_published_recipes_state_the_reference_normalisation() -> None:
    expected = {"recon_finetune_scanobjectnn.yaml": False, "recon_probe_modelnet40.yaml": True}
    for name, value in expected.items():
        recipe = config.load_recipe(RECIPES / name, [], kind=config.ObjectClassifyRecipe)
        assert recipe.data.normalize is value
    assert config.load_recipe(RECIPES / "recon_shapenet.yaml", [], kind=config.ReconRecipe).data.normalize


def test_scanobjectnn_clouds_are_evaluated_and_trained_as_stored(scanobjectnn_root: Path) -> None:
    recipe = _recipe("recon_finetune_scanobjectnn.yaml", scanobjectnn_root)
    with h5py.File(scanobjectnn_root / "main_split" / "test_objectdataset.h5", "r") as f:
        stored = f["data"][:]
    points = eval_points(read_objects(recipe.data, "test"), recipe.data).numpy()
    for cloud, got in zip(stored, points, strict=True):
        np.testing.assert_array_equal(got, cloud[farthest_point_sample_np(cloud, 64)])
    # training items: rotated about y (rotate_y), never rescaled: y and the distance to the y axis survive
    dataset = train_dataset(recipe, read_objects(recipe.data, "train"), needs_targets=False)
    with h5py.File(scanobjectnn_root / "main_split" / "training_objectdataset.h5", "r") as f:
        first = f["data"][0].astype(np.float64)
    item = dataset[0]["points"].astype(np.float64)
    radial = np.hypot(first[:, 0], first[:, 2])
    for p in item:  # every item point is a stored point, rotated about y
        row = np.argmin(np.abs(first[:, 1] - p[1]) + np.abs(radial - np.hypot(p[0], p[2])))
        assert abs(first[row, 1] - p[1]) < 1e-4 and abs(radial[row] - np.hypot(p[0], p[2])) < 1e-4
    assert np.abs(item).max() > 5.0


def test_modelnet_clouds_are_normalised_and_the_field_turns_it_off(modelnet_root: Path) -> None:
    recipe = _recipe("recon_probe_modelnet40.yaml", modelnet_root)
    objects = read_objects(recipe.data, "test")
    points = eval_points(objects, recipe.data).numpy()
    for cloud, got in zip(objects.points, points, strict=True):
        expected = _unit_sphere(cloud[farthest_point_sample_np(cloud, 64)].astype(np.float64))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert np.sqrt((got**2).sum(1)).max() == pytest.approx(1.0, abs=1e-5)
    raw = _recipe("recon_probe_modelnet40.yaml", modelnet_root, ("data.normalize=false",))
    got = eval_points(objects, raw.data).numpy()
    np.testing.assert_array_equal(got[0], objects.points[0][farthest_point_sample_np(objects.points[0], 64)])
