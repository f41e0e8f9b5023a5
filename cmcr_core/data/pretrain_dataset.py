"""The pretraining dataset: a prepared sample -> augmented, voxelised `SampleTensors` (docs/pipeline.md).

Order of operations (as SLidR's loader): cloud transforms on the points, DropCuboids, ResizedCrop and
FlipHorizontal per camera, then voxelisation; pairings are re-indexed from points to voxels
(`pairing_voxel = inverse[pairing_point]`). Every random choice of item i in epoch e comes from
`numpy.random.default_rng([seed, e, i])`, so a seed reproduces a batch whatever the worker layout.

CMCR's masked image modelling (docs/cmcr.md, `mim_mask`) masks cameras after ResizedCrop/flip on indices: the
mask is computed at crop resolution from the crop box (D17 of docs/differences.md: no full-resolution mask or
float copy), and the unmasked crop is kept as the reconstruction target.
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
    # load and crop superpixels (SLidR); skipped otherwise (D16, docs/differences.md)
    superpixels: bool = False
    mim_mask: str = "none"  # CMCR image masking: none, patch16_drop_pairs or pixel_keep_pairs (see mim_masks)
    mim_camera_prob: float = 0.5  # probability that a camera is masked at all
    mim_mask_prob: float = 0.5  # probability of each patch / pixel of a masked camera
    mim_patch_size: int = 16  # patch side in full-resolution pixels (patch16_drop_pairs)


KNOWN_MIXED = ("drop_cuboids", "resized_crop", "flip_horizontal")
KNOWN_MIM_MASKS = ("none", "patch16_drop_pairs", "pixel_keep_pairs")


def mim_masks(
    boxes: Sequence[tuple[int, int, int, int]],
    flipped: Sequence[bool],
    image_hw: tuple[int, int],
    out_size: tuple[int, int],
    mode: str,
    rng: np.random.Generator,
    camera_prob: float = 0.5,
    mask_prob: float = 0.5,
    patch_size: int = 16,
) -> np.ndarray:
    """(C, h, w) bool, True where a crop pixel is masked (docs/cmcr.md).

    Each camera is masked with probability `camera_prob` (one draw per camera, then its mask draws).
    "pixel_keep_pairs": every crop pixel independently with `mask_prob`. Deviation: the reference draws
    the per-pixel mask at full resolution; after an antialiased downscale that would be a uniform
    darkening, so the mask is drawn at crop resolution, where it blacks out pixels the network sees.
    "patch16_drop_pairs": `patch_size`-pixel patches of the full-resolution image, each with `mask_prob`
    (rows/columns past the last whole patch are never masked, e.g. the bottom 4 rows of a 900-row image);
    each crop pixel takes the patch of its centre's full-resolution position (the nearest mapping used
    for superpixels), after the camera's flip.
    """
    height, width = image_hw
    out_h, out_w = out_size
    masks = np.zeros((len(boxes), out_h, out_w), dtype=bool)
    for camera, (box, flip) in enumerate(zip(boxes, flipped, strict=True)):
        if rng.random() >= camera_prob:
            continue
        if mode == "pixel_keep_pairs":
            masks[camera] = rng.random((out_h, out_w)) < mask_prob
            continue
        grid = np.zeros((height // patch_size + 1, width // patch_size + 1), dtype=bool)  # +1: never masked
        grid[:-1, :-1] = rng.random((height // patch_size, width // patch_size)) < mask_prob
        top, left, h, w = box
        rows = top + np.floor((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64)
        cols = left + np.floor((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64)
        if flip:
            cols = cols[::-1]
        masks[camera] = grid[np.ix_(rows // patch_size, cols // patch_size)]
    return masks


def mask_cameras(
    cameras: T.CroppedCameras, masks: np.ndarray, drop_pairs: bool
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(masked images, unmasked target images, pairings): masked pixels set to 0 (black).

    `drop_pairs` removes the pairs whose crop pixel is masked, with a real boolean mask (the reference's
    integer "mask" turned them into copies of pairs #0/#1, D1 of docs/differences.md); otherwise every pair is
    kept.
    """
    target = cameras.images
    masked = target.masked_fill(torch.from_numpy(masks).unsqueeze(1), 0)
    pairings = cameras.pairings
    if drop_pairs and len(pairings):
        pairings = pairings[~masks[pairings[:, 1], pairings[:, 2], pairings[:, 3]]]
    return masked, target, pairings

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
        if settings.mim_mask not in KNOWN_MIM_MASKS:
            raise ValueError(f"unknown mim_mask {settings.mim_mask!r} (known: {', '.join(KNOWN_MIM_MASKS)})")
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

        images, target_images, cropped_pairings = cameras.images, None, cameras.pairings
        if self.train and s.mim_mask != "none":
            masks = mim_masks(
                cameras.boxes, cameras.flipped, sample.images.shape[1:3], s.crop_size, s.mim_mask, rng,
                s.mim_camera_prob, s.mim_mask_prob, s.mim_patch_size,
            )
            images, target_images, cropped_pairings = mask_cameras(
                cameras, masks, drop_pairs=s.mim_mask == "patch16_drop_pairs"
            )

        points_t = torch.from_numpy(np.ascontiguousarray(sample.points))
        vox = voxelize(points_t, s.voxel_size, s.cylindrical)
        feats = points_t[vox.representative, 3:4] * s.intensity_scale
        pairings = torch.from_numpy(cropped_pairings)
        pairings[:, 0] = vox.inverse[pairings[:, 0]]
        return SampleTensors(
            coords=vox.coords.int(),
            feats=feats.float(),
            points=points_t,
            point_to_voxel=vox.inverse,
            images=images,
            pairings=pairings,
            superpixels=None if cameras.superpixels is None else torch.from_numpy(cameras.superpixels),
            token=str(item.token),
            extras={name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in extras.items()},
            target_images=target_images,
        )
