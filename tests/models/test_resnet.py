"""ResNet encoders: torchvision parameter counts and names, dilation layout, functional reference forward
(the encoder on the test device, CMCR_TEST_DEVICE; the reference on the CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.models.resnet import build_resnet, resnet18, resnet50

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "arch, expected",
    # torchvision's published totals minus the fc layer (512·1000 + 1000 or 2048·1000 + 1000).
    [("resnet18", 11_689_512 - 513_000), ("resnet34", 21_797_672 - 513_000), ("resnet50", 23_508_032)],
)
def test_parameter_counts_without_fc(arch, expected):
    assert sum(p.numel() for p in build_resnet(arch).parameters()) == expected


def test_state_dict_keys_follow_torchvision():
    keys = set(resnet50().state_dict())
    for key in ["conv1.weight", "bn1.running_var", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.num_batches_tracked", "layer3.5.bn3.bias", "layer4.2.conv2.weight"]:
        assert key in keys
    assert not any(k.startswith(("fc.", "input_")) for k in keys)  # no head, normalisation not persisted
    assert "layer1.1.downsample.0.weight" not in keys and "layer4.3.conv1.weight" not in keys
    # stem 1 + 5, 16 bottlenecks × (3 + 3 × 5), 4 shortcuts × (1 + 5) = 318 (torchvision: 320 with fc)
    assert len(keys) == 318
    assert "layer1.0.conv3.weight" not in resnet18().state_dict()


@pytest.mark.parametrize("dilation, stride", [((False, False, False), 32), ((False, True, True), 8),
                                              ((True, True, True), 4)])
def test_output_stride_and_shape(dilation, stride):
    model = resnet50(replace_stride_with_dilation=dilation).eval()
    assert model.output_stride == stride and model.out_channels == 2048
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 2048, 64 // stride, 96 // stride)


def test_dilation_layout_matches_torchvision():
    # torchvision: a dilated stage keeps stride 1; its first block uses the previous dilation, the
    # others the new one (layer2: 1 then 2, layer3: 2 then 4, layer4: 4 then 8).
    model = resnet50(replace_stride_with_dilation=(True, True, True))
    expected = {"layer2": (1, 2), "layer3": (2, 4), "layer4": (4, 8)}
    for name, (first, rest) in expected.items():
        layer = getattr(model, name)
        assert layer[0].conv2.stride == (1, 1) and layer[0].downsample[0].stride == (1, 1)
        assert layer[0].conv2.dilation == (first, first) and layer[0].conv2.padding == (first, first)
        assert all(block.conv2.dilation == (rest, rest) for block in layer[1:])
    plain = resnet50()
    assert plain.layer2[0].conv2.stride == (2, 2) and plain.layer2[0].downsample[0].stride == (2, 2)


def _reference_forward(state, images, bottleneck):
    """Independent functional ResNet forward written from the published architecture."""

    def bn(x, name):
        return F.batch_norm(x, state[f"{name}.running_mean"], state[f"{name}.running_var"],
                            state[f"{name}.weight"], state[f"{name}.bias"], False, 0.0, 1e-5)

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.conv2d((images - mean) / std, state["conv1.weight"], stride=2, padding=3)
    x = F.max_pool2d(F.relu(bn(x, "bn1")), 3, 2, 1)
    def conv(x, name, stride=1, padding=0):
        return F.conv2d(x, state[f"{name}.weight"], stride=stride, padding=padding)

    for stage in range(1, 5):
        block = 0
        while f"layer{stage}.{block}.conv1.weight" in state:
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            if bottleneck:
                out = F.relu(bn(conv(x, f"{p}.conv1"), f"{p}.bn1"))
                out = F.relu(bn(conv(out, f"{p}.conv2", stride, 1), f"{p}.bn2"))
                out = bn(conv(out, f"{p}.conv3"), f"{p}.bn3")
            else:
                out = F.relu(bn(conv(x, f"{p}.conv1", stride, 1), f"{p}.bn1"))
                out = bn(conv(out, f"{p}.conv2", 1, 1), f"{p}.bn2")
            shortcut = x
            if f"{p}.downsample.0.weight" in state:
                shortcut = bn(conv(x, f"{p}.downsample.0", stride), f"{p}.downsample.1")
            x = F.relu(out + shortcut)
            block += 1
    return x


@pytest.mark.parametrize("arch, bottleneck", [("resnet18", False), ("resnet50", True)])
def test_forward_matches_functional_reference(arch, bottleneck, device):
    torch.manual_seed(0)
    model = build_resnet(arch).eval()
    with torch.no_grad():  # non-trivial BN statistics so every BN is exercised
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
        images = torch.rand(2, 3, 40, 56)
        reference = _reference_forward(model.state_dict(), images, bottleneck)
        out = model.to(device)(images.to(device))
    assert out.device == device and out.shape == reference.shape == (2, model.out_channels, 2, 2)
    assert torch.allclose(out.cpu(), reference, rtol=1e-4, atol=1e-4)


def test_normalisation_constants_and_input_check():
    model = resnet18()
    images = torch.rand(1, 3, 4, 4)
    expected = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(images), expected)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 4, 8, 8))


def test_every_parameter_gets_a_gradient(device):
    model = resnet18(replace_stride_with_dilation=(False, True, True)).train().to(device)
    model(torch.rand(2, 3, 32, 32, device=device)).pow(2).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
