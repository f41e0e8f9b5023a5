"""Point selection (per-class quota over camera-seen labelled points) and paired feature extraction (on the
test device, CMCR_TEST_DEVICE; the references on the CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.data.segmentation_dataset import (
    SegmentationDataset,
    SegmentationSettings,
    collate_segmentation,
)
from cmcr_core.data.transforms import PairedSample, crop_and_flip_cameras
from cmcr_core.eval.features import extract_features, select_points
from cmcr_core.runs.pretrain import load_pretraining_run
from cmcr_core.sparse import SparseTensor


@pytest.fixture(scope="module")
def val(prepared_world: Path) -> PreparedDataset:
    return PreparedDataset(prepared_world, "mini_val")


def _candidates(source) -> dict[tuple[int, int], tuple[int, tuple[int, int, int]]]:
    """Brute force: (scan, point) → (class, first pairing [camera, row, col]) of every candidate."""
    out = {}
    for s in range(len(source)):
        item = source[s]
        for row in np.asarray(item.pairings):
            point = int(row[0])
            label = int(item.labels[point])
            if 1 <= label <= 16 and (s, point) not in out:
                out[(s, point)] = (label - 1, (int(row[1]), int(row[2]), int(row[3])))
    return out


def test_selection_is_a_per_class_quota_of_candidates(val: PreparedDataset) -> None:
    candidates = _candidates(val)
    available = np.bincount([c for c, _ in candidates.values()], minlength=16)
    quota = 40
    sel = select_points(val, per_class=quota, seed=5, split="mini_val")
    np.testing.assert_array_equal(sel.available, available)
    np.testing.assert_array_equal(sel.counts, np.minimum(available, quota))
    keys = list(zip(sel.scan.tolist(), sel.point.tolist(), strict=True))
    assert len(set(keys)) == len(keys) and keys == sorted(keys)
    for key, label, pairing in zip(keys, sel.label.tolist(), sel.pairing.tolist(), strict=True):
        assert candidates[key] == (label, tuple(pairing))
    assert set(sel.below_quota) == {sel.class_names[c] for c in range(16) if available[c] < quota}
    again = select_points(val, per_class=quota, seed=5)
    np.testing.assert_array_equal(again.point, sel.point)
    other = select_points(val, per_class=quota, seed=6)
    assert not np.array_equal(other.point, sel.point)


def test_a_quota_above_every_class_takes_all_candidates(val: PreparedDataset) -> None:
    candidates = _candidates(val)
    sel = select_points(val, per_class=10**7, seed=0)
    assert set(zip(sel.scan.tolist(), sel.point.tolist(), strict=True)) == set(candidates)
    assert len(sel.below_quota) == 16


class _Scan:
    def __init__(self, labels: np.ndarray, pairings: np.ndarray) -> None:
        self.token, self.labels, self.pairings = "scan", labels, pairings


def test_keys_are_uniform_over_candidates() -> None:
    # In-memory scans: 3 scans, points of class 0 (coarse id 1) seen once or twice, some unseen or ignored.
    rng = np.random.default_rng(0)
    scans, pool = [], []
    for s in range(3):
        labels = rng.choice([0, 1, 1, 1], size=60)
        seen = rng.choice(60, size=40, replace=False)
        pairings = np.column_stack([np.r_[seen, seen[:10]], rng.integers(0, 6, 50), rng.integers(0, 9, 50),
                                    rng.integers(0, 9, 50)])
        scans.append(_Scan(labels, pairings))
        pool += [(s, int(p)) for p in np.unique(seen) if labels[p] == 1]
    quota, seeds = len(pool) // 4, 400
    hits = dict.fromkeys(pool, 0)
    for seed in range(seeds):
        sel = select_points(scans, per_class=quota, seed=seed)
        assert sel.counts[0] == quota and sel.available[0] == len(pool)
        for key in zip(sel.scan.tolist(), sel.point.tolist(), strict=True):
            hits[key] += 1
    expected = seeds * quota / len(pool)
    # Every candidate is chosen about equally often: within 6 binomial standard deviations.
    spread = np.sqrt(expected * (1 - quota / len(pool)))
    assert max(abs(h - expected) for h in hits.values()) < 6 * spread


def _student_reference(run, source, sel) -> np.ndarray:
    d = run.recipe.data
    settings = SegmentationSettings(voxel_size=d.voxel_size, cylindrical=d.cylindrical,
                                    intensity_scale=d.intensity_scale, cloud_transforms=())
    data = SegmentationDataset(source, settings, train=False)
    rows = []
    with torch.no_grad():
        for s in np.unique(sel.scan):
            batch = collate_segmentation([data[int(s)]])
            feats = run.method.student(SparseTensor(batch.feats, batch.coords)).features
            rows.append(feats[batch.point_to_voxel[torch.from_numpy(sel.point[sel.scan == s])]].numpy())
    return np.concatenate(rows)


@pytest.mark.parametrize("method", ["relational", "ppkt"])
def test_extracted_features_equal_independent_references(runs, val: PreparedDataset, method: str, device,
                                                         tolerance) -> None:
    run = load_pretraining_run(runs[method])
    sel = select_points(val, per_class=15, seed=0)
    on_device = load_pretraining_run(runs[method], device=device)
    student, teacher = extract_features(on_device, val, sel, teacher_input_size="crop", device=device)
    atol = tolerance.on(device, 1e-5, tolerance(torch.float32))
    np.testing.assert_allclose(student, _student_reference(run, val, sel), atol=atol)
    assert np.allclose(np.linalg.norm(student, axis=1), 1, atol=1e-5)

    # Teacher side: the validation view of the pretraining pipeline (whole image resized to the crop size),
    # then the method's full-resolution 2D features at the mapped pixels.
    expected = []
    with torch.no_grad():
        for s in np.unique(sel.scan):
            item = val[int(s)]
            mine = sel.scan == s
            pairs = np.column_stack([sel.point[mine], sel.pairing[mine]])
            sample = PairedSample(np.asarray(item.points), np.asarray(item.images), pairs, None)
            view = crop_and_flip_cameras(sample, np.random.default_rng(0), out_size=run.recipe.data.crop_size,
                                         random_crop=False, flip=False)
            images = view.images.float() / 255
            if method == "ppkt":
                maps = run.method.decoder(run.method.teacher(images), output_size=tuple(images.shape[-2:]))
            else:
                maps = F.interpolate(run.method.teacher(images), size=images.shape[-2:], mode="bilinear",
                                     align_corners=True)
            maps = F.normalize(maps, dim=1)
            order = {int(p): i for i, p in enumerate(view.pairings[:, 0])}
            for point in sel.point[mine]:
                _, camera, row, col = view.pairings[order[int(point)]]
                expected.append(maps[camera, :, row, col].numpy())
    np.testing.assert_allclose(teacher, np.stack(expected), atol=atol)
