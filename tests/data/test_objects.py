"""Object readers/writers round trips, synthetic objects, dataset transforms, teacher targets."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from cmcr_core.data.objects import (
    ObjectPointDataset,
    ObjectSet,
    TeacherTargets,
    class_text_vectors,
    collate_objects,
    load_teacher_targets,
    make_synthetic_objects,
    normalize_unit_sphere,
    precompute_teacher_targets,
    read_modelnet_h5,
    read_modelnet_resampled,
    read_scanobjectnn,
    read_shapenet55,
    read_shapenet55_classes,
    read_shapenet_image,
    sample_points,
    write_modelnet_h5,
    write_modelnet_resampled,
    write_scanobjectnn,
    write_shapenet55,
    write_synthetic_object_datasets,
)
from cmcr_core.data.objects.teacher_targets import preprocess_views
from cmcr_core.data.objects.writers import synthetic_synsets
from cmcr_core.models.tiny_image_teacher import TinyImageTeacher


def assert_same_objects(got: ObjectSet, want: ObjectSet, atol: float = 0.0) -> None:
    assert len(got) == len(want)
    assert got.class_names == want.class_names
    assert got.labels.tolist() == want.labels.tolist()
    for a, b in zip(got.points, want.points, strict=True):
        np.testing.assert_allclose(a, b, atol=atol, rtol=0)


def test_synthetic_objects_deterministic_normalised_and_distinct(small_objects) -> None:
    train, test = small_objects
    again = make_synthetic_objects(
        6, 256, seed=3, classes=("box", "sphere", "cylinder", "torus"), image_size=16
    )
    assert_same_objects(again.objects, train.objects)
    assert np.array_equal(again.images, train.images)
    assert train.images.shape == (24, 16, 16, 3) and train.images.dtype == np.uint8
    for pts, nrm in zip(train.objects.points, train.objects.normals, strict=True):
        assert pts.shape == (256, 3)
        assert np.linalg.norm(pts, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        assert np.abs(pts.mean(0)).max() < 1e-5
        np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-5)
    assert not set(train.objects.ids) & set(test.objects.ids)
    assert not np.allclose(train.objects.points[0], train.objects.points[4])  # two boxes differ
    # every render shows the object (non-white pixels) on a white background
    for image in train.images:
        fg = (image < 250).any(-1)
        assert 0.05 < fg.mean() < 0.9 and (image[0, 0] == 255).all()


def test_sphere_points_lie_on_a_scaled_ellipsoid() -> None:
    objs = make_synthetic_objects(1, 500, seed=0, classes=("sphere",))
    pts = objs.objects.points[0].astype(np.float64)
    # a sphere scaled per axis then rotated about y (and re-centred on the sample mean) is a quadric
    # x^T A x + b^T x = 1 with no xy / yz terms: fit it by least squares
    x, y, z = pts.T
    design = np.stack([x * x, y * y, z * z, x * z, x, y, z], 1)
    coef, residual, *_ = np.linalg.lstsq(design, np.ones(len(pts)), rcond=None)
    assert np.abs(design @ coef - 1).max() < 1e-4


def test_scanobjectnn_round_trip(tmp_path, small_objects) -> None:
    train, test = small_objects
    write_scanobjectnn(tmp_path, train.objects, test.objects, variant="hardest")
    path = tmp_path / "main_split" / "training_objectdataset_augmentedrot_scale75.h5"
    with h5py.File(path) as f:
        assert f["data"].shape == (24, 256, 3) and f["label"].shape == (24,)
    names = list(train.objects.class_names)
    assert_same_objects(read_scanobjectnn(tmp_path, "train", "hardest", names), train.objects)
    assert_same_objects(read_scanobjectnn(tmp_path, "test", "hardest", names), test.objects)
    with pytest.raises(FileNotFoundError, match="main_split_nobg"):
        read_scanobjectnn(tmp_path, "train", "obj_only", names)
    with pytest.raises(ValueError, match="labels must lie"):
        read_scanobjectnn(tmp_path, "train", "hardest", names[:2])


def test_modelnet_resampled_round_trip(tmp_path, small_objects) -> None:
    train, test = small_objects
    # a class name with an underscore, as in ModelNet40 (night_stand)
    renamed = [
        ObjectSet(
            s.objects.points,
            s.objects.labels,
            s.objects.ids,
            ["night_stand", "sphere", "cylinder", "torus"],
            s.objects.normals,
        )
        for s in (train, test)
    ]
    ids = write_modelnet_resampled(tmp_path, *renamed)
    assert ids["train"][0] == "night_stand_0001" and ids["test"][0] == "night_stand_0007"
    line = (tmp_path / "night_stand" / "night_stand_0001.txt").read_text().splitlines()[0]
    assert len(line.split(",")) == 6
    for split, want in zip(("train", "test"), renamed, strict=True):
        got = read_modelnet_resampled(tmp_path, split)
        assert_same_objects(got, want, atol=1e-6)
        assert got.ids == ids[split]
        np.testing.assert_allclose(got.normals[3], want.normals[3], atol=1e-6)


def test_modelnet_h5_round_trip(tmp_path, small_objects) -> None:
    train, test = small_objects
    write_modelnet_h5(tmp_path, train.objects, test.objects, per_file=10)
    assert (tmp_path / "ply_data_train2.h5").is_file() and not (tmp_path / "ply_data_train3.h5").exists()
    assert (tmp_path / "train_files.txt").read_text().startswith("data/modelnet40_ply_hdf5_2048/")
    with h5py.File(tmp_path / "ply_data_test0.h5") as f:
        assert f["label"].shape == (8, 1) and f["label"].dtype == np.uint8
    assert_same_objects(read_modelnet_h5(tmp_path, "train"), train.objects)
    assert_same_objects(read_modelnet_h5(tmp_path, "test"), test.objects)


def test_shapenet55_round_trip(tmp_path, small_objects) -> None:
    train, _ = small_objects
    objects = train.objects
    splits = ["train" if i % 3 else "test" for i in range(len(objects))]
    names = write_shapenet55(tmp_path, objects, splits, synthetic_synsets(4), train.images)
    rows = json.loads((tmp_path / "shapenet55.json").read_text())
    assert rows[1] == {"catalogue": 9000001, "describe": "sphere"}
    assert names[1] == f"09000001-{objects.ids[1]}.npy"
    synsets, descriptions = read_shapenet55_classes(tmp_path)
    assert synsets == synthetic_synsets(4) and descriptions == list(objects.class_names)
    got = read_shapenet55(tmp_path, "train")
    keep = [i for i, s in enumerate(splits) if s == "train"]
    want = ObjectSet(
        [objects.points[i] for i in keep],
        objects.labels[keep],
        [objects.ids[i] for i in keep],
        objects.class_names,
    )
    assert_same_objects(got, want)
    assert got.ids[0] == f"09000001-{objects.ids[1]}"
    whole = read_shapenet55(tmp_path, "whole")
    assert len(whole) == len(objects) and whole.ids[0].endswith(objects.ids[0])  # test list first
    assert np.array_equal(read_shapenet_image(tmp_path, got.ids[0]), train.images[1])
    # pandas "columns" orientation of the category file is read the same way
    (tmp_path / "shapenet55.json").write_text(
        json.dumps(
            {
                "catalogue": {str(i): r["catalogue"] for i, r in enumerate(rows)},
                "describe": {str(i): r["describe"] for i, r in enumerate(rows)},
            }
        )
    )
    assert read_shapenet55_classes(tmp_path) == (synsets, descriptions)


def test_write_all_layouts(tmp_path) -> None:
    layout = write_synthetic_object_datasets(
        tmp_path, 2, 1, 64, seed=1, image_size=8, classes=("box", "cone", "chair", "table", "airplane")
    )
    assert len(read_shapenet55(layout["shapenet55"], "whole")) == 15
    names = ["box", "cone", "chair", "table", "airplane"]
    assert len(read_scanobjectnn(layout["scanobjectnn"], "test", class_names=names)) == 5
    a = read_modelnet_resampled(layout["modelnet_resampled"], "train")
    b = read_modelnet_h5(layout["modelnet_h5"], "train")
    assert a.labels.tolist() == b.labels.tolist()
    np.testing.assert_allclose(np.stack(a.points), np.stack(b.points), atol=1e-6)


def test_sampling_normalisation_and_augmentations(small_objects) -> None:
    objects = small_objects[0].objects
    rng = np.random.default_rng(0)
    cloud = objects.points[0] * 3.0 + 5.0
    idx = sample_points(cloud, 100, "random", rng)
    assert len(set(idx.tolist())) == 100
    normed = normalize_unit_sphere(cloud)
    np.testing.assert_allclose(normed, objects.points[0], atol=1e-5)  # undoes the affine change
    assert len(sample_points(cloud[:50], 100, "random", rng)) == 100
    pool = set(sample_points(cloud, 200, "fps", rng).tolist())
    assert set(sample_points(cloud, 100, "fps_random", rng, fps_pool=200).tolist()) <= pool

    ds = ObjectPointDataset(objects, 128, augmentation="rotate_y", seed=1)
    plain = ObjectPointDataset(objects, 128, augmentation="none", seed=1)
    a, p = ds[2]["points"], plain[2]["points"]
    np.testing.assert_allclose(a[:, 1], p[:, 1], atol=1e-6)  # rotation about y keeps y
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), np.linalg.norm(p, axis=1), atol=1e-5)
    assert not np.allclose(a, p)
    st = ObjectPointDataset(objects, 128, augmentation="scale_translate", seed=1)[2]["points"]
    ratio = (st - st.mean(0)) / (p - p.mean(0))
    assert np.all((ratio > 2 / 3 - 1e-4) & (ratio < 1.5 + 1e-4))
    # reproducible per (seed, epoch, index), different across epochs
    assert np.array_equal(ds[2]["points"], a)
    ds.set_epoch(1)
    assert not np.allclose(ds[2]["points"], a)
    with pytest.raises(ValueError, match="unknown augmentation"):
        ObjectPointDataset(objects, 128, augmentation="jitter")


def test_teacher_targets_precompute_save_load_and_batches(tmp_path, small_objects) -> None:
    train = small_objects[0]
    objects = train.objects
    teacher = TinyImageTeacher(out_dim=8, seed=0)
    teacher.train(True)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    text = class_text_vectors(4, 6, seed=0, num_prompts=3)
    np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, atol=1e-6)
    targets = precompute_teacher_targets(
        train.images, objects.ids, objects.labels, teacher, text, num_views=2, image_size=16, batch_size=5
    )
    assert targets.img.shape == (24, 2, 8) and targets.text.shape == (24, 3, 6)
    # view 0 is the plain resized render: equals calling the teacher directly
    view = preprocess_views(train.images[3], 1, 16, np.random.default_rng(0))
    np.testing.assert_allclose(targets.img[3, 0], teacher(view)[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(targets.text[5], text[objects.labels[5]])
    assert np.abs(targets.img).max() < 1 and targets.img.std() > 1e-3

    loaded = load_teacher_targets(targets.save(tmp_path / "t.npz"))
    assert loaded.ids == targets.ids
    np.testing.assert_array_equal(loaded.img, targets.img)
    with pytest.raises(KeyError, match="nope"):
        loaded.lookup("nope")

    ds = ObjectPointDataset(objects, 64, targets=loaded, seed=0)
    batch = collate_objects([ds[i] for i in range(4)])
    assert batch.points.shape == (4, 64, 3) and batch.points.dtype == torch.float32
    assert batch.img_target.shape == (4, 8) and batch.text_target.shape == (4, 6)
    assert batch.labels.tolist() == objects.labels[:4].tolist()
    for i in range(4):
        rows = loaded.img[i]
        assert any(np.allclose(batch.img_target[i].numpy(), r) for r in rows)
    with pytest.raises(KeyError, match="lack"):
        ObjectPointDataset(
            objects, 64, targets=TeacherTargets(objects.ids[:2], loaded.img[:2], loaded.text[:2])
        )


def test_cached_fps_orders_give_the_uncached_samples(small_objects) -> None:
    objects = small_objects[0].objects
    for sampling, pool in (("fps", None), ("fps_random", 150)):
        ds = ObjectPointDataset(objects, 100, sampling, normalize=False, fps_pool=pool, seed=3)
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            for index in (0, 5):
                rng = np.random.default_rng([3, epoch, index])  # the dataset's per-item generator
                cloud = objects.points[index]
                expected = cloud[sample_points(cloud, 100, sampling, rng, pool)]
                np.testing.assert_array_equal(ds[index]["points"], expected.astype(np.float32))
    st = ObjectPointDataset(objects, 128, augmentation="scale", seed=1)[2]["points"]
    plain = ObjectPointDataset(objects, 128, augmentation="none", seed=1)[2]["points"]
    ratio = st / plain
    assert np.all((ratio > 2 / 3 - 1e-4) & (ratio < 1.5 + 1e-4))
    assert np.allclose(ratio, ratio[0], atol=1e-4)  # one scale per axis, no translation
