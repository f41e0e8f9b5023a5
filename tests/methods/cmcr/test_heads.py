"""CMCR heads: the reference parameter counts (METHODS.md §7.3) and the shapes/ranges of their outputs."""

from __future__ import annotations

import torch
from cmcr_toys import tiny_cmcr

from cmcr_core.models.cmcr_heads import MIMDecoder, OccupancyMLP
from cmcr_core.models.image_decoders import build_image_decoder
from cmcr_core.sparse import SparseConv3d


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_reference_parameter_counts():
    assert count(MIMDecoder(64)) == 23_523
    assert count(OccupancyMLP(67)) == 41_986
    assert count(SparseConv3d(96, 64, kernel_size=1, bias=True)) == 6_208  # final_class_level
    decoder2 = build_image_decoder("cmcr_specific", 2048, 64)
    assert count(decoder2) == 131_136 and decoder2.normalize is False


def test_mim_decoder_keeps_resolution_and_outputs_probabilities():
    with torch.no_grad():
        out = MIMDecoder(8)(torch.randn(2, 8, 13, 21) * 10)
    assert out.shape == (2, 3, 13, 21) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_occupancy_mlp_has_no_activation_between_its_last_two_layers():
    mlp = OccupancyMLP(67)
    kinds = [type(m).__name__ for m in mlp.layers]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "Linear"]
    assert mlp(torch.randn(5, 67)).shape == (5, 2)


def test_method_builds_the_second_3d_head_and_hands_off_only_the_student():
    method = tiny_cmcr()
    head = method.final_class_level
    assert head.in_channels == method.student.feature_channels and head.out_channels == 16
    handoff = method.handoff()
    assert set(handoff["student"]) == set(method.student.state_dict())
    assert not any("codebook" in k or "final_class_level" in k for k in handoff["student"])
    state = method.state_dict()
    assert {"codebook.embedding", "codebook.ema_weight", "codebook.ema_count"} <= set(state)
