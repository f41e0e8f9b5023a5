"""The typed pretraining batch and its collation (the collated batch per GPU of SLidR's and CMCR's code).

Every sample contributes its voxels, its cameras and its pairings; `collate` offsets voxel indices, image
indices and superpixel ids so that they are unique in the batch. Images stay uint8 until they are on the
device (normalising there avoids the reference loader's float64 copies, D17 of docs/differences.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from cmcr_core.ops.pixels import offset_superpixel_ids


@dataclass(frozen=True)
class SampleTensors:
    """One augmented, voxelised sample, as produced by the pretraining dataset.

    coords:          (V, 3) int32 voxel coordinates (no batch column yet).
    feats:           (V, C) float32 voxel features.
    points:          (N, 4) float32 augmented points (x, y, z, intensity), every point of the sweep.
    point_to_voxel:  (N,) int64 voxel of every point (the inverse map).
    images:          (K, 3, h, w) uint8 camera crops (K cameras).
    pairings:        (P, 4) int64 [voxel_index, camera_index, row, col] in crop pixels.
    superpixels:     (K, h, w) int64 ids or None.
    token:           sample token.
    extras:          method-specific tensors (e.g. occupancy queries), collated by concatenation.
    target_images:   (K, 3, h, w) uint8 unmasked crops when `images` were masked (CMCR MIM), else None.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    points: torch.Tensor
    point_to_voxel: torch.Tensor
    images: torch.Tensor
    pairings: torch.Tensor
    superpixels: torch.Tensor | None
    token: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    target_images: torch.Tensor | None = None


@dataclass(frozen=True)
class Batch:
    """B samples collated for one training step.

    coords:           (ΣV, 4) int32 [batch_index, c0, c1, c2] voxel coordinates.
    feats:            (ΣV, C) float32 voxel features.
    images:           (ΣK, 3, h, w) uint8 camera crops; image i belongs to sample `image_batch[i]`.
    image_batch:      (ΣK,) int64 sample index of every image.
    pairing_points:   (P,) int64 global voxel index of every pair.
    pairing_images:   (P, 3) int64 [global image index, row, col].
    batch_n_pairings: (B,) int64 pairs per sample.
    points:           (ΣN, 4) float32 augmented points of every sample.
    point_batch:      (ΣN,) int64 sample index of every point.
    point_to_voxel:   (ΣN,) int64 global voxel index of every point.
    superpixels:      (ΣK, h, w) int64 ids unique in the batch, or None.
    tokens:           sample tokens.
    extras:           method-specific tensors, concatenated over samples (plus `<name>_batch` indices).
    target_images:    (ΣK, 3, h, w) uint8 unmasked crops (CMCR MIM target; `images` are then the masked
                      network input), or None when nothing was masked.
    skipped_samples:  damaged samples the data pipeline replaced in this batch (`data.skip_damaged`).
    num_superpixels:  largest superpixel id + 1, counted on the CPU by `collate` (so the superpixel loss
                      need not wait for the GPU to size its buffers), or None without superpixels.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    images: torch.Tensor
    image_batch: torch.Tensor
    pairing_points: torch.Tensor
    pairing_images: torch.Tensor
    batch_n_pairings: torch.Tensor
    points: torch.Tensor
    point_batch: torch.Tensor
    point_to_voxel: torch.Tensor
    superpixels: torch.Tensor | None
    tokens: tuple[str, ...]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    target_images: torch.Tensor | None = None
    skipped_samples: int = 0
    num_superpixels: int | None = None

    @property
    def batch_size(self) -> int:
        return len(self.tokens)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on `device`."""

        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device, non_blocking=non_blocking)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def pin_memory(self) -> Batch:
        """Page-locked copy for faster host-to-GPU transfers (called by the DataLoader)."""

        def pin(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.pin_memory()
            if isinstance(value, dict):
                return {k: pin(v) for k, v in value.items()}
            return value

        return replace(self, **{f.name: pin(getattr(self, f.name)) for f in fields(self)})


def collate(samples: list[SampleTensors]) -> Batch:
    """Collate samples into a `Batch` (any batch size ≥ 1)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    coords, pair_points, pair_images, n_pairs, point_batch, point_voxel, image_batch = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    voxel_offset = image_offset = 0
    for b, s in enumerate(samples):
        n_voxels, n_images = len(s.coords), len(s.images)
        coords.append(torch.cat([torch.full((n_voxels, 1), b, dtype=torch.int32), s.coords.int()], 1))
        pair_points.append(s.pairings[:, 0] + voxel_offset)
        pair_images.append(
            torch.stack([s.pairings[:, 1] + image_offset, s.pairings[:, 2], s.pairings[:, 3]], 1)
        )
        n_pairs.append(len(s.pairings))
        point_batch.append(torch.full((len(s.points),), b, dtype=torch.int64))
        point_voxel.append(s.point_to_voxel + voxel_offset)
        image_batch.append(torch.full((n_images,), b, dtype=torch.int64))
        voxel_offset += n_voxels
        image_offset += n_images
    has_spx = [s.superpixels is not None for s in samples]
    if any(has_spx) and not all(has_spx):
        raise ValueError("either every sample of a batch has superpixels or none has")
    has_target = [s.target_images is not None for s in samples]
    if any(has_target) and not all(has_target):
        raise ValueError("either every sample of a batch has MIM target images or none has")
    superpixels, num_superpixels = None, None
    if all(has_spx):
        superpixels = offset_superpixel_ids(torch.stack([m for s in samples for m in s.superpixels]))
        num_superpixels = int(superpixels.max()) + 1 if superpixels.numel() else 0
    extras: dict[str, torch.Tensor] = {}
    for name in samples[0].extras:
        parts = [s.extras[name] for s in samples]
        extras[name] = torch.cat(parts)
        extras[f"{name}_batch"] = torch.cat(
            [torch.full((len(p),), b, dtype=torch.int64) for b, p in enumerate(parts)]
        )
    return Batch(
        coords=torch.cat(coords),
        feats=torch.cat([s.feats for s in samples]),
        images=torch.cat([s.images for s in samples]),
        image_batch=torch.cat(image_batch),
        pairing_points=torch.cat(pair_points).long(),
        pairing_images=torch.cat(pair_images).long(),
        batch_n_pairings=torch.tensor(n_pairs, dtype=torch.int64),
        points=torch.cat([s.points for s in samples]),
        point_batch=torch.cat(point_batch),
        point_to_voxel=torch.cat(point_voxel).long(),
        superpixels=superpixels,
        tokens=tuple(s.token for s in samples),
        extras=extras,
        target_images=torch.cat([s.target_images for s in samples]) if all(has_target) else None,
        num_superpixels=num_superpixels,
    )
