"""A stand-in frozen image teacher for ReCon's image targets: no download, random but fixed weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TinyImageTeacher"]


class TinyImageTeacher(nn.Module):
    """Stand-in frozen image teacher: 3 strided convs, average pool, linear, tanh (like ViT pre-logits).

    Randomly initialised from ``seed`` and frozen; ``train(True)`` leaves it in eval mode.
    """

    def __init__(self, out_dim: int = 32, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1),
            nn.ReLU(),
        )
        self.proj = nn.Linear(4 * width, out_dim)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, generator=gen)
                nn.init.zeros_(module.bias)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> TinyImageTeacher:
        # a frozen teacher: BN/dropout-free, but keep eval mode so wrappers cannot switch it
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """images: B x 3 x H x W normalised -> B x out_dim in (-1, 1)."""
        return torch.tanh(self.proj(self.features(images).mean(dim=(2, 3))))
