"""The shared base of the distillation methods (PPKT/SLidR, relational, CMCR): a 3D student and a frozen
2D teacher, the pair generator, the student's features and the checkpoint hand-off."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cmcr_core.data.batch import Batch
from cmcr_core.engine.method import Method
from cmcr_core.models.frozen_teacher import FrozenTeacher
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.sparse import SparseTensor

__all__ = ["DistillationMethod"]


class DistillationMethod(Method):
    """A MinkUNet student distilled from a frozen image teacher.

    Subclasses set ``self.student`` and ``self.teacher`` and call ``seed_generators(seed, "pair_generator",
    ...)``; they add the teacher side and the losses.
    """

    student: MinkUNet34C
    teacher: FrozenTeacher
    pair_generator: torch.Generator

    def generators(self) -> dict[str, torch.Generator]:
        """Named random generators to checkpoint with the run (exact resume)."""
        return {"pairs": self.pair_generator}

    def student_features(self, batch: Batch) -> Tensor:
        """(V, D) unit-norm voxel features of the student."""
        return self.student(SparseTensor(batch.feats, batch.coords)).features

    def handoff(self) -> dict[str, Any]:
        """The student's weights and the teacher's description, read by finetune/probe/analyze/zeroshot."""
        return {"student": self.student.state_dict(), "teacher": self.teacher.info.to_dict()}
