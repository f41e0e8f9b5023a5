"""Reference Res16UNet34C built from MinkowskiEngine layers (optional oracle for tests and benchmarks).

MinkowskiEngine is never a runtime dependency of cmcr: this module is imported by `tests/sparse` parity
tests and by `benchmarks/sparse_unet.py` only, and everything degrades to "not available" without it.
The network follows valeoai/SLidR `model/res16unet.py` + `model/modules/resnet_block.py`
with MinkowskiEngine's module names, so its state dict is a MinkowskiEngine-format checkpoint.
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import nn

PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


def import_minkowski() -> ModuleType | None:
    """Import MinkowskiEngine 0.5.4 on Python >= 3.10, or return None when it is not installed.

    0.5.4 still imports `collections.Sequence` etc., removed in Python 3.10: alias them first.
    """
    for name in ("Sequence", "Iterable", "Mapping"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    try:
        return importlib.import_module("MinkowskiEngine")
    except ImportError:
        return None


def _me() -> ModuleType:
    me = import_minkowski()
    if me is None:
        raise RuntimeError("MinkowskiEngine is not installed (docs/sparse-engine.md says how to install it)")
    return me


class MEBasicBlock(nn.Module):
    """BasicBlock of the reference: BNs built without the config momentum (PyTorch default 0.1)."""

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None) -> None:
        super().__init__()
        me = _me()
        self.conv1 = me.MinkowskiConvolution(inplanes, planes, kernel_size=3, stride=1, dimension=3)
        self.norm1 = me.MinkowskiBatchNorm(planes)
        self.conv2 = me.MinkowskiConvolution(planes, planes, kernel_size=3, stride=1, dimension=3)
        self.norm2 = me.MinkowskiBatchNorm(planes)
        self.relu = me.MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


class MERes16UNet34C(nn.Module):
    """Res16UNet34C from MinkowskiEngine layers; `forward` returns the `final` output (stride 1)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 64, planes: Sequence[int] = PLANES,
                 layers: Sequence[int] = LAYERS, init_dim: int = 32, bn_momentum: float = 0.05) -> None:
        super().__init__()
        me = _me()
        self._me = me
        self.bn_momentum = bn_momentum

        def conv(cin: int, cout: int, k: int, s: int = 1, bias: bool = False) -> nn.Module:
            return me.MinkowskiConvolution(cin, cout, kernel_size=k, stride=s, bias=bias, dimension=3)

        def convtr(cin: int, cout: int) -> nn.Module:
            return me.MinkowskiConvolutionTranspose(cin, cout, kernel_size=2, stride=2, dimension=3)

        def norm(c: int) -> nn.Module:
            return me.MinkowskiBatchNorm(c, momentum=bn_momentum)

        self.inplanes = init_dim
        self.conv0p1s1 = conv(in_channels, init_dim, 3)
        self.bn0 = norm(init_dim)
        self.conv1p1s2 = conv(init_dim, init_dim, 2, 2)
        self.bn1 = norm(init_dim)
        self.block1 = self._make_layer(planes[0], layers[0], conv, norm)
        self.conv2p2s2 = conv(self.inplanes, self.inplanes, 2, 2)
        self.bn2 = norm(self.inplanes)
        self.block2 = self._make_layer(planes[1], layers[1], conv, norm)
        self.conv3p4s2 = conv(self.inplanes, self.inplanes, 2, 2)
        self.bn3 = norm(self.inplanes)
        self.block3 = self._make_layer(planes[2], layers[2], conv, norm)
        self.conv4p8s2 = conv(self.inplanes, self.inplanes, 2, 2)
        self.bn4 = norm(self.inplanes)
        self.block4 = self._make_layer(planes[3], layers[3], conv, norm)
        self.convtr4p16s2 = convtr(self.inplanes, planes[4])
        self.bntr4 = norm(planes[4])
        self.inplanes = planes[4] + planes[2]
        self.block5 = self._make_layer(planes[4], layers[4], conv, norm)
        self.convtr5p8s2 = convtr(self.inplanes, planes[5])
        self.bntr5 = norm(planes[5])
        self.inplanes = planes[5] + planes[1]
        self.block6 = self._make_layer(planes[5], layers[5], conv, norm)
        self.convtr6p4s2 = convtr(self.inplanes, planes[6])
        self.bntr6 = norm(planes[6])
        self.inplanes = planes[6] + planes[0]
        self.block7 = self._make_layer(planes[6], layers[6], conv, norm)
        self.convtr7p2s2 = convtr(self.inplanes, planes[7])
        self.bntr7 = norm(planes[7])
        self.inplanes = planes[7] + init_dim
        self.block8 = self._make_layer(planes[7], layers[7], conv, norm)
        self.final = conv(planes[7], out_channels, 1, bias=True)
        self.relu = me.MinkowskiReLU(inplace=True)

    def _make_layer(self, planes: int, blocks: int, conv, norm) -> nn.Sequential:
        downsample = None
        if self.inplanes != planes:
            downsample = nn.Sequential(conv(self.inplanes, planes, 1), norm(planes))
        stage = [MEBasicBlock(self.inplanes, planes, downsample)]
        self.inplanes = planes
        stage += [MEBasicBlock(planes, planes, None) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_features(self, x):
        me = self._me
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        out_b1p2 = self.block1(self.relu(self.bn1(self.conv1p1s2(out_p1))))
        out_b2p4 = self.block2(self.relu(self.bn2(self.conv2p2s2(out_b1p2))))
        out_b3p8 = self.block3(self.relu(self.bn3(self.conv3p4s2(out_b2p4))))
        out = self.block4(self.relu(self.bn4(self.conv4p8s2(out_b3p8))))
        out = self.block5(me.cat(self.relu(self.bntr4(self.convtr4p16s2(out))), out_b3p8))
        out = self.block6(me.cat(self.relu(self.bntr5(self.convtr5p8s2(out))), out_b2p4))
        out = self.block7(me.cat(self.relu(self.bntr6(self.convtr6p4s2(out))), out_b1p2))
        return self.block8(me.cat(self.relu(self.bntr7(self.convtr7p2s2(out))), out_p1))

    def forward(self, x):
        return self.final(self.forward_features(x))


def minkowski_input(features: torch.Tensor, coords: torch.Tensor):
    """An ME SparseTensor on unique coordinates (N, 4) int32 `[batch, x, y, z]` with features (N, C)."""
    me = _me()
    return me.SparseTensor(features, coordinates=coords.to(torch.int32).contiguous())
