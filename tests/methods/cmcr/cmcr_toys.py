"""Small CMCR models and batches for fast CPU tests, plus a sub-sampling view of a prepared world."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cmcr_core.data.batch import Batch, SampleTensors, collate
from cmcr_core.data.occupancy import sample_occupancy_queries
from cmcr_core.losses.codebook import UnifiedCodebook
from cmcr_core.methods.cmcr import CMCR
from cmcr_core.models.cmcr_heads import MIMDecoder, OccupancyMLP
from cmcr_core.models.image_decoders import build_image_decoder
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.models.teacher import build_teacher
from cmcr_core.sparse.voxelize import voxelize

DIM = 16
IMAGE_HW = (64, 96)


def tiny_cmcr(seed: int = 0, **weights: float) -> CMCR:
    """A CMCR with a narrow MinkUNet, a random ResNet-18 teacher and a 40-code codebook (all losses on)."""
    torch.manual_seed(seed)
    student = MinkUNet34C(1, DIM, normalize_output=True, planes=(8,) * 8, layers=(1,) * 8, init_dim=8)
    teacher = build_teacher("resnet18")
    decoder = build_image_decoder("ppkt", teacher.out_channels, DIM, upsample=teacher.output_stride)
    specific = build_image_decoder("cmcr_specific", teacher.out_channels, DIM, upsample=teacher.output_stride)
    kwargs: dict[str, Any] = {"num_matches": 64, "seed": seed, **weights}
    return CMCR(student, teacher, decoder, UnifiedCodebook(40, DIM, seed=seed), specific_decoder=specific,
                mim_decoder=MIMDecoder(DIM), occupancy_mlp=OccupancyMLP(DIM + 3), **kwargs)


def tiny_sample(rng: np.random.Generator, n_points: int = 500, n_images: int = 2) -> SampleTensors:
    """Random points in a 6 m box (distinct voxels), random images and pairs, CMCR occupancy queries."""
    xyz = rng.uniform([-3, -3, -1], [3, 3, 1], (n_points, 3))
    points = np.concatenate([xyz, rng.uniform(0, 255, (n_points, 1))], 1).astype(np.float32)
    points_t = torch.from_numpy(points)
    vox = voxelize(points_t, 0.1, False)
    n_pairs = 300
    pairings = torch.from_numpy(np.stack([
        vox.inverse[rng.integers(0, n_points, n_pairs)].numpy(),
        rng.integers(0, n_images, n_pairs),
        rng.integers(0, IMAGE_HW[0], n_pairs),
        rng.integers(0, IMAGE_HW[1], n_pairs),
    ], 1))
    images = torch.from_numpy(rng.integers(0, 256, (n_images, 3, *IMAGE_HW), dtype=np.uint8))
    return SampleTensors(
        coords=vox.coords.int(), feats=points_t[vox.representative, 3:4] / 255.0, points=points_t,
        point_to_voxel=vox.inverse, images=images, pairings=pairings, superpixels=None, token="t",
        extras={"occupancy_queries": torch.from_numpy(sample_occupancy_queries(points, rng, 96))},
        target_images=images.flip(-1),
    )


def tiny_batch(seed: int = 0, batch_size: int = 2) -> Batch:
    rng = np.random.default_rng(seed)
    return collate([tiny_sample(rng) for _ in range(batch_size)])


@dataclass
class SubsampledItem:
    token: str
    points: np.ndarray
    pairings: np.ndarray
    images: Any
    superpixels: Any


class Subsampled:
    """Every `step`-th point of each prepared sample (pairs of dropped points removed): CPU-fast runs."""

    def __init__(self, source: Any, step: int) -> None:
        self.source, self.step = source, step

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> SubsampledItem:
        item = self.source[index]
        keep = np.arange(0, len(item.points), self.step)
        pairs = item.pairings[item.pairings[:, 0] % self.step == 0].copy()
        pairs[:, 0] //= self.step
        return SubsampledItem(item.token, item.points[keep], pairs, item.images, None)
