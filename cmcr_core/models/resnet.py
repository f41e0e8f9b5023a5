"""ResNet-18/34/50 image encoders in plain PyTorch with torchvision-compatible parameter names.

Layout (torchvision's ResNet-50, as SLidR uses it): stem conv 7×7 stride 2 (3→64, no bias) + BN + ReLU +
max-pool 3×3 stride 2, then four stages ``layer1..layer4`` of BasicBlock (ResNet-18/34) or Bottleneck
(ResNet-50) blocks with widths 64/128/256/512; the first block of a stage has a 1×1 conv + BN shortcut
(``downsample.0/1``) when its stride or channel count changes. There is no average pool and no ``fc``: the
encoder returns the ``layer4`` feature map. Parameter names equal torchvision's, so torchvision, MoCo and DINO
checkpoints load without renaming (``cmcr_core.models.teacher`` strips their prefixes).

``replace_stride_with_dilation`` follows torchvision: a ``True`` entry for layer 2, 3 or 4 replaces that
stage's stride 2 by stride 1 and multiplies the dilation of the following 3×3 convolutions by 2; the first
block of the stage keeps the previous dilation. ``[True, True, True]`` gives output stride 4, which SLidR's
``dilation`` decoder uses. Unlike torchvision (which refuses), dilation is also allowed with BasicBlock so
small ResNet-18 teachers can be used in tests; parameter names and shapes do not change.

Inputs are RGB images in [0, 1]; ImageNet normalisation (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225)
is applied inside the model as non-persistent buffers, so it never appears in a state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESNET_LAYOUTS",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "build_resnet",
    "resnet18",
    "resnet34",
    "resnet50",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps the spatial size for stride 1 (torchvision's conv3x3).
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut; expansion 1."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, width, stride, dilation)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width, 1, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, width, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride, dilation) → 1×1 convolutions; expansion 4 (torchvision v1.5 layout)."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, 4·width, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# arch name → (block type, blocks per stage)
RESNET_LAYOUTS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet encoder without avgpool/fc; returns the ``layer4`` feature map.

    Attributes:
        out_channels: channels of the output map (512 for ResNet-18/34, 2048 for ResNet-50).
        output_stride: input size / output size (32, or 4 with dilation in layers 2-4).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 stage depths, got {list(layers)}")
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation must have 3 entries (layers 2, 3, 4), got "
                f"{list(replace_stride_with_dilation)}"
            )
        self.normalize_input = normalize_input
        # Non-persistent: torchvision/MoCo/DINO state dicts must load strictly.
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        self._in_channels = 64
        self._dilation = 1
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        dilate = [False, *replace_stride_with_dilation]
        self.layer1 = self._make_layer(block, 64, layers[0], 1, dilate[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, dilate[1])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, dilate[2])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, dilate[3])
        self.out_channels = 512 * block.expansion
        self.output_stride = 4 * 2 ** sum(not d for d in dilate[1:])
        self._init_weights()

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], width: int, blocks: int, stride: int, dilate: bool
    ) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out_channels = width * block.expansion
        downsample = None
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(
                _conv1x1(self._in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )
        # The first block keeps the previous dilation (torchvision), the others use the new one.
        layers = [block(self._in_channels, width, stride, downsample, previous_dilation)]
        self._in_channels = out_channels
        layers += [block(out_channels, width, 1, None, self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's initialisation, so a randomly initialised teacher behaves like theirs.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → ImageNet-normalised (B, 3, H, W)."""
        return (images - self.input_mean) / self.input_std

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] → (B, out_channels, ⌈H/stride⌉, ⌈W/stride⌉) ``layer4`` features."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = self.normalize(images) if self.normalize_input else images
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def build_resnet(
    arch: str,
    replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    normalize_input: bool = True,
) -> ResNet:
    """Build ``resnet18``, ``resnet34`` or ``resnet50`` (random torchvision-style initialisation)."""
    if arch not in RESNET_LAYOUTS:
        raise ValueError(f"unknown ResNet arch {arch!r}; known: {sorted(RESNET_LAYOUTS)}")
    block, layers = RESNET_LAYOUTS[arch]
    return ResNet(block, layers, replace_stride_with_dilation, normalize_input)


def resnet18(**kwargs: object) -> ResNet:
    """ResNet-18 encoder (11,176,512 parameters without fc)."""
    return build_resnet("resnet18", **kwargs)  # type: ignore[arg-type]


def resnet34(**kwargs: object) -> ResNet:
    """ResNet-34 encoder (21,284,672 parameters without fc)."""
    return build_resnet("resnet34", **kwargs)  # type: ignore[arg-type]


def resnet50(**kwargs: object) -> ResNet:
    """ResNet-50 encoder (23,508,032 parameters without fc)."""
    return build_resnet("resnet50", **kwargs)  # type: ignore[arg-type]
