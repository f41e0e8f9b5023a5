"""Voxelised labelled scans: representative-point labels, inverse maps, features, transforms, collation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cmcr_core.data.segmentation_dataset import (
    SegmentationDataset,
    SegmentationSettings,
    collate_segmentation,
)


@dataclass
class Scan:
    token: str
    lidar_token: str
    points: np.ndarray
    labels: np.ndarray


def make_scans(n_scans: int = 2, n_points: int = 400) -> list[Scan]:
    rng = np.random.default_rng(0)
    scans = []
    for i in range(n_scans):
        xyz = rng.uniform(-3, 3, (n_points, 3)).astype(np.float32)
        xyz[n_points // 2:] = xyz[: n_points - n_points // 2] + 0.01  # many points share voxels
        points = np.column_stack([xyz, rng.integers(0, 256, n_points)]).astype(np.float32)
        scans.append(Scan(f"s{i}", f"l{i}", points, rng.integers(0, 17, n_points).astype(np.uint8)))
    return scans


def naive_voxels(points: np.ndarray, size: float, cylindrical: bool) -> dict[tuple[int, int, int], int]:
    """Voxel key -> first point index, by a python loop over floor-quantised coordinates."""
    first: dict[tuple[int, int, int], int] = {}
    for i, (x, y, z) in enumerate(points[:, :3].astype(np.float64)):
        if cylindrical:
            q = (math.hypot(x, y) / size, math.degrees(math.atan2(y, x)), z / size)
        else:
            q = (x / size, y / size, z / size)
        first.setdefault(tuple(math.floor(v) for v in q), i)
    return first


def test_voxel_label_is_the_label_of_the_first_point_and_inverse_covers_all_points() -> None:
    scans = make_scans()
    for cylindrical in (True, False):
        settings = SegmentationSettings(voxel_size=0.25, cylindrical=cylindrical, intensity_scale=0.5,
                                        intensity_offset=1.0)
        sample = SegmentationDataset(scans, settings, train=False)[0]
        points, labels = scans[0].points, scans[0].labels
        first = naive_voxels(points, 0.25, cylindrical)
        keys = [tuple(c) for c in sample.coords.tolist()]
        assert sorted(keys) == sorted(first)
        for v, key in enumerate(keys):
            assert sample.voxel_labels[v] == labels[first[key]]
            assert sample.feats[v, 0] == np.float32(points[first[key], 3] * 0.5 + 1.0)
        assert sample.point_labels.tolist() == labels.tolist()
        for i in range(len(points)):  # every point maps to the voxel whose first point shares its key
            key = keys[int(sample.point_to_voxel[i])]
            assert first[key] <= i


def test_training_transforms_are_seeded_per_item_and_epoch() -> None:
    scans = make_scans()
    settings = SegmentationSettings(voxel_size=0.25, cylindrical=True)
    train = SegmentationDataset(scans, settings, seed=3, train=True)
    a, b = train[0], SegmentationDataset(scans, settings, seed=3, train=True)[0]
    assert torch.equal(a.coords, b.coords)
    train.set_epoch(1)
    assert not torch.equal(train[0].coords, a.coords)
    plain = SegmentationDataset(scans, settings, train=False)[0]
    assert not torch.equal(a.coords, plain.coords)
    # Rotations about z and axis flips keep every point's radius and height bins (cylindrical voxels).
    per_point = a.coords[a.point_to_voxel][:, [0, 2]]
    assert torch.equal(per_point, plain.coords[plain.point_to_voxel][:, [0, 2]])
    assert a.point_labels.tolist() == plain.point_labels.tolist()


def test_collate_offsets_inverse_maps() -> None:
    scans = make_scans(3)
    dataset = SegmentationDataset(scans, SegmentationSettings(voxel_size=0.3), train=False)
    samples = [dataset[i] for i in range(3)]
    batch = collate_segmentation(samples)
    assert batch.coords.shape[1] == 4 and batch.batch_size == 3
    assert batch.point_offsets.tolist() == [0, 400, 800, 1200]
    for b, s in enumerate(samples):
        points = slice(b * 400, (b + 1) * 400)
        voxels = batch.point_to_voxel[points]
        assert torch.equal(batch.coords[voxels, 0], torch.full((400,), b, dtype=torch.int32))
        assert torch.equal(batch.coords[voxels, 1:], s.coords[s.point_to_voxel])
        assert torch.equal(batch.voxel_labels[voxels], s.voxel_labels[s.point_to_voxel])
