"""A tiny MinkUNet34C segmentation method and its data, for the device suite and its DDP worker."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from cmcr_core.engine.method import Method
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.sparse import SparseTensor

TINY = {"planes": (8, 8, 16, 16, 16, 16, 8, 8), "layers": (1, 1, 1, 1, 1, 1, 1, 1), "init_dim": 8}
NUM_CLASSES = 3


class TinySegmentation(Method):
    """MinkUNet34C (tiny widths, the full topology) + per-voxel cross-entropy; returns {"ce": loss}.

    `last_output_dtype` records the dtype the network computed in (bfloat16 under CUDA autocast).
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.student = MinkUNet34C(1, NUM_CLASSES, **TINY)
        self.student.init_weights(generator)
        self.last_output_dtype: torch.dtype | None = None

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.student(SparseTensor(batch["feats"], batch["coords"])).features
        self.last_output_dtype = logits.dtype
        return {"ce": F.cross_entropy(logits.float(), batch["labels"])}


def toy_batch(seed: int, samples: int = 2, size: int = 12, density: float = 0.3) -> dict[str, Tensor]:
    """Random voxels of `samples` scans on a size^3 grid; label = which third of the height a voxel is in,
    feature = its height plus noise (learnable, so the loss falls)."""
    generator = torch.Generator().manual_seed(seed)
    occupied = torch.rand(samples, size, size, size, generator=generator) < density
    coords = torch.nonzero(occupied).to(torch.int32)
    coords[:, 1:] -= size // 2
    height = (coords[:, 3].float() + size // 2) / size
    feats = (height + 0.1 * torch.randn(len(coords), generator=generator)).unsqueeze(1)
    labels = (height * NUM_CLASSES).long().clamp_max(NUM_CLASSES - 1)
    return {"coords": coords, "feats": feats, "labels": labels}


def toy_batches(batches: list[dict[str, Tensor]]):
    """The training loop's `batches(epoch, start)` over a fixed list (one epoch = the list)."""

    def factory(epoch: int, start: int) -> Iterator[dict[str, Tensor]]:
        return iter(batches[start:])

    return factory
