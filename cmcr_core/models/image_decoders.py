"""Trainable 1×1 image decoders that turn frozen-encoder maps into per-pixel embeddings (SLidR's decoders).

| Preset | Used by | Encoder stride | Structure |
|---|---|---|---|
| ``ppkt`` | PPKT, CMCR ``decoder`` | 32 | Conv1×1 (bias) → bilinear ×32 → L2-normalise |
| ``cmcr_specific`` | CMCR ``decoder2`` | 32 | same, **not** normalised (G²ᴰ) |
| ``dilation`` | SLidR | 4 (dilated) | Conv1×1 (bias) → bilinear ×4 → L2-normalise |

Bilinear upsampling uses ``align_corners=True`` as the references do.

With 2048 input and 64 output channels each conv has 131,136 parameters. Channels and the upsampling factor
are parameters so the same decoders run on ResNet-18/34 (512 channels) and on small test images.
The L2 normalisation uses an epsilon so an all-zero vector stays finite (D20, docs/differences.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DECODER_PRESETS", "DecoderPreset", "PixelDecoder", "build_image_decoder"]


class PixelDecoder(nn.Module):
    """Conv1×1 → bilinear upsampling → optional L2 normalisation over channels.

    Args:
        in_channels: channels of the encoder map (2048 for ResNet-50).
        out_channels: embedding size D (64 in the references).
        upsample: scale factor of the bilinear upsampling (= encoder output stride).
        normalize: L2-normalise every pixel's D-vector.
        align_corners: passed to ``F.interpolate`` (True in the references).
        eps: lower bound of the norm in the normalisation.
    """

    def __init__(
        self,
        in_channels: int = 2048,
        out_channels: int = 64,
        upsample: int = 32,
        normalize: bool = True,
        align_corners: bool = True,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if upsample < 1:
            raise ValueError(f"upsample must be >= 1, got {upsample}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        self.upsample = upsample
        self.normalize = normalize
        self.align_corners = align_corners
        self.eps = eps

    def forward(self, features: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        """(B, in_channels, h, w) → (B, out_channels, H, W).

        ``(H, W) = output_size`` when given (use the image size when it is not a multiple of the
        encoder stride), else ``(h·upsample, w·upsample)``.
        """
        x = self.conv(features)
        if output_size is not None:
            x = F.interpolate(x, size=output_size, mode="bilinear", align_corners=self.align_corners)
        elif self.upsample > 1:
            x = F.interpolate(
                x, scale_factor=self.upsample, mode="bilinear", align_corners=self.align_corners
            )
        if self.normalize:
            x = F.normalize(x, p=2.0, dim=1, eps=self.eps)
        return x


@dataclass(frozen=True)
class DecoderPreset:
    """Reference settings of a named decoder; the encoder must have output stride ``upsample``."""

    upsample: int
    normalize: bool
    encoder_dilation: tuple[bool, bool, bool]


DECODER_PRESETS: dict[str, DecoderPreset] = {
    "ppkt": DecoderPreset(upsample=32, normalize=True, encoder_dilation=(False, False, False)),
    "cmcr_specific": DecoderPreset(upsample=32, normalize=False, encoder_dilation=(False, False, False)),
    "dilation": DecoderPreset(upsample=4, normalize=True, encoder_dilation=(True, True, True)),
}


def build_image_decoder(
    name: str,
    in_channels: int = 2048,
    out_channels: int = 64,
    upsample: int | None = None,
    eps: float = 1e-12,
) -> PixelDecoder:
    """Build a preset decoder (``ppkt``, ``cmcr_specific``, ``dilation``); ``upsample`` overrides the preset.

    The matching encoder dilation is ``DECODER_PRESETS[name].encoder_dilation`` (pass it as
    ``replace_stride_with_dilation`` when building or loading the teacher).
    """
    if name not in DECODER_PRESETS:
        raise ValueError(f"unknown image decoder {name!r}; known: {sorted(DECODER_PRESETS)}")
    preset = DECODER_PRESETS[name]
    return PixelDecoder(
        in_channels=in_channels,
        out_channels=out_channels,
        upsample=preset.upsample if upsample is None else upsample,
        normalize=preset.normalize,
        align_corners=True,
        eps=eps,
    )
