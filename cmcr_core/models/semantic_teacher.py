"""A compact 2D semantic network: the offline stand-in for MoCo/DINO/CLIP teachers.

Real teachers learn semantics from large 2D datasets; offline, ``cmcr teacher train`` trains this network
on the camera images and truth maps of one synthetic world (``cmcr_core.runs.teacher``), and every
pretraining method then loads the saved ``cmcr-teacher`` file like any other teacher.

Layout (output stride 8, about 0.45 M parameters with the default widths (32, 64, 96, 128)):

| Stage | Layers (3×3 conv, no bias → BN → ReLU) | Stride |
|---|---|---|
| ``stem`` | 3 → w0, stride 2 | 2 |
| ``stage1`` | w0 → w1 stride 2, w1 → w1 | 4 |
| ``stage2`` | w1 → w2 stride 2, w2 → w2 | 8 |
| ``context`` | w2 → w3 dilation d0, then w3 → w3 dilation d1, ... | 8 |

The dilated ``context`` convolutions widen the receptive field (about 150 px with dilations (2, 4)) without
lowering the resolution, so an object of a 480×270 camera image is seen whole.

``replace_stride_with_dilation`` is accepted with the meaning it has for the ResNet teachers, so recipes
that dilate their teacher (SLidR's ``dilation`` decoder wants output stride 4) load this network unchanged:
when any entry is True, stage 2 keeps stride 1 and every later 3×3 convolution doubles its dilation (à
trous), giving output stride 4 with the same weights; the stride-4 map sampled at every second row and
column equals the stride-8 map exactly. Inputs are RGB in [0, 1];
ImageNet normalisation is applied inside as non-persistent buffers, exactly like the ResNet teachers, so
the state dict holds no normalisation constants. ``cmcr_core.models.teacher`` lists the arch as
``"synthetic_semantic"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cmcr_core.models.resnet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["SEMANTIC_TEACHER_ARCH", "CompactSemanticNet", "build_compact_semantic_net"]

SEMANTIC_TEACHER_ARCH = "synthetic_semantic"


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # No conv bias: the BatchNorm shift replaces it.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CompactSemanticNet(nn.Module):
    """Small stride-8 CNN: (B, 3, H, W) in [0, 1] → (B, widths[3], ⌈H/8⌉, ⌈W/8⌉) post-ReLU features.

    Args:
        widths: channels of the stem, stage 1, stage 2 and the context block (= ``out_channels``).
        context_dilations: dilation of each 3×3 convolution of the context block (at least one).
        normalize_input: apply ImageNet mean/std inside (inputs in [0, 1]).
        replace_stride_with_dilation: three flags (ResNet convention); any True → output stride 4.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 96, 128),
        context_dilations: Sequence[int] = (2, 4),
        normalize_input: bool = True,
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    ) -> None:
        super().__init__()
        widths, context_dilations = tuple(int(w) for w in widths), tuple(int(d) for d in context_dilations)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive channel counts, got {widths}")
        if not context_dilations or min(context_dilations) < 1:
            raise ValueError(f"context_dilations must be one or more dilations >= 1, got {context_dilations}")
        self.widths, self.context_dilations = widths, context_dilations
        self.out_channels = widths[3]
        dilate = any(bool(flag) for flag in replace_stride_with_dilation)
        self.output_stride = 4 if dilate else 8
        scale = 2 if dilate else 1
        self.normalize_input = normalize_input
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        w0, w1, w2, w3 = widths
        self.stem = _conv_bn_relu(3, w0, stride=2)
        self.stage1 = nn.Sequential(_conv_bn_relu(w0, w1, stride=2), _conv_bn_relu(w1, w1))
        self.stage2 = nn.Sequential(
            _conv_bn_relu(w1, w2, stride=2 // scale), _conv_bn_relu(w2, w2, dilation=scale)
        )
        channels = [w2] + [w3] * len(context_dilations)
        self.context = nn.Sequential(*(
            _conv_bn_relu(channels[i], channels[i + 1], dilation=d * scale)
            for i, d in enumerate(context_dilations)
        ))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] → (B, out_channels, ⌈H/s⌉, ⌈W/s⌉), s = ``output_stride``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        x = (images - self.input_mean) / self.input_std if self.normalize_input else images
        return self.context(self.stage2(self.stage1(self.stem(x))))


def build_compact_semantic_net(**kwargs: object) -> CompactSemanticNet:
    """The builder of ``SEMANTIC_TEACHER_ARCH`` in ``TEACHER_ARCHS`` (kwargs of ``CompactSemanticNet``)."""
    return CompactSemanticNet(**kwargs)  # type: ignore[arg-type]

