"""The pretraining dataset: voxel pairings, reproducible draws, and collation into a Batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from cmcr_core.data.batch import collate
from cmcr_core.data.pretrain_dataset import PipelineSettings, PretrainDataset


@dataclass
class FakeItem:
    token: str
    points: np.ndarray
    pairings: np.ndarray
    images: np.ndarray
    superpixels: np.ndarray | None


def make_source(n_items=3, n_points=3000, size=(60, 100), seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_items):
        pts = np.concatenate([rng.uniform(-15, 15, (n_points, 3)), rng.uniform(0, 255, (n_points, 1))], 1)
        pairs = np.concatenate(
            [
                np.stack(
                    [
                        np.arange(cam * 500, cam * 500 + 500),
                        np.full(500, cam),
                        rng.integers(0, size[0], 500),
                        rng.integers(0, size[1], 500),
                    ],
                    1,
                )
                for cam in range(6)
            ]
        )
        items.append(
            FakeItem(
                token=f"t{i}",
                points=pts.astype(np.float32),
                pairings=pairs,
                images=rng.integers(0, 256, (6, *size, 3), dtype=np.uint8),
                superpixels=rng.integers(0, 160, (6, *size)),
            )
        )
    return items


SETTINGS = PipelineSettings(crop_size=(28, 52), min_pairs=100, superpixels=True, intensity_scale=1 / 255)


def test_validation_item_maps_every_pair_to_the_voxel_of_its_point():
    source = make_source()
    settings = PipelineSettings(crop_size=(30, 50), cylindrical=False, voxel_size=0.5, superpixels=True)
    item = PretrainDataset(source, settings, train=False)[0]
    pts = source[0].points
    # no augmentation: the voxel of a pair is the floored coordinate of its point
    expected_voxels = np.floor(pts[source[0].pairings[:, 0], :3] / 0.5).astype(np.int64)
    assert np.array_equal(item.coords[item.pairings[:, 0]].numpy(), expected_voxels)
    assert np.array_equal(item.coords[item.point_to_voxel].numpy(), np.floor(pts[:, :3] / 0.5))
    # the representative of a voxel is its first point, its feature that point's scaled intensity
    first = {}
    for i, v in enumerate(item.point_to_voxel.tolist()):
        first.setdefault(v, i)
    reps = np.array([first[v] for v in range(len(item.coords))])
    assert np.allclose(item.feats[:, 0].numpy(), pts[reps, 3] * settings.intensity_scale)
    assert item.images.shape == (6, 3, 30, 50) and item.superpixels.shape == (6, 30, 50)


def test_train_items_are_reproducible_per_seed_epoch_and_index():
    source = make_source()
    a = PretrainDataset(source, SETTINGS, seed=3)[1]
    b = PretrainDataset(source, SETTINGS, seed=3)[1]
    assert (
        torch.equal(a.coords, b.coords)
        and torch.equal(a.pairings, b.pairings)
        and torch.equal(a.images, b.images)
    )
    other_seed = PretrainDataset(source, SETTINGS, seed=4)[1]
    assert not torch.equal(a.points, other_seed.points)
    ds = PretrainDataset(source, SETTINGS, seed=3)
    ds.set_epoch(1)
    assert not torch.equal(ds[1].points, a.points)


def test_augmented_points_keep_their_range_and_pairs_stay_in_the_crop():
    source = make_source()
    item = PretrainDataset(source, SETTINGS, seed=0)[0]
    radius = np.linalg.norm(source[0].points[:, :2], axis=1)
    assert np.isclose(np.linalg.norm(item.points[:, :2].numpy(), axis=1).max(), radius.max(), atol=1e-3)
    assert item.pairings[:, 2].max() < 28 and item.pairings[:, 3].max() < 52 and item.pairings.min() >= 0
    assert item.pairings[:, 0].max() < len(item.coords)


def test_collated_batch_of_the_pipeline():
    ds = PretrainDataset(make_source(), SETTINGS, seed=0)
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch.images.shape == (18, 3, 28, 52)
    assert int(batch.pairing_images[:, 0].max()) < 18 and int(batch.pairing_points.max()) < len(batch.coords)
    ids = [set(batch.superpixels[i].unique().tolist()) for i in range(18)]
    assert all(not (ids[i] & ids[j]) for i in range(18) for j in range(i + 1, 18))


def test_missing_superpixels_and_unknown_transform_are_named():
    source = make_source(n_items=1)
    source[0].superpixels = None
    with pytest.raises(ValueError, match="t0 has no superpixels"):
        PretrainDataset(source, SETTINGS)[0]
    with pytest.raises(ValueError, match="unknown mixed transform"):
        PretrainDataset(source, PipelineSettings(mixed_transforms=("cutmix",)))
