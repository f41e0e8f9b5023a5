"""The frozen 2D teacher: an eval-only, gradient-free wrapper around an image encoder, and its provenance.

An image teacher is any ``nn.Module`` that maps RGB images (B, 3, H, W) in [0, 1] to a feature map
(B, C, h, w) and exposes ``out_channels`` (and, optionally, ``output_stride``). ``FrozenTeacher`` wraps one:
its parameters never require gradients, it is always in eval mode (BatchNorm uses running statistics),
``train(True)`` raises ``FrozenTeacherError`` and ``forward`` runs under ``torch.no_grad``. Building and
loading teachers of every kind is ``cmcr_core.models.teacher``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FrozenTeacher", "FrozenTeacherError", "TeacherInfo"]


class FrozenTeacherError(RuntimeError):
    """Raised when something tries to put a frozen teacher in training mode."""


@dataclass(frozen=True)
class TeacherInfo:
    """Provenance of a teacher, stored in pretraining checkpoints (``to_dict``)."""

    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    checkpoint_format: str | None = None
    num_loaded: int = 0
    skipped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()}
        return {
            "arch": self.arch, "kwargs": kwargs, "source": self.source,
            "checkpoint_format": self.checkpoint_format, "num_loaded": self.num_loaded,
            "skipped": list(self.skipped),
        }


class FrozenTeacher(nn.Module):
    """Eval-only, gradient-free wrapper around an image encoder.

    ``is_frozen = True`` tells ``cmcr_core.engine.Method`` to skip this module when switching modes and
    to leave its weights out of training checkpoints (they come from ``info.source``).
    """

    is_frozen = True

    def __init__(self, encoder: nn.Module, info: TeacherInfo) -> None:
        super().__init__()
        if not hasattr(encoder, "out_channels"):
            raise ValueError(f"teacher encoder {type(encoder).__name__} has no `out_channels` attribute")
        self.encoder = encoder
        self.info = info
        self.encoder.requires_grad_(False)
        super().train(False)

    @property
    def out_channels(self) -> int:
        return int(self.encoder.out_channels)

    @property
    def output_stride(self) -> int:
        return int(getattr(self.encoder, "output_stride", 1))

    def train(self, mode: bool = True) -> FrozenTeacher:
        """``train(False)``/``eval()`` only; ``train(True)`` raises ``FrozenTeacherError``."""
        if mode:
            raise FrozenTeacherError(
                f"teacher {self.info.arch!r} is frozen and must stay in eval mode; train() was called on "
                "it (a parent module switching to training mode should skip modules with is_frozen=True)"
            )
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, out_channels, h, w), without autograd history."""
        with torch.no_grad():
            return self.encoder(images)
