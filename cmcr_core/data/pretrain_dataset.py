"""The pretraining dataset: a prepared sample -> augmented, voxelised `SampleTensors` (METHODS.md §2).

Order of operations (PROTOCOLS.md §4-§5): cloud transforms on the points, DropCuboids, ResizedCrop and
FlipHorizontal per camera, then voxelisation; pairings are re-indexed from points to voxels
(`pairing_voxel = inverse[pairing_point]`). Every random choice of item i in epoch e comes from
`numpy.random.default_rng([seed, e, i])`, so a seed reproduces a batch whatever the worker layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from cmcr_core.data import transforms as T
from cmcr_core.data.batch import SampleTensors
from cmcr_core.sparse.voxelize import voxelize


class PairedSource(Protocol):
    """What the dataset needs from one prepared sample (`cmcr_core.data.PreparedDataset` items)."""

    token: str
    points: np.ndarray
    pairings: np.ndarray
    images: Any
    superpixels: Any


@dataclass(frozen=True)
class PipelineSettings:
    """Explicit settings of the pretraining pipeline (built from the recipe's `data` section)."""

    voxel_size: float = 0.1
    cylindrical: bool = True
    intensity_scale: float = 1.0
    crop_size: tuple[int, int] = (224, 416)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (14 / 9, 17 / 9)
    cloud_transforms: tuple[str, ...] = ("rotation", "flip_axis")
    mixed_transforms: tuple[str, ...] = ("drop_cuboids", "resized_crop", "flip_horizontal")
    min_pairs: int = 1024
    superpixels: bool = False  # load and crop superpixels (SLidR); skipped otherwise (defect D16)


KNOWN_MIXED = ("drop_cuboids", "resized_crop", "flip_horizontal")

# A hook that adds method-specific tensors (e.g. CMCR occupancy queries) from the raw sensor-frame sample.
# It returns arrays whose first three columns are xyz in the LiDAR frame: the dataset moves them with the
# same cloud transform as the points.
ExtrasHook = Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]


class PretrainDataset(torch.utils.data.Dataset):
    """Map-style dataset of augmented, voxelised samples for pretraining."""

    def __init__(
        self,
        source: Sequence[PairedSource],
        settings: PipelineSettings,
        seed: int = 0,
        train: bool = True,
        extras_hook: ExtrasHook | None = None,
    ) -> None:
        unknown = [name for name in settings.mixed_transforms if name not in KNOWN_MIXED]
        if unknown:
            raise ValueError(f"unknown mixed transform(s) {unknown} (known: {', '.join(KNOWN_MIXED)})")
        self.source = source
        self.settings = settings
        self.seed = seed
        self.train = train
        self.extras_hook = extras_hook
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws `__getitem__` makes (called by the training loop)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> SampleTensors:
        s = self.settings
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = self.source[index]
        points = np.asarray(item.points, dtype=np.float32)
        images = np.stack(item.images) if isinstance(item.images, list) else np.asarray(item.images)
        superpixels = None
        if s.superpixels:
            if item.superpixels is None:
                raise ValueError(
                    f"sample {item.token} has no superpixels: prepare the data with --superpixels slic"
                )
            superpixels = np.stack(item.superpixels).astype(np.int64)
        extras = self.extras_hook(points, rng) if self.extras_hook is not None else {}

        if self.train:
            matrix = T.cloud_transform(s.cloud_transforms, rng)
            points = T.apply_cloud_matrix(points, matrix)
            extras = {name: T.apply_cloud_matrix(value, matrix) for name, value in extras.items()}
        sample = T.PairedSample(points, images, np.asarray(item.pairings, dtype=np.int64), superpixels)
        if self.train and "drop_cuboids" in s.mixed_transforms:
            sample = T.drop_cuboids(sample, rng, s.min_pairs)
        cameras = T.crop_and_flip_cameras(
            sample,
            rng,
            out_size=s.crop_size,
            scale=s.crop_scale,
            ratio=s.crop_ratio,
            min_pairs=s.min_pairs,
            random_crop=self.train and "resized_crop" in s.mixed_transforms,
            flip=self.train and "flip_horizontal" in s.mixed_transforms,
        )

        points_t = torch.from_numpy(np.ascontiguousarray(sample.points))
        vox = voxelize(points_t, s.voxel_size, s.cylindrical)
        feats = points_t[vox.representative, 3:4] * s.intensity_scale
        pairings = torch.from_numpy(cameras.pairings)
        pairings[:, 0] = vox.inverse[pairings[:, 0]]
        return SampleTensors(
            coords=vox.coords.int(),
            feats=feats.float(),
            points=points_t,
            point_to_voxel=vox.inverse,
            images=cameras.images,
            pairings=pairings,
            superpixels=None if cameras.superpixels is None else torch.from_numpy(cameras.superpixels),
            token=str(item.token),
            extras={name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in extras.items()},
        )
