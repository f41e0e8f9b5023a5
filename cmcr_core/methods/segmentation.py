"""LiDAR semantic segmentation as an engine ``Method``: MinkUNet + cross-entropy + Lovász-softmax."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cmcr_core.data.segmentation_dataset import SegmentationBatch
from cmcr_core.engine.method import Method
from cmcr_core.losses.lovasz import lovasz_softmax
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.sparse import SparseTensor

__all__ = ["HEAD_PREFIX", "SegmentationMethod"]

HEAD_PREFIX = "model.final."  # parameter names of the segmentation head (its own learning rate)


class SegmentationMethod(Method):
    """MinkUNet + cross-entropy + Lovász-softmax on labelled voxels (label 0 = ignore).

    probe=True freezes every parameter except the head (`final`) and keeps the network in eval mode
    during training, so batch norm uses (and never updates) the pretrained running statistics.
    """

    def __init__(self, model: MinkUNet34C, cross_entropy: float = 1.0, lovasz: float = 1.0,
                 probe: bool = False) -> None:
        super().__init__()
        if cross_entropy <= 0 and lovasz <= 0:
            raise ValueError("every loss weight is 0: set loss.cross_entropy or loss.lovasz > 0")
        self.model = model
        self.cross_entropy_weight, self.lovasz_weight, self.probe = cross_entropy, lovasz, probe
        if probe:
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.startswith("final."))

    def train(self, mode: bool = True) -> SegmentationMethod:
        super().train(mode)
        if self.probe:
            self.model.eval()
        return self

    def forward(self, batch: SegmentationBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        logits = self.model(SparseTensor(batch.feats, batch.coords)).features
        labelled = batch.voxel_labels != 0
        logits, labels = logits[labelled], batch.voxel_labels[labelled]
        losses: dict[str, Tensor] = {}
        if self.cross_entropy_weight > 0:
            ce = F.cross_entropy(logits, labels) if labels.numel() else logits.sum() * 0.0
            losses["cross_entropy"] = self.cross_entropy_weight * ce
        if self.lovasz_weight > 0:
            losses["lovasz"] = self.lovasz_weight * lovasz_softmax(F.softmax(logits, dim=1), labels)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean() if labels.numel() else logits.new_zeros(())
        return losses, {"voxel_accuracy": accuracy}

    def handoff(self) -> dict[str, Any]:
        return {"student": self.model.state_dict()}
