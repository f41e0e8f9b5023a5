"""MinkUNet34C (MinkowskiEngine's Res16UNet34C as used by SLidR/CMCR) on the cmcr sparse engine.

Module and parameter names equal the MinkowskiEngine state-dict keys (docs/sparse-engine.md:
`conv0p1s1.kernel`, `bn0.bn.weight`, `block2.0.downsample.0.kernel`, `convtr4p16s2.kernel`, `final.bias`,
...), so published checkpoints load by renaming prefixes only (`cmcr_core.models.convert`).

The trunk (`MinkUNetTrunk`) returns the 96-channel `out_b` features at tensor stride 1; heads are separate
modules: `MinkUNet34C` adds the `final` 1x1 head, and methods that need a second head (CMCR's
`final_class_level`) apply their own `SparseConv3d(96, 64, kernel_size=1, bias=True)` to the same `out_b`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cmcr_core.sparse import SparseBatchNorm, SparseConv3d, SparseConvTranspose3d, SparseTensor, cat

PLANES_34C = (32, 64, 128, 256, 256, 128, 96, 96)
LAYERS_34C = (2, 3, 4, 6, 2, 2, 2, 2)


class BasicBlock(nn.Module):
    """conv k3 -> BN -> ReLU -> conv k3 -> BN -> (+ shortcut) -> ReLU (expansion 1).

    `bn_momentum` applies to norm1/norm2: the reference constructs them without passing its config momentum,
    hence PyTorch's default 0.1 (valeoai/SLidR `model/modules/resnet_block.py`).  The shortcut BN (inside
    `downsample`) is built by the caller with the top-level momentum.
    """

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = SparseConv3d(inplanes, planes, kernel_size=3)
        self.norm1 = SparseBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = SparseConv3d(planes, planes, kernel_size=3)
        self.norm2 = SparseBatchNorm(planes, momentum=bn_momentum)
        self.downsample = downsample

    def forward(self, x: SparseTensor) -> SparseTensor:
        """x: (N, inplanes) -> (N, planes) on the same coordinates."""
        out = self.norm1(self.conv1(x))
        # In place is safe: BatchNorm's backward needs its input, not its output.
        out = self.conv2(out.replace(F.relu_(out.features)))
        out = self.norm2(out)
        residual = self.downsample(x) if self.downsample is not None else x
        return out.replace(F.relu_(out.features.add_(residual.features)))


class MinkUNetTrunk(nn.Module):
    """Res16UNet trunk: stride-16 encoder, decoder with skip concatenations [up, skip], returns `out_b`.

    Args:
        in_channels: input feature channels (1: intensity).
        planes: 8 stage widths (reference: 32, 64, 128, 256, 256, 128, 96, 96).
        layers: 8 stage depths in BasicBlocks (reference: 2, 3, 4, 6, 2, 2, 2, 2).
        init_dim: width of `conv0p1s1` and of the first skip (reference 32).
        conv0_kernel_size: kernel of the first convolution (reference 3).
        bn_momentum: momentum of the top-level and shortcut BNs (0.05 pretraining, 0.02 downstream).
        block_bn_momentum: momentum of the BNs inside blocks (reference quirk: PyTorch default 0.1).
    Input: SparseTensor (N, in_channels) at stride 1.  Output: SparseTensor (N, planes[7]) on the same rows.
    """

    def __init__(self, in_channels: int = 1, planes: Sequence[int] = PLANES_34C,
                 layers: Sequence[int] = LAYERS_34C, init_dim: int = 32, conv0_kernel_size: int = 3,
                 bn_momentum: float = 0.05, block_bn_momentum: float = 0.1) -> None:
        super().__init__()
        if len(planes) != 8 or len(layers) != 8:
            raise ValueError(f"planes and layers need 8 entries each, got {len(planes)} and {len(layers)}")
        if min(layers) < 1 or min(planes) < 1:
            raise ValueError(f"planes and layers must be positive, got {tuple(planes)}, {tuple(layers)}")
        self.planes = tuple(planes)
        self.layers = tuple(layers)
        self.bn_momentum = bn_momentum
        self.block_bn_momentum = block_bn_momentum
        self.inplanes = init_dim

        def norm(channels: int) -> SparseBatchNorm:
            return SparseBatchNorm(channels, momentum=bn_momentum)

        self.conv0p1s1 = SparseConv3d(in_channels, init_dim, kernel_size=conv0_kernel_size)
        self.bn0 = norm(init_dim)
        for stage, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
            setattr(self, name, SparseConv3d(self.inplanes, self.inplanes, kernel_size=2, stride=2))
            setattr(self, f"bn{stage + 1}", norm(self.inplanes))
            setattr(self, f"block{stage + 1}", self._make_layer(planes[stage], layers[stage]))
        skips = (planes[2], planes[1], planes[0], init_dim)
        names = ("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")
        for i, name in enumerate(names):
            setattr(self, name, SparseConvTranspose3d(self.inplanes, planes[4 + i], kernel_size=2, stride=2))
            setattr(self, f"bntr{4 + i}", norm(planes[4 + i]))
            self.inplanes = planes[4 + i] + skips[i]
            setattr(self, f"block{5 + i}", self._make_layer(planes[4 + i], layers[4 + i]))

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = None
        if self.inplanes != planes:
            downsample = nn.Sequential(
                SparseConv3d(self.inplanes, planes, kernel_size=1),
                SparseBatchNorm(planes, momentum=self.bn_momentum),
            )
        stage = [BasicBlock(self.inplanes, planes, downsample, self.block_bn_momentum)]
        self.inplanes = planes
        stage += [BasicBlock(planes, planes, None, self.block_bn_momentum) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    @property
    def feature_channels(self) -> int:
        """Channels of `out_b` (planes[7], 96 for the reference)."""
        return self.planes[7]

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """As valeoai/SLidR: BN weight 1 / bias 0; kernels uniform(+-1/sqrt(fan)), MinkowskiEngine default."""
        for m in self.modules():
            if isinstance(m, (SparseConv3d, SparseConvTranspose3d)):
                fan = (m.out_channels if m.transposed else m.in_channels) * m.kernel_volume
                bound = fan**-0.5
                nn.init.uniform_(m.kernel, -bound, bound, generator=generator)
                if m.bias is not None:
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, SparseBatchNorm):
                nn.init.ones_(m.bn.weight)
                nn.init.zeros_(m.bn.bias)

    @staticmethod
    def _bn_relu(bn: SparseBatchNorm, x: SparseTensor) -> SparseTensor:
        out = bn(x)
        return out.replace(F.relu_(out.features))

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        """x: (N, in_channels) at stride 1 -> `out_b` (N, planes[7]) on the same rows."""
        if x.stride != 1:
            raise ValueError(f"MinkUNet expects an input at tensor stride 1, got {x.stride}")
        out_p1 = self._bn_relu(self.bn0, self.conv0p1s1(x))
        out = out_p1
        encoder = []
        for stage in range(1, 5):
            down = getattr(self, f"conv{stage}p{2 ** (stage - 1)}s2")
            out = self._bn_relu(getattr(self, f"bn{stage}"), down(out))
            out = getattr(self, f"block{stage}")(out)
            encoder.append(out)
        skips = (encoder[2], encoder[1], encoder[0], out_p1)
        names = ("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")
        for i, name in enumerate(names):
            out = self._bn_relu(getattr(self, f"bntr{4 + i}"), getattr(self, name)(out))
            out = getattr(self, f"block{5 + i}")(cat(out, skips[i]))
        return out

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.forward_features(x)


class MinkUNet34C(MinkUNetTrunk):
    """Trunk + `final` 1x1 head with bias (96 -> out_channels).

    Args:
        in_channels, out_channels: 1 -> 64 for pretraining, 17/20 for segmentation.
        normalize_output: L2-normalise the head output (pretraining), with eps 1e-12 (the reference
            divides by the bare norm, D20 of docs/differences.md).
        **trunk_kwargs: `MinkUNetTrunk` options (planes, layers, bn_momentum, ...).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 64, normalize_output: bool = False,
                 **trunk_kwargs) -> None:
        super().__init__(in_channels=in_channels, **trunk_kwargs)
        self.final = SparseConv3d(self.feature_channels, out_channels, kernel_size=1, bias=True)
        self.normalize_output = normalize_output

    def forward(self, x: SparseTensor) -> SparseTensor:
        """x: (N, in_channels) at stride 1 -> (N, out_channels) on the same rows."""
        out = self.final(self.forward_features(x))
        if self.normalize_output:
            out = out.replace(F.normalize(out.features, dim=1, eps=1e-12))
        return out
