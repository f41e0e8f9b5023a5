"""Pretraining augmentations against independent checks (geometry, index bookkeeping, determinism)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmcr_core.data import transforms as T


def make_sample(rng, n_points=4000, n_cameras=3, size=(90, 160), with_spx=True):
    points = np.concatenate(
        [rng.uniform(-20, 20, (n_points, 3)), rng.uniform(0, 255, (n_points, 1))], 1
    ).astype(np.float32)
    pairs = []
    for cam in range(n_cameras):
        idx = rng.choice(n_points, size=n_points // 2, replace=False)
        rows = rng.integers(0, size[0], len(idx))
        cols = rng.integers(0, size[1], len(idx))
        pairs.append(np.stack([idx, np.full_like(idx, cam), rows, cols], 1))
    images = rng.integers(0, 256, (n_cameras, *size, 3), dtype=np.uint8)
    spx = rng.integers(0, 200, (n_cameras, *size)) if with_spx else None
    labels = rng.integers(0, 17, n_points)
    return T.PairedSample(points, images, np.concatenate(pairs).astype(np.int64), spx, (labels,))


def test_cloud_transform_is_a_seeded_orthonormal_map():
    a = T.cloud_transform(("rotation", "flip_axis"), np.random.default_rng(3))
    b = T.cloud_transform(("rotation", "flip_axis"), np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert np.allclose(a @ a.T, np.eye(3)) and a[2, 2] == 1.0
    flips = [np.linalg.det(T.cloud_transform(("flip_axis",), np.random.default_rng(s))) for s in range(400)]
    assert 0.4 < np.mean(np.array(flips) < 0) < 0.6  # one flip of two axes: odd parity half the time
    with pytest.raises(ValueError, match="unknown cloud transform 'spin'"):
        T.cloud_transform(("spin",), np.random.default_rng(0))


def test_apply_cloud_matrix_keeps_norms_and_intensity():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 4)).astype(np.float32)
    out = T.apply_cloud_matrix(pts, T.rotation_z(rng))
    assert np.allclose(np.linalg.norm(out[:, :3], axis=1), np.linalg.norm(pts[:, :3], axis=1), atol=1e-5)
    assert np.array_equal(out[:, 3], pts[:, 3])


def test_drop_cuboids_removes_a_box_and_remaps_pairs():
    rng = np.random.default_rng(1)
    sample = make_sample(rng)
    dropped = None
    for seed in range(50):
        out = T.drop_cuboids(sample, np.random.default_rng(seed), min_pairs=10)
        if len(out.points) < len(sample.points):
            dropped = out
            break
    assert dropped is not None, "no cuboid ever removed a point"
    kept_rows = {tuple(p) for p in dropped.points.tolist()}
    assert len(kept_rows) == len(dropped.points)
    # every surviving pair still points at the same 3D point and the labels moved with the points
    old = {tuple(sample.points[i].tolist()): i for i in range(len(sample.points))}
    for point_index, cam, row, col in dropped.pairings[:200]:
        original = old[tuple(dropped.points[point_index].tolist())]
        match = (sample.pairings[:, 0] == original) & (sample.pairings[:, 1] == cam)
        assert np.any(match & (sample.pairings[:, 2] == row) & (sample.pairings[:, 3] == col))
        assert dropped.extras[0][point_index] == sample.extras[0][original]


def test_drop_cuboids_is_rejected_when_a_camera_would_starve():
    sample = make_sample(np.random.default_rng(2))
    out = T.drop_cuboids(sample, np.random.default_rng(0), min_pairs=10**9)
    assert out is sample


@pytest.mark.parametrize("seed", range(20))
def test_crop_params_follow_the_sampling_rule(seed):
    top, left, h, w = T.resized_crop_params(
        900, 1600, (0.3, 1.0), (14 / 9, 17 / 9), np.random.default_rng(seed)
    )
    assert 0 <= top and top + h <= 900 and 0 <= left and left + w <= 1600
    assert 0.3 * 0.98 <= h * w / (900 * 1600) <= 1.0
    assert 14 / 9 * 0.98 <= w / h <= 17 / 9 * 1.02


def test_crop_params_fallback_is_centred_and_clamped():
    class Never:  # a generator whose draws never fit: aspect 100 forces the fallback
        def uniform(self, low, high):
            return high

        def integers(self, low, high):
            raise AssertionError("fallback must not draw positions")

    top, left, h, w = T.resized_crop_params(100, 400, (2.0, 2.0), (1.0, 2.0), Never())
    assert (h, w) == (100, 200) and (top, left) == (0, 100)


def test_crop_pairings_land_on_the_pixel_that_nearest_resize_samples():
    rng = np.random.default_rng(4)
    labels = np.arange(90 * 160).reshape(90, 160)
    pairs = np.stack(
        [np.arange(500), np.zeros(500, int), rng.integers(0, 90, 500), rng.integers(0, 160, 500)], 1
    )
    box, out = (10, 20, 60, 120), (28, 52)
    kept, mapped = T.crop_pairings(pairs, box, out)
    assert np.array_equal(
        kept, (pairs[:, 2] >= 10) & (pairs[:, 2] < 70) & (pairs[:, 3] >= 20) & (pairs[:, 3] < 140)
    )
    assert mapped[:, 2].min() >= 0 and mapped[:, 2].max() < out[0] and mapped[:, 3].max() < out[1]
    resized = T.resize_crop_labels(labels, box, out)
    sampled_rows, sampled_cols = np.divmod(resized[mapped[:, 2], mapped[:, 3]], 160)
    assert np.all(np.abs(sampled_rows - pairs[kept, 2]) <= math.ceil(60 / 28))
    assert np.all(np.abs(sampled_cols - pairs[kept, 3]) <= math.ceil(120 / 52))


def test_resize_crop_image_of_a_constant_image_is_constant():
    image = np.full((90, 160, 3), 77, np.uint8)
    out = T.resize_crop_image(image, (5, 7, 40, 80), (20, 36))
    assert out.shape == (3, 20, 36) and out.dtype == torch.uint8 and bool((out == 77).all())


def test_crop_and_flip_cameras_keeps_pairs_consistent_with_superpixels():
    rng = np.random.default_rng(5)
    sample = make_sample(rng, with_spx=True)
    # superpixel map = a unique id per original pixel, so a pair must read back its own neighbourhood
    unique = np.arange(90 * 160).reshape(1, 90, 160).repeat(3, 0)
    sample = T.PairedSample(sample.points, sample.images, sample.pairings, unique, sample.extras)
    out = T.crop_and_flip_cameras(sample, np.random.default_rng(6), out_size=(28, 52), min_pairs=50)
    assert out.images.shape == (3, 3, 28, 52) and out.superpixels.shape == (3, 28, 52)
    for cam in range(3):
        top, left, h, w = out.boxes[cam]
        own = out.pairings[out.pairings[:, 1] == cam]
        rows, cols = np.divmod(out.superpixels[cam][own[:, 2], own[:, 3]], 160)
        source = sample.pairings[sample.pairings[:, 1] == cam]
        inside = (
            (source[:, 2] >= top)
            & (source[:, 2] < top + h)
            & (source[:, 3] >= left)
            & (source[:, 3] < left + w)
        )
        assert len(own) == inside.sum()
        assert np.all(np.abs(rows - source[inside, 2]) <= math.ceil(h / 28))
        assert np.all(np.abs(cols - source[inside, 3]) <= math.ceil(w / 52))


def test_crop_and_flip_is_reproducible_from_the_seed():
    sample = make_sample(np.random.default_rng(7))
    a = T.crop_and_flip_cameras(sample, np.random.default_rng(11), out_size=(28, 52), min_pairs=50)
    b = T.crop_and_flip_cameras(sample, np.random.default_rng(11), out_size=(28, 52), min_pairs=50)
    assert a.boxes == b.boxes and a.flipped == b.flipped
    assert np.array_equal(a.pairings, b.pairings) and torch.equal(a.images, b.images)


def test_validation_resize_keeps_every_pair():
    sample = make_sample(np.random.default_rng(8))
    out = T.crop_and_flip_cameras(sample, np.random.default_rng(0), (28, 52), random_crop=False, flip=False)
    assert len(out.pairings) == len(sample.pairings) and set(out.boxes) == {(0, 0, 90, 160)}
