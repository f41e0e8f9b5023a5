"""16-class labels against the devkit's LidarsegClassMapper; split subsets against the devkit's splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_io import load_bin_file
from nuscenes.utils.splits import create_splits_scenes

from cmcr_core.data.prepare_nuscenes import prepare_nuscenes
from cmcr_core.data.prepared import PreparedDataError, PreparedDataset, load_prepared_index

from .conftest import NO_SUPERPIXELS, VERSION


def test_labels_follow_the_devkit_class_mapper(world, prepared_plain):
    nusc = NuScenes(VERSION, str(world), verbose=False)
    mapper = LidarsegClassMapper(nusc)
    dataset = PreparedDataset(prepared_plain, "all")
    seen = set()
    for i in range(len(dataset)):
        item = dataset[i]
        raw = load_bin_file(f"{world}/{nusc.get('lidarseg', item.lidar_token)['filename']}")
        np.testing.assert_array_equal(item.labels_fine, raw)
        np.testing.assert_array_equal(item.labels, mapper.convert_label(raw))
        assert item.labels.dtype == np.uint8 and item.labels_fine.dtype == np.uint8
        seen.update(np.unique(item.labels).tolist())
    assert len(seen) > 2  # several coarse classes are exercised


def test_coarse_labels_are_derived_by_name_not_by_index(world_copy, prepared_plain, tmp_path):
    # Renumber the categories of the world (and its label files) with a permutation: the category
    # names still decide the coarse class, so the 16-class labels must not change.
    permutation = np.random.default_rng(3).permutation(32).astype(np.uint8)
    table = world_copy / VERSION / "category.json"
    categories = json.loads(table.read_text())
    for record in categories:
        record["index"] = int(permutation[record["index"]])
    table.write_text(json.dumps(categories))
    for record in json.loads((world_copy / VERSION / "lidarseg.json").read_text()):
        path = world_copy / record["filename"]
        permutation[np.fromfile(path, dtype=np.uint8)].tofile(path)
    out = tmp_path / "permuted"
    assert not prepare_nuscenes(world_copy, VERSION, out, NO_SUPERPIXELS).failures
    original, permuted = PreparedDataset(prepared_plain, "all"), PreparedDataset(out, "all")
    for i in range(len(original)):
        np.testing.assert_array_equal(permuted[i].labels_fine, permutation[original[i].labels_fine])
        np.testing.assert_array_equal(permuted[i].labels, original[i].labels)
    stored = load_prepared_index(out).header["labels"]
    assert stored["fine_names"][int(permutation[17])] == "vehicle.car"
    assert stored["fine_to_coarse"][int(permutation[17])] == stored["coarse_names"].index("car")


def test_split_subsets_follow_the_devkit_splits(world, prepared_plain):
    nusc = NuScenes(VERSION, str(world), verbose=False)
    present = [scene["name"] for scene in nusc.scene]
    official = create_splits_scenes()
    held_out = {f"scene-{n}" for n in ("0008", "0009", "1094", "1107")}  # a few of PROTOCOLS §2's list
    expected = {name: [s for s in present if s in official[name]]
                for name in ("train", "val", "test", "mini_train", "mini_val")}
    # v1.0-mini preset (PROTOCOLS §2): parametrize = mini_train minus held-out scenes; verifying = the rest.
    expected["parametrize"] = [s for s in expected["mini_train"] if s not in held_out]
    expected["verifying"] = [s for s in expected["mini_train"] if s in held_out]
    index = load_prepared_index(prepared_plain)
    assert index.splits == expected
    scene_of = {s["token"]: s["name"] for s in nusc.scene}
    for name, scenes in expected.items():
        want = [smp["token"] for scene in nusc.scene if scene["name"] in scenes
                for smp in _scene_samples(nusc, scene)]
        if not want:
            with pytest.raises(PreparedDataError, match=f"split '{name}' is empty"):
                PreparedDataset(prepared_plain, name)
            continue
        dataset = PreparedDataset(prepared_plain, name)
        assert dataset.tokens == want
        assert {scene_of[nusc.get("sample", t)["scene_token"]] for t in dataset.tokens} == set(scenes)
    assert "scene-1094" not in index.splits["parametrize"]


def _scene_samples(nusc, scene):
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        yield sample
        token = sample["next"]


def test_unknown_and_empty_splits_are_clear_errors(prepared_plain):
    with pytest.raises(PreparedDataError, match="unknown split 'trian'.*available: all, train"):
        PreparedDataset(prepared_plain, "trian")
    with pytest.raises(PreparedDataError, match="split 'test' is empty"):
        PreparedDataset(prepared_plain, "test")


def test_trainval_pretraining_split_counts():
    from cmcr_core.data.splits import scene_subsets

    official = create_splits_scenes()
    trainval = sorted(official["train"] + official["val"])
    subsets = scene_subsets(trainval, "v1.0-trainval")
    # PROTOCOLS §1-2: 700 train, 150 val, 0 test in trainval; parametrize 600 = train minus 100 held out.
    sizes = [len(subsets[k]) for k in ("train", "val", "test", "parametrize", "verifying")]
    assert sizes == [700, 150, 0, 600, 100]
    assert set(subsets["parametrize"]) | set(subsets["verifying"]) == set(official["train"])
    assert subsets["train"] == [s for s in trainval if s in set(official["train"])]  # keeps the given order
