"""Object classification as an engine ``Method``: fine-tuning a ``PointTransformerClassifier`` (ReCon)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from cmcr_core.data.objects import ObjectBatch
from cmcr_core.engine.method import Method
from cmcr_core.methods.recon import recon_param_groups
from cmcr_core.models.point_transformer import PointTransformerClassifier

__all__ = ["ClassifierMethod", "classifier_param_groups"]


class ClassifierMethod(Method):
    """Fine-tuning as an engine ``Method``: cross-entropy of a ``PointTransformerClassifier``."""

    def __init__(self, model: PointTransformerClassifier, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model, self.label_smoothing = model, label_smoothing

    def forward(self, batch: ObjectBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        logits = self.model(batch.points)
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing)
        return {"ce": loss}, {"acc": (logits.argmax(1) == batch.labels).float().mean()}

    def handoff(self) -> dict[str, Any]:
        return {"student": self.model.encoder.state_dict()}


def classifier_param_groups(
    method: ClassifierMethod, lr: float, weight_decay: float, cls_lr_scale: float
) -> list[dict[str, Any]]:
    """Reference fine-tuning groups: the head (``cls_head_finetune`` in the reference, so ``cls``-named)
    and the encoder's ``cls_token``/``cls_pos`` run at ``cls_lr_scale`` x lr; no decay on 1-D/bias/token."""
    groups = recon_param_groups(method.model.encoder, lr, weight_decay, cls_lr_scale)
    for group in recon_param_groups(method.model.head, lr * cls_lr_scale, weight_decay):
        groups.append({**group, "name": "cls_head" + group["name"].removeprefix("main")})
    return groups
