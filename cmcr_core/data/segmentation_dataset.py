"""Labelled, voxelised LiDAR scans for semantic-segmentation fine-tuning, probing and evaluation.

The downstream protocol of SLidR and CMCR: training applies the cloud transforms (rotation about z, axis
flips) with a generator seeded from `(seed, epoch, index)`; evaluation applies none. Points are
floor-quantised (cylindrical or cartesian); the feature of a voxel is the scaled intensity of its
representative point (the first point of the voxel in input order) and so is its label (no majority vote).
Every sample keeps the inverse map point -> voxel and every point's label, so evaluation scores all points of
the scan.

Any sequence of items with `points` (N, 4) float32, `labels` (N,) ids (0 = ignore), `token` and
`lidar_token` is a source: prepared nuScenes (`PreparedDataset`) and prepared SemanticKITTI alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np
import torch

from cmcr_core.data import transforms as T
from cmcr_core.sparse.voxelize import voxelize

__all__ = [
    "LabelledScan",
    "SegmentationBatch",
    "SegmentationDataset",
    "SegmentationSample",
    "SegmentationSettings",
    "Subset",
    "collate_segmentation",
]


class LabelledScan(Protocol):
    """What the dataset reads from one source item."""

    token: str
    lidar_token: str
    points: np.ndarray
    labels: np.ndarray | None


@dataclass(frozen=True)
class SegmentationSettings:
    """Voxelisation and input features (from a recipe's `data` section).

    feature = intensity * intensity_scale + intensity_offset: SLidR/PPKT feed raw nuScenes intensity
    (scale 1), CMCR intensity / 255; SemanticKITTI feeds reflectance + 1 (offset 1).
    """

    voxel_size: float = 0.1
    cylindrical: bool = True
    intensity_scale: float = 1.0
    intensity_offset: float = 0.0
    cloud_transforms: tuple[str, ...] = ("rotation", "flip_axis")


@dataclass(frozen=True)
class SegmentationSample:
    """One voxelised scan.

    coords:         (V, 3) int32 voxel coordinates.
    feats:          (V, 1) float32 voxel features.
    voxel_labels:   (V,) int64 label of each voxel's representative point (0 = ignore).
    point_to_voxel: (N,) int64 voxel of every point of the scan.
    point_labels:   (N,) int64 label of every point.
    token, lidar_token: identifiers of the scan.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    voxel_labels: torch.Tensor
    point_to_voxel: torch.Tensor
    point_labels: torch.Tensor
    token: str
    lidar_token: str


@dataclass(frozen=True)
class SegmentationBatch:
    """B scans collated.

    coords:         (ΣV, 4) int32 [batch_index, c0, c1, c2].
    feats:          (ΣV, 1) float32.
    voxel_labels:   (ΣV,) int64.
    point_to_voxel: (ΣN,) int64 global voxel index of every point.
    point_labels:   (ΣN,) int64.
    point_offsets:  (B + 1,) int64: scan b owns points point_offsets[b]:point_offsets[b + 1].
    tokens, lidar_tokens: per scan.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    voxel_labels: torch.Tensor
    point_to_voxel: torch.Tensor
    point_labels: torch.Tensor
    point_offsets: torch.Tensor
    tokens: tuple[str, ...]
    lidar_tokens: tuple[str, ...]

    @property
    def batch_size(self) -> int:
        return len(self.tokens)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SegmentationBatch:
        """A copy with every tensor on `device` (point_offsets stay on the CPU: they index host arrays)."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and f.name != "point_offsets":
                moved[f.name] = value.to(device, non_blocking=non_blocking)
        return replace(self, **moved)


class Subset:
    """Items `indices` of a source sequence (keeps the source's item type)."""

    def __init__(self, source: Sequence[Any], indices: Sequence[int]) -> None:
        self.source = source
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.source[self.indices[i]]


class SegmentationDataset(torch.utils.data.Dataset):
    """Map-style dataset of voxelised labelled scans.

    Args:
        source: items with points, labels, token, lidar_token.
        settings: voxelisation and feature settings.
        seed: base seed of the training augmentations.
        train: apply the cloud transforms (evaluation: False, points untouched).
    """

    def __init__(self, source: Sequence[LabelledScan], settings: SegmentationSettings, seed: int = 0,
                 train: bool = True) -> None:
        self.source = source
        self.settings = settings
        self.seed = seed
        self.train = train
        self.epoch = 0
        # Fail now on a bad transform name rather than in a worker process.
        T.cloud_transform(settings.cloud_transforms, np.random.default_rng(0))

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws `__getitem__` makes."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> SegmentationSample:
        s = self.settings
        item = self.source[index]
        labels = item.labels
        if labels is None:
            raise ValueError(f"scan {item.token} has no segmentation labels (prepared without lidarseg?)")
        points = np.asarray(item.points, dtype=np.float32)
        if len(labels) != len(points):
            raise ValueError(f"scan {item.token}: {len(points)} points but {len(labels)} labels")
        if self.train and s.cloud_transforms:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            points = T.apply_cloud_matrix(points, T.cloud_transform(s.cloud_transforms, rng))
        points_t = torch.from_numpy(np.ascontiguousarray(points))
        vox = voxelize(points_t, s.voxel_size, s.cylindrical)
        point_labels = torch.from_numpy(np.asarray(labels).astype(np.int64))
        feats = points_t[vox.representative, 3:4] * s.intensity_scale + s.intensity_offset
        return SegmentationSample(
            coords=vox.coords.to(torch.int32),
            feats=feats.float(),
            voxel_labels=point_labels[vox.representative],
            point_to_voxel=vox.inverse,
            point_labels=point_labels,
            token=str(item.token),
            lidar_token=str(item.lidar_token),
        )


def collate_segmentation(samples: Sequence[SegmentationSample]) -> SegmentationBatch:
    """Concatenate samples; voxel indices of the inverse maps are offset to be global in the batch."""
    if not samples:
        raise ValueError("collate_segmentation needs at least one sample")
    coords, voxel_offset, inverse = [], 0, []
    for b, s in enumerate(samples):
        index = torch.full((s.coords.shape[0], 1), b, dtype=torch.int32)
        coords.append(torch.cat([index, s.coords], dim=1))
        inverse.append(s.point_to_voxel + voxel_offset)
        voxel_offset += s.coords.shape[0]
    counts = torch.tensor([0] + [s.point_labels.numel() for s in samples], dtype=torch.int64)
    return SegmentationBatch(
        coords=torch.cat(coords),
        feats=torch.cat([s.feats for s in samples]),
        voxel_labels=torch.cat([s.voxel_labels for s in samples]),
        point_to_voxel=torch.cat(inverse),
        point_labels=torch.cat([s.point_labels for s in samples]),
        point_offsets=counts.cumsum(0),
        tokens=tuple(s.token for s in samples),
        lidar_tokens=tuple(s.lidar_token for s in samples),
    )
