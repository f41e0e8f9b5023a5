"""The float32 GEMM paths (CPU: oneDNN pieces with padded row counts; every device: torch.mm) against the
float64 CPU path; the float32 side runs on the test device (CMCR_TEST_DEVICE, see tests/support/device.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from dense_oracle import random_coords

from cmcr_core.sparse import SparseConv3d, SparseConvTranspose3d, SparseTensor, gemm


@pytest.mark.parametrize("m", [1, 31, 32, 33, 100, 257, 1000, 5000, 8192, 8193, 20000])
@pytest.mark.parametrize("which", ["training", "inference"])
def test_row_pieces_cover_exactly(m: int, which: str) -> None:
    split, sizes = ((gemm.padded_pieces, gemm.ROW_SIZES) if which == "training"
                    else (gemm.inference_pieces, gemm.INFERENCE_ROW_SIZES))
    padded = split(m)
    assert sum(rows for _, rows, _ in padded) == m
    assert [start for start, _, _ in padded] == [sum(r for _, r, _ in padded[:i]) for i in range(len(padded))]
    for i, (_, rows, call_rows) in enumerate(padded):
        if rows < gemm.EXACT_ROWS:  # a short last piece is run exactly, without padding
            assert call_rows == rows and i == len(padded) - 1
            continue
        assert call_rows in sizes and rows <= call_rows
        assert call_rows - rows <= max(sizes[0] - 1, min(0.15 * rows, gemm.MAX_PAD_ROWS))
    exact = gemm.exact_pieces(m)
    assert sum(rows for _, rows in exact) == m
    assert all(rows in gemm.ROW_SIZES for _, rows in exact[:-1])
    assert exact[-1][1] in gemm.ROW_SIZES or exact[-1][1] < gemm.ROW_SIZES[0]
    assert len(padded) <= m // max(gemm.ROW_SIZES) + len(gemm.ROW_SIZES)


def _grads(layer: torch.nn.Module, x: SparseTensor, r: torch.Tensor) -> tuple[torch.Tensor, ...]:
    feats = x.features.detach().clone().requires_grad_(True)
    y = layer(x.replace(feats))
    (y.features * r.to(y.features)).sum().backward()
    return y.features.detach(), feats.grad, layer.kernel.grad


def _problem(kind: str, density: float, device: torch.device, dtype: torch.dtype
             ) -> tuple[SparseTensor, torch.Tensor]:
    """(input, output weights R) of one layer kind, the same values on every call."""
    g = torch.Generator().manual_seed(0)
    coords = random_coords(g, 2, 24, density, origin=-12).to(device)
    fine = SparseTensor(torch.randn(len(coords), C_IN, generator=g).to(device, dtype), coords)
    x = fine
    _, coarse = fine.manager.strided_map(1, 2, 2)
    if kind == "up2":
        feats = torch.randn(len(coarse), C_IN, generator=g).to(device, dtype)
        x = SparseTensor(feats, manager=fine.manager, coordinate_set=coarse)
    n_out = len(coarse) if kind == "down2" else len(coords)
    return x, torch.randn(n_out, C_OUT, generator=g)


C_IN, C_OUT = 96, 112


@pytest.mark.parametrize("density", [0.3, 0.02])
@pytest.mark.parametrize("backend", ["onednn", "torch"])
@pytest.mark.parametrize("kind", ["sub3", "down2", "up2"])
def test_float32_path_matches_float64(backend: str, kind: str, density: float, device, tolerance) -> None:
    """96 -> 112 channels (above `ONEDNN_MIN_MACS`, so "onednn" really runs the padded pieces); density 0.3:
    ~8k voxels, offsets with 300..8k pairs; density 0.02: offsets with a few pairs (exact short pieces).
    Float32 on the test device ("torch": torch.mm, the path of every device but the CPU's oneDNN) against
    float64 on the CPU."""
    if backend == "onednn" and device.type != "cpu":
        pytest.skip("oneDNN is the CPU float32 path")
    layers = {"sub3": lambda: SparseConv3d(C_IN, C_OUT, 3), "down2": lambda: SparseConv3d(C_IN, C_OUT, 2, 2),
              "up2": lambda: SparseConvTranspose3d(C_IN, C_OUT, 2, 2)}
    layer64 = layers[kind]().double()
    layer = copy.deepcopy(layer64).to(device, torch.float32)
    x, r = _problem(kind, density, device, torch.float32)
    gemm.set_cpu_gemm(backend)
    try:
        assert gemm.use_onednn(x.features, C_IN, C_OUT) == (
            backend == "onednn" and device.type == "cpu" and gemm._onednn_works())
        y32, gx32, gw32 = _grads(layer, x, r)
        with torch.no_grad():  # the inference path: finer pieces (gemm.inference_pieces)
            y32_inference = layer(x).features
    finally:
        gemm.set_cpu_gemm("onednn")
    y64, gx64, gw64 = _grads(layer64, *_problem(kind, density, torch.device("cpu"), torch.float64))
    for a, b, name in ((y32, y64, "forward"), (y32_inference, y64, "inference forward"),
                       (gx32, gx64, "input gradient"), (gw32, gw64, "weight gradient")):
        assert a.dtype == torch.float32 and a.device == x.device
        tolerance.check(a, b, msg=name)


def test_inference_uses_onednn_for_64_channel_layers() -> None:
    """64 -> 64 is below the training threshold but above the inference one: without autograd its forward
    runs the oneDNN pieces, and agrees with the float64 product."""
    if not gemm._onednn_works():
        pytest.skip("oneDNN matmul unavailable")
    assert gemm.use_onednn(torch.zeros(1), 64, 64, inference=True)
    assert not gemm.use_onednn(torch.zeros(1), 64, 64)
    g = torch.Generator().manual_seed(1)
    coords = random_coords(g, 2, 20, 0.3, origin=-10)
    x = SparseTensor(torch.randn(len(coords), 64, generator=g), coords)
    layer = SparseConv3d(64, 64, 3)
    with torch.no_grad():
        y = layer(x).features
        y64 = layer.double()(x.replace(x.features.double())).features
    torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-4 * float(y64.abs().max()))
