"""Synthetic scans (partial views, occluders, background, noise) and the confusable class set, on hand-built
surfaces whose visible parts are known, and the layouts `cmcr prepare objects --synthetic --scans` writes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cmcr_core.data.objects import read_scanobjectnn, read_shapenet55
from cmcr_core.data.objects.scans import ScanSettings, _visible, scan_object, synthetic_scans
from cmcr_core.data.objects.synthetic import CONFUSABLE_CLASSES, make_object
from cmcr_core.data.objects.writers import PRETRAIN_FIRST_INDEX, write_synthetic_object_datasets

PLAIN = ScanSettings(occlusion_prob=0.0, shift=0.0, background_fraction=(0.0, 0.0), noise=0.0)


def _plate(x: float, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A square plate at depth x facing +x (normals +x), spanning y, z in [-0.5, 0.5]."""
    pts = np.concatenate([np.full((count, 1), x), rng.uniform(-0.5, 0.5, (count, 2))], axis=1)
    return pts, np.tile([1.0, 0.0, 0.0], (count, 1))


def test_visibility_drops_back_faces_and_surfaces_hidden_behind_others() -> None:
    rng = np.random.default_rng(0)
    near, near_n = _plate(0.5, 400, rng)
    far, far_n = _plate(-0.5, 400, rng)
    back, back_n = near.copy(), -near_n  # the same plate seen from behind
    points = np.concatenate([near, far, back])
    normals = np.concatenate([near_n, far_n, back_n])
    seen = _visible(points, normals, np.array([1.0, 0.0, 0.0]), grid=16, tolerance=0.05)
    assert set(seen) == set(range(400))  # the far plate is behind the near one, the back face is culled
    seen = _visible(far, far_n, np.array([1.0, 0.0, 0.0]), grid=16, tolerance=0.05)
    assert len(seen) == 400  # alone, the far plate is seen


