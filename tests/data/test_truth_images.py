"""The truth-image dataset: scenes of frames, coarse targets from the PNGs, consistent crops and flips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmcr_core.data.labels import COARSE_NAME_TO_INDEX, FINE_CLASS_NAMES, FINE_TO_COARSE_NAME
from cmcr_core.data.truth_images import (
    TruthImageDataset,
    coarse_pixel_counts,
    collate_truth,
    read_truth_world,
    split_holdout,
)


def naive_coarse(png: Path) -> np.ndarray:
    """Fine PNG → coarse ids through the class NAMES (independent of the lookup table)."""
    fine = np.asarray(Image.open(png))
    out = np.zeros(fine.shape, dtype=np.int64)
    for value in np.unique(fine):
        out[fine == value] = COARSE_NAME_TO_INDEX[FINE_TO_COARSE_NAME[FINE_CLASS_NAMES[value]]]
    return out


def test_scenes_of_frames_match_their_logs(synthetic_world: Path):
    # Independent route: one log per scene, and every file name starts with its log's name.
    tables = synthetic_world / "v1.0-mini"
    logs = {r["token"]: r["logfile"] for r in json.loads((tables / "log.json").read_text())}
    scenes = json.loads((tables / "scene.json").read_text())
    log_of_scene = {s["name"]: logs[s["log_token"]] for s in scenes}
    world = read_truth_world(synthetic_world)
    assert len(world.frames) == 60 and world.image_size == (320, 180)
    for frame in world.frames:
        assert frame.image.name.split("__")[0] == log_of_scene[frame.scene]
        assert frame.image.name.split("__")[1] == frame.channel and frame.image.is_file()
    assert world.scenes == tuple(s["name"] for s in scenes)
    assert world.scene_tokens == tuple(s["token"] for s in scenes)
    assert [sum(f.scene == name for f in world.frames) for name in world.scenes] == [12] * 5


def test_holdout_is_the_last_scenes(synthetic_world: Path):
    world = read_truth_world(synthetic_world)
    train, held = split_holdout(world, 2)
    assert held == world.scenes[-2:] and train == world.scenes[:-2]
    assert not set(f.scene for f in world.frames_of(train)) & set(held)
    with pytest.raises(ValueError, match=r"data.holdout_scenes=5.*5 scenes"):
        split_holdout(world, 5)


def test_whole_frame_targets_equal_the_coarse_mapping_of_the_pngs(synthetic_world: Path):
    world = read_truth_world(synthetic_world)
    frames = world.frames[::7]
    dataset = TruthImageDataset(frames, train=False)
    for index, frame in enumerate(frames):
        sample = dataset[index]
        np.testing.assert_array_equal(sample.target.numpy(), naive_coarse(frame.truth))
        np.testing.assert_array_equal(sample.image.permute(1, 2, 0).numpy(),
                                      np.asarray(Image.open(frame.image).convert("RGB")))
    counts = coarse_pixel_counts(frames)
    expected = np.bincount(np.concatenate([naive_coarse(f.truth).ravel() for f in frames]), minlength=17)
    np.testing.assert_array_equal(counts, expected)


def _find_window(full: np.ndarray, crop: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) where ``crop`` equals a window of ``full`` (exhaustive search)."""
    h, w = crop.shape[:2]
    rows = np.lib.stride_tricks.sliding_window_view(full, crop.shape[1:], axis=(1, 2))[:, :, 0]
    first_row = (rows == crop[0]).all(axis=(-2, -1))  # (H, W - w + 1): where the crop's first row fits
    return [(int(t), int(left)) for t, left in zip(*np.nonzero(first_row), strict=True)
            if t + h <= full.shape[0] and np.array_equal(full[t:t + h, left:left + w], crop)]


def test_random_crops_and_flips_keep_image_and_truth_aligned(synthetic_world: Path):
    world = read_truth_world(synthetic_world)
    frames = world.frames[:6]
    dataset = TruthImageDataset(frames, crop_size=(40, 64), flip=True, seed=3)
    flips = 0
    for index, frame in enumerate(frames):
        sample = dataset[index]
        assert sample.image.shape == (3, 40, 64) and sample.target.shape == (40, 64)
        image = sample.image.permute(1, 2, 0).numpy()
        full_image = np.asarray(Image.open(frame.image).convert("RGB"))
        full_target = naive_coarse(frame.truth)
        windows = _find_window(full_image, image)
        flipped = not windows
        if flipped:
            windows = _find_window(full_image, image[:, ::-1])
            flips += 1
        assert windows, "the crop is not a window of the image (nor of its mirror)"
        top, left = windows[0]
        target = full_target[top:top + 40, left:left + 64]
        np.testing.assert_array_equal(sample.target.numpy(), target[:, ::-1] if flipped else target)
    assert 0 < flips < len(frames)  # both cases were exercised with this seed


def test_draws_depend_on_seed_epoch_and_index_only(synthetic_world: Path):
    frames = read_truth_world(synthetic_world).frames[:4]
    a = TruthImageDataset(frames, crop_size=(40, 64), flip=True, seed=1)
    b = TruthImageDataset(frames, crop_size=(40, 64), flip=True, seed=1)
    b[3]  # another item first: no shared generator state
    assert all(np.array_equal(a[i].image, b[i].image) for i in range(4))
    b.set_epoch(1)
    assert not all(np.array_equal(a[i].image, b[i].image) for i in range(4))
    batch = collate_truth([a[0], a[1]])
    assert batch.images.shape == (2, 3, 40, 64) and batch.targets.dtype == a[0].target.dtype
    assert batch.batch_size == 2


def test_bad_inputs_are_named(synthetic_world: Path, tmp_path: Path):
    frames = read_truth_world(synthetic_world).frames[:1]
    with pytest.raises(ValueError, match=r"data.crop_size \(400, 64\).*exceeds the image size \(180, 320\)"):
        TruthImageDataset(frames, crop_size=(400, 64))[0]
    with pytest.raises(FileNotFoundError, match="cmcr prepare synthetic"):
        read_truth_world(tmp_path)
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "index.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ValueError, match=r"index.json: format 'other/1'"):
        read_truth_world(tmp_path)
