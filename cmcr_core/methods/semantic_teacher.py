"""Supervised training of the offline semantic teacher: image encoder + 1×1 classifier, per-pixel CE.

The encoder (``cmcr_core.models.semantic_teacher.CompactSemanticNet``) maps images to a stride-8 feature
map; a 1×1 convolution gives one logit per coarse class, upsampled bilinearly to the image size (with
``align_corners=True``, as the distillation decoders upsample teacher features) before the loss, so every
labelled pixel counts. Class k of the logits is the coarse id k + 1 (``cmcr_core.data.labels``: 1..16);
coarse id 0 ("ignore": sky, unlabelled categories) is skipped by the loss and the metrics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.data.labels import IGNORE_INDEX, NUM_COARSE_CLASSES
from cmcr_core.data.truth_images import TruthBatch
from cmcr_core.engine.method import Method

__all__ = ["SemanticTeacherTraining", "upsample_to"]


def upsample_to(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) → (B, C, H, W) bilinear with ``align_corners=True`` (the decoders' convention)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=True)


class SemanticTeacherTraining(Method):
    """Encoder + 1×1 classifier trained with cross-entropy on coarse truth maps.

    Args:
        encoder: image network, (B, 3, H, W) in [0, 1] → (B, C, h, w), with ``out_channels``.
        num_classes: classes predicted (16 coarse classes; class k = coarse id k + 1).
        cross_entropy_weight: weight of the CE term (> 0).
        label_smoothing: passed to ``F.cross_entropy``.
        class_weights: optional (num_classes,) CE weights (a buffer: saved and restored with the method).
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int = NUM_COARSE_CLASSES,
        cross_entropy_weight: float = 1.0,
        label_smoothing: float = 0.0,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        if cross_entropy_weight <= 0:
            raise ValueError(f"loss.cross_entropy must be > 0 (the only loss), got {cross_entropy_weight}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.encoder = encoder
        self.classifier = nn.Conv2d(int(encoder.out_channels), num_classes, kernel_size=1, bias=True)
        self.num_classes = num_classes
        self.cross_entropy_weight = cross_entropy_weight
        self.label_smoothing = label_smoothing
        if class_weights is not None and tuple(class_weights.shape) != (num_classes,):
            raise ValueError(f"class_weights must be ({num_classes},), got {tuple(class_weights.shape)}")
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float())

    @staticmethod
    def to_unit_range(images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) 0..255 → float in [0, 1]; float images are taken as already in [0, 1]."""
        return images.float().div(255.0) if images.dtype == torch.uint8 else images.float()

    def logits(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images → (B, num_classes, H, W) logits at image resolution."""
        features = self.encoder(self.to_unit_range(images))
        return upsample_to(self.classifier(features), tuple(images.shape[-2:]))

    def forward(self, batch: TruthBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        logits = self.logits(batch.images)
        # coarse id c → class c - 1; "ignore" (0) becomes -1, the CE's ignore index.
        targets = batch.targets.long() - 1
        valid = targets != IGNORE_INDEX - 1
        if not bool(valid.any()):
            # A crop of sky only: keep the graph (DDP-safe) but contribute nothing.
            return {"cross_entropy": logits.sum() * 0.0}, {}
        loss = F.cross_entropy(logits, targets, weight=self.class_weights, ignore_index=IGNORE_INDEX - 1,
                               label_smoothing=self.label_smoothing)
        with torch.no_grad():
            correct = (logits.max(dim=1).indices == targets) & valid
            accuracy = correct.sum().float() / valid.sum().float()
        return {"cross_entropy": self.cross_entropy_weight * loss}, {"pixel_accuracy": accuracy}

    def handoff(self) -> dict[str, Any]:
        """The encoder and classifier weights (a teacher file can be rebuilt from any checkpoint)."""
        return {"encoder": self.encoder.state_dict(), "classifier": self.classifier.state_dict()}
