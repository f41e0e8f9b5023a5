"""The compact semantic network: shapes, gradients, size, à-trous dilation and arch registration; forwards
and backwards on the test device (CMCR_TEST_DEVICE)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cmcr_core.models.semantic_teacher import CompactSemanticNet


@pytest.mark.parametrize(("height", "width"), [(64, 96), (45, 83)])
def test_forward_shape_backward_and_size(height: int, width: int, device):
    torch.manual_seed(0)
    net = CompactSemanticNet(widths=(8, 16, 24, 32)).to(device)
    images = torch.rand(2, 3, height, width, device=device)
    out = net(images)
    assert out.shape == (2, 32, -(-height // 8), -(-width // 8))  # ceil: padding keeps partial cells
    assert net.out_channels == 32 and net.output_stride == 8
    out.square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert (out >= 0).all()  # post-ReLU features
    default = CompactSemanticNet()
    assert sum(p.numel() for p in default.parameters()) < 1_000_000
    assert not any("input_mean" in key for key in default.state_dict())  # normalisation is not a weight


def test_imagenet_normalisation_is_inside(device):
    torch.manual_seed(0)
    net = CompactSemanticNet(widths=(8, 8, 8, 8)).eval().to(device)
    raw = CompactSemanticNet(widths=(8, 8, 8, 8), normalize_input=False).eval().to(device)
    raw.load_state_dict(net.state_dict())
    images = torch.rand(1, 3, 32, 32, device=device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    # torch.allclose, not torch.testing: the latter's first call costs seconds of imports.
    assert torch.allclose(net(images), raw((images - mean) / std), rtol=1e-5, atol=1e-6)


def test_dilated_variant_is_a_denser_sampling_of_the_same_map(device):
    torch.manual_seed(0)
    net = CompactSemanticNet(widths=(8, 16, 16, 24)).eval()
    for module in net.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    dilated = CompactSemanticNet(widths=(8, 16, 16, 24), replace_stride_with_dilation=(True, True, True))
    dilated.eval()
    dilated.load_state_dict(net.state_dict())
    net, dilated = net.to(device), dilated.to(device)
    images = torch.rand(2, 3, 72, 104, device=device)
    coarse, fine = net(images), dilated(images)
    assert dilated.output_stride == 4 and fine.shape[-2:] == (18, 26)
    assert torch.allclose(fine[:, :, ::2, ::2], coarse, rtol=1e-5, atol=1e-6)


def test_arch_is_registered_for_a_caller_that_never_imports_its_module():
    # As in a process that imports only the teacher builder: the registry lists every arch of the toolkit
    # from the start (it was a lazy importlib registration, an import cycle with this module).
    code = ("from cmcr_core.models.teacher import TEACHER_ARCHS, build_teacher\n"
            "teacher = build_teacher('synthetic_semantic', widths=(8, 8, 8, 16))\n"
            "assert 'synthetic_semantic' in TEACHER_ARCHS\n"
            "assert teacher.out_channels == 16 and teacher.output_stride == 8\n"
            "assert type(teacher.encoder).__name__ == 'CompactSemanticNet'\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="widths must be 4"):
        CompactSemanticNet(widths=(8, 8, 8))
    with pytest.raises(ValueError, match="context_dilations"):
        CompactSemanticNet(context_dilations=())
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\)"):
        CompactSemanticNet()(torch.rand(3, 32, 32))