def _unit_sphere_sample(count: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).normal(size=(count, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def test_a_plain_scan_is_one_side_of_the_surface_rescaled() -> None:
    sphere = _unit_sphere_sample(4000, 1)
    cloud, is_object = scan_object(sphere, sphere, 500, np.random.default_rng(2), PLAIN)
    assert cloud.shape == (500, 3) and cloud.dtype == np.float32 and is_object.all()
    assert np.linalg.norm(cloud, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    # a similarity image of points of one sphere: a least-squares sphere fits them exactly
    a = np.concatenate([2 * cloud, np.ones((500, 1))], axis=1).astype(np.float64)
    solution, *_ = np.linalg.lstsq(a, (cloud.astype(np.float64) ** 2).sum(1), rcond=None)
    centre = solution[:3]
    radii = np.linalg.norm(cloud - centre, axis=1)
    assert radii.std() < 1e-4 * radii.mean()
    # one viewpoint sees less than a hemisphere: all points lie on one side of a plane through the centre
    mean_direction = (cloud - centre).mean(0)
    assert ((cloud - centre) @ mean_direction > 0).all()


def test_background_and_noise_and_determinism() -> None:
    sphere = _unit_sphere_sample(4000, 3)
    settings = ScanSettings(background_fraction=(0.3, 0.3), noise=0.0, occlusion_prob=0.0)
    cloud, is_object = scan_object(sphere, sphere, 400, np.random.default_rng(4), settings)
    assert (~is_object).sum() == 120  # 30 % background
    again, mask = scan_object(sphere, sphere, 400, np.random.default_rng(4), settings)
    np.testing.assert_array_equal(cloud, again)
    np.testing.assert_array_equal(is_object, mask)
    other, _ = scan_object(sphere, sphere, 400, np.random.default_rng(5), settings)
    assert not np.allclose(cloud, other)
    noisy, _ = scan_object(sphere, sphere, 400, np.random.default_rng(4), ScanSettings(noise=0.05))
    assert np.isfinite(noisy).all()


def test_the_confusable_classes_are_valid_distinct_objects() -> None:
    extents = {}
    for name in CONFUSABLE_CLASSES:
        points, normals, image = make_object(name, np.random.default_rng([0, 3]), 512, image_size=16)
        assert np.isfinite(points).all() and np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-5)
        assert np.linalg.norm(points, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        assert image.shape == (16, 16, 3) and image.min() < 255  # the object shows in its render
        extents[name] = np.ptp(points, axis=0)
    assert len({tuple(np.round(e, 3)) for e in extents.values()}) == len(CONFUSABLE_CLASSES)


def test_the_benchmark_layouts_keep_pretraining_apart_and_write_the_scans(tmp_path: Path) -> None:
    classes = ("chair", "stool", "table")
    layout = write_synthetic_object_datasets(tmp_path, train_per_class=2, test_per_class=1, num_points=128,
                                             seed=5, image_size=8, classes=classes, pretrain_per_class=2,
                                             scans=True)
    pre = read_shapenet55(layout["shapenet55"], "whole")
    assert len(pre) == 6 and all(i.split("-")[1].startswith("pre") for i in pre.ids)
    assert pre.ids[0] == f"09000000-pre{PRETRAIN_FIRST_INDEX:06d}"
    assert (layout["shapenet55"] / "ShapeNet-55" / "test.txt").read_text() == ""
    train = read_scanobjectnn(layout["scanobjectnn"], "train", "hardest")
    test = read_scanobjectnn(layout["scanobjectnn"], "test", "hardest")
    assert train.class_names == list(classes) and len(train) == 6 and len(test) == 3
    assert list(test.labels) == [0, 1, 2]
    expected = synthetic_scans(classes, test.labels, 6, 5, 128)  # test objects are numbered after train
    for got, want in zip(test.points, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    clean = read_scanobjectnn(layout["scanobjectnn"], "test", "obj_bg")
    assert not np.allclose(clean.points[0], test.points[0])
    with h5py.File(layout["scanobjectnn"] / "main_split" / "test_objectdataset.h5", "r") as f:
        assert f["data"].shape == (3, 128, 3)


def _d2_histograms(clouds: list[np.ndarray], bins: int = 32, pairs: int = 4000) -> np.ndarray:
    """Osada et al.'s D2 shape distribution: the histogram of distances between random point pairs, a
    rotation-invariant descriptor that knows nothing of cmcr's encoders."""
    rng = np.random.default_rng(0)
    rows = []
    for cloud in clouds:
        i = rng.integers(0, len(cloud), (pairs, 2))
        hist, _ = np.histogram(np.linalg.norm(cloud[i[:, 0]] - cloud[i[:, 1]], axis=1), bins, range=(0, 2))
        rows.append(hist / pairs)
    return np.asarray(rows)


def _nearest_neighbour_accuracy(train, test) -> float:
    a, b = _d2_histograms(train.points), _d2_histograms(test.points)
    nearest = ((b[:, None] - a[None]) ** 2).sum(-1).argmin(1)
    return float((train.labels[nearest] == test.labels).mean())


def test_the_scans_leave_headroom_that_the_clean_objects_do_not(tmp_path: Path) -> None:
    # the benchmark's downstream task must be hard: a 1-NN on D2 histograms, an independent classifier,
    # separates the clean confusable objects well but the scans of the same objects far less (still above
    # chance, 1/12: the scans carry class information)
    layout = write_synthetic_object_datasets(tmp_path, train_per_class=8, test_per_class=8, num_points=512,
                                             seed=0, image_size=8, classes=CONFUSABLE_CLASSES, scans=True)
    clean = _nearest_neighbour_accuracy(read_scanobjectnn(layout["scanobjectnn"], "train", "obj_bg"),
                                        read_scanobjectnn(layout["scanobjectnn"], "test", "obj_bg"))
    scans = _nearest_neighbour_accuracy(read_scanobjectnn(layout["scanobjectnn"], "train", "hardest"),
                                        read_scanobjectnn(layout["scanobjectnn"], "test", "hardest"))
    assert clean > 0.6
    assert 2 / 12 < scans < clean - 0.3
