"""The CPU float32 GEMM path (oneDNN pieces with padded row counts) against the float64 torch.mm path."""

from __future__ import annotations

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
    (y.features * r.to(y.features.dtype)).sum().backward()
    return y.features.detach(), feats.grad, layer.kernel.grad


@pytest.mark.parametrize("density", [0.3, 0.02])
@pytest.mark.parametrize("backend", ["onednn", "torch"])
@pytest.mark.parametrize("kind", ["sub3", "down2", "up2"])
def test_float32_path_matches_float64(backend: str, kind: str, density: float) -> None:
    """96 -> 112 channels (above `ONEDNN_MIN_MACS`, so "onednn" really runs the padded pieces); density 0.3:
    ~8k voxels, offsets with 300..8k pairs; density 0.02: offsets with a few pairs (exact short pieces)."""
    g = torch.Generator().manual_seed(0)
    c_in, c_out = 96, 112
    coords = random_coords(g, 2, 24, density, origin=-12)
    fine = SparseTensor(torch.randn(len(coords), c_in, generator=g), coords)
    if kind == "sub3":
        x, layer = fine, SparseConv3d(c_in, c_out, 3)
    elif kind == "down2":
        x, layer = fine, SparseConv3d(c_in, c_out, 2, 2)
    else:
        _, coarse = fine.manager.strided_map(1, 2, 2)
        feats = torch.randn(len(coarse), c_in, generator=g)
        x = SparseTensor(feats, manager=fine.manager, coordinate_set=coarse)
        layer = SparseConvTranspose3d(c_in, c_out, 2, 2)
    _, coarse_set = fine.manager.strided_map(1, 2, 2)
    gemm.set_cpu_gemm(backend)
    try:
        assert gemm.use_onednn(x.features, c_in, c_out) == (backend == "onednn" and gemm._onednn_works())
        n_out = len(coarse_set) if kind == "down2" else len(coords)
        r = torch.randn(n_out, c_out, generator=g)
        y32, gx32, gw32 = _grads(layer, x, r)
        with torch.no_grad():  # the inference path: finer pieces (gemm.inference_pieces)
            y32_inference = layer(x).features
        layer64 = layer.double()
        layer64.kernel.grad = None
        y64, gx64, gw64 = _grads(layer64, x.replace(x.features.double()), r)
    finally:
        gemm.set_cpu_gemm("onednn")
    for a, b in ((y32, y64), (y32_inference, y64), (gx32, gx64), (gw32, gw64)):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


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
