"""Image decoders: shapes, unit norm, parameter count, bilinear align_corners=True vs a numpy reference; the
decoders and teachers run on the test device (CMCR_TEST_DEVICE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcr_core.models.image_decoders import DECODER_PRESETS, PixelDecoder, build_image_decoder
from cmcr_core.models.teacher import build_teacher

torch.set_num_threads(1)


def _bilinear_align_corners(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Reference: output pixel y samples input row y·(H−1)/(out_h−1), linear in both directions."""
    _, _, h, w = x.shape
    out = np.zeros(x.shape[:2] + (out_h, out_w))
    for oy in range(out_h):
        sy = oy * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0 = min(int(np.floor(sy)), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for ox in range(out_w):
            sx = ox * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0 = min(int(np.floor(sx)), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = x[:, :, y0, x0] * (1 - fx) + x[:, :, y0, x1] * fx
            bottom = x[:, :, y1, x0] * (1 - fx) + x[:, :, y1, x1] * fx
            out[:, :, oy, ox] = top * (1 - fy) + bottom * fy
    return out


def test_reference_parameter_count():
    assert sum(p.numel() for p in build_image_decoder("ppkt").parameters()) == 131_136


def test_ppkt_decoder_matches_conv_then_reference_bilinear_then_l2(device):
    torch.manual_seed(0)
    decoder = PixelDecoder(in_channels=6, out_channels=4, upsample=8, normalize=False).to(device)
    features = torch.randn(2, 6, 3, 4).to(device)
    with torch.no_grad():
        projected = decoder.conv(features).cpu().numpy()
        out = decoder(features)
    assert out.shape == (2, 4, 24, 32)
    np.testing.assert_allclose(out.cpu().numpy(), _bilinear_align_corners(projected, 24, 32), rtol=1e-5,
                               atol=1e-5)
    decoder.normalize = True
    with torch.no_grad():
        normalised = decoder(features)
    assert torch.allclose(normalised.norm(dim=1), torch.ones(2, 24, 32, device=device), atol=1e-5)
    assert torch.allclose(normalised, out / out.norm(dim=1, keepdim=True), atol=1e-6)


def test_zero_vectors_stay_finite():
    decoder = PixelDecoder(in_channels=3, out_channels=2, upsample=2)
    with torch.no_grad():
        decoder.conv.weight.zero_()
        decoder.conv.bias.zero_()
    out = decoder(torch.randn(1, 3, 2, 2))
    assert torch.isfinite(out).all() and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("name", sorted(DECODER_PRESETS))
def test_presets_on_a_small_teacher(name, device):
    preset = DECODER_PRESETS[name]
    teacher = build_teacher("resnet18", replace_stride_with_dilation=preset.encoder_dilation).to(device)
    assert teacher.output_stride == preset.upsample
    decoder = build_image_decoder(name, in_channels=teacher.out_channels, out_channels=16).to(device)
    images = torch.rand(2, 3, 64, 96, device=device)
    out = decoder(teacher(images))
    assert out.shape == (2, 16, 64, 96)
    norms = out.norm(dim=1)
    if preset.normalize:
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    else:
        assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-2)
    out.sum().backward()  # the decoder trains although the teacher is frozen
    assert decoder.conv.weight.grad is not None and decoder.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_output_size_for_images_not_divisible_by_the_stride():
    teacher = build_teacher("resnet18")
    decoder = build_image_decoder("ppkt", in_channels=512, out_channels=8)
    out = decoder(teacher(torch.rand(1, 3, 70, 100)), output_size=(70, 100))
    assert out.shape == (1, 8, 70, 100)
    with pytest.raises(ValueError, match="unknown image decoder"):
        build_image_decoder("dilated")
