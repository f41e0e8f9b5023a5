"""MIM masking (METHODS.md §7.2): patch structure, pair dropping with a real boolean mask (not defect D1),
kept pairs in pixel mode, masked input vs unmasked target, and the collated Batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from cmcr_core.data.batch import collate
from cmcr_core.data.pretrain_dataset import PipelineSettings, PretrainDataset, mim_masks


@dataclass
class Item:
    token: str
    points: np.ndarray
    pairings: np.ndarray
    images: np.ndarray
    superpixels: None = None


def make_source(n_items=2, size=(90, 160), n_points=2000, seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_items):
        points = np.concatenate([rng.uniform(-10, 10, (n_points, 3)), rng.uniform(0, 255, (n_points, 1))], 1)
        rows, cols = rng.integers(0, size[0], (6, n_points)), rng.integers(0, size[1], (6, n_points))
        index = np.arange(n_points)
        pairs = np.concatenate([np.stack([index, np.full(n_points, cam), rows[cam], cols[cam]], 1)
                                for cam in range(6)])
        images = rng.integers(1, 256, (6, *size, 3), dtype=np.uint8)  # no black pixel: masked = exactly 0
        items.append(Item(f"t{i}", points.astype(np.float32), pairs, images))
    return items


def test_patch_masks_are_full_resolution_patches_and_spare_the_remainder():
    rng = np.random.default_rng(0)
    # A whole-image "crop" at full resolution maps crop pixels to themselves: the mask must be made of
    # 16×16 blocks, with the 4 rows / 8 columns past the last whole patch never masked.
    boxes, flips = [(0, 0, 100, 200)] * 40, [False] * 40
    masks = mim_masks(boxes, flips, (100, 200), (100, 200), "patch16_drop_pairs", rng)
    assert not masks[:, 96:, :].any() and not masks[:, :, 192:].any()
    blocks = masks[:, :96, :192].reshape(40, 6, 16, 12, 16)
    assert bool((blocks == blocks[:, :, :1, :, :1]).all())  # constant inside every patch
    masked_cameras = masks.any(axis=(1, 2))
    assert 10 <= masked_cameras.sum() <= 30  # each camera masked with p = 0.5
    patch_rate = blocks[masked_cameras, :, 0, :, 0].mean()
    assert 0.4 < patch_rate < 0.6
    # A flipped crop mirrors the mask of the same draws.
    mode = "patch16_drop_pairs"
    again = mim_masks(boxes[:1], [True], (100, 200), (100, 200), mode, np.random.default_rng(9))
    plain = mim_masks(boxes[:1], [False], (100, 200), (100, 200), mode, np.random.default_rng(9))
    assert np.array_equal(again[0], plain[0][:, ::-1])


def test_pixel_masks_are_per_pixel_bernoulli():
    masks = mim_masks([(0, 0, 90, 160)] * 20, [False] * 20, (90, 160), (45, 80), "pixel_keep_pairs",
                      np.random.default_rng(1))
    masked = masks.any(axis=(1, 2))
    assert 4 <= masked.sum() <= 16
    assert 0.45 < masks[masked].mean() < 0.55
    assert not masks[~masked].any()


@pytest.mark.parametrize("mode", ["patch16_drop_pairs", "pixel_keep_pairs"])
def test_dataset_masks_inputs_keeps_targets_and_handles_pairs(mode):
    source = make_source()
    base = PipelineSettings(cylindrical=False, crop_size=(48, 96), min_pairs=50,
                            mixed_transforms=("resized_crop", "flip_horizontal"))
    plain = PretrainDataset(source, base, seed=3)
    masked = PretrainDataset(source, PipelineSettings(**{**base.__dict__, "mim_mask": mode}), seed=3)
    for index in range(2):
        a, b = plain[index], masked[index]
        assert a.target_images is None and b.target_images is not None
        assert torch.equal(b.target_images, a.images)  # same crops: masking draws come after them
        pixel_mask = (b.images == 0).all(dim=1)  # (C, h, w); the source images have no black pixel
        assert pixel_mask.any()
        assert torch.equal(b.images, a.images.masked_fill(pixel_mask.unsqueeze(1), 0))
        on_masked = pixel_mask[a.pairings[:, 1], a.pairings[:, 2], a.pairings[:, 3]]
        if mode == "patch16_drop_pairs":
            assert torch.equal(b.pairings, a.pairings[~on_masked]) and on_masked.any()
        else:
            assert torch.equal(b.pairings, a.pairings)
    batch = collate([masked[0], masked[1]])
    assert batch.target_images.shape == batch.images.shape == (12, 3, 48, 96)
    assert collate([plain[0]]).target_images is None
    with pytest.raises(ValueError, match="MIM target images"):
        collate([plain[0], masked[1]])


def test_no_masking_in_validation_and_unknown_modes_are_named():
    source = make_source(n_items=1)
    settings = PipelineSettings(crop_size=(48, 96), min_pairs=50, mim_mask="pixel_keep_pairs")
    assert PretrainDataset(source, settings, train=False)[0].target_images is None
    with pytest.raises(ValueError, match="unknown mim_mask 'patch8'"):
        PretrainDataset(source, PipelineSettings(mim_mask="patch8"))
