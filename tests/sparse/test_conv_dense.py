"""Every convolution type against a dense conv3d / conv_transpose3d oracle: forward and gradients (f64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from dense_oracle import (
    dense_weight,
    dense_weight_transposed,
    random_coords,
    read_dense,
    sparse_kernel_grad,
    to_dense,
)

from cmcr_core.sparse import SparseConv3d, SparseConvTranspose3d, SparseTensor

SIZE = 8  # dense grid cells per axis
ORIGIN = -8  # multiple of 2 * 4: grids at strides 1, 2, 4 align with conv3d(stride=2) windows
BATCH = 2


def _input(seed: int, c_in: int, stride: int = 1, density: float = 0.3) -> tuple[SparseTensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(g, BATCH, SIZE, density, stride=stride, origin=ORIGIN)
    feats = torch.randn(len(coords), c_in, generator=g, dtype=torch.float64, requires_grad=True)
    return SparseTensor(feats, coords, stride=stride), feats


def _dense_inputs(x: SparseTensor, feats: torch.Tensor, kernel: torch.Tensor, kernel_size: int,
                  transposed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense copies (with gradients) of the sparse input and of the kernel."""
    dense_in = to_dense(feats.detach(), x.coords, ORIGIN, x.stride, SIZE, BATCH).requires_grad_(True)
    make = dense_weight_transposed if transposed else dense_weight
    dense_w = make(kernel.detach(), kernel_size).clone().requires_grad_(True)
    return dense_in, dense_w


def _check(x: SparseTensor, feats: torch.Tensor, y: SparseTensor, kernel: torch.Tensor,
           dense_in: torch.Tensor, dense_w: torch.Tensor, dense_out: torch.Tensor, transposed: bool) -> None:
    """Forward values at the active output sites, then input and weight gradients of sum(y * R)."""
    expected = read_dense(dense_out, y.coords, ORIGIN, y.stride)
    torch.testing.assert_close(y.features, expected, rtol=1e-12, atol=1e-12)
    r = torch.randn(y.features.shape, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    (y.features * r).sum().backward()
    (expected * r).sum().backward()
    grad_in = read_dense(dense_in.grad, x.coords, ORIGIN, x.stride)
    torch.testing.assert_close(feats.grad, grad_in, rtol=1e-12, atol=1e-12)
    grad_w = sparse_kernel_grad(dense_w.grad, transposed)
    torch.testing.assert_close(kernel.grad, grad_w, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_submanifold_odd_kernel(kernel_size: int, stride: int) -> None:
    x, feats = _input(kernel_size + stride, 3, stride=stride)
    conv = SparseConv3d(3, 4, kernel_size=kernel_size).double()
    y = conv(x)
    assert y.coordinate_set is x.coordinate_set
    dense_in, dense_w = _dense_inputs(x, feats, conv.kernel, kernel_size)
    dense_out = F.conv3d(dense_in, dense_w, padding=kernel_size // 2)
    _check(x, feats, y, conv.kernel, dense_in, dense_w, dense_out, transposed=False)


@pytest.mark.parametrize("stride", [1, 2])
def test_strided_k2s2_down(stride: int) -> None:
    x, feats = _input(10 + stride, 3, stride=stride)
    conv = SparseConv3d(3, 5, kernel_size=2, stride=2).double()
    y = conv(x)
    assert y.stride == 2 * stride
    # Output set = unique parents floor(c / 2s) * 2s.
    parents = torch.div(x.coords[:, 1:], 2 * stride, rounding_mode="floor") * 2 * stride
    expected_set = torch.unique(torch.cat([x.coords[:, :1], parents], 1), dim=0)
    assert torch.equal(torch.unique(y.coords, dim=0), expected_set)
    dense_in, dense_w = _dense_inputs(x, feats, conv.kernel, 2)
    dense_out = F.conv3d(dense_in, dense_w, stride=2)
    _check(x, feats, y, conv.kernel, dense_in, dense_w, dense_out, transposed=False)


def test_strided_k3s2_general() -> None:
    x, feats = _input(20, 2)
    conv = SparseConv3d(2, 3, kernel_size=3, stride=2).double()
    y = conv(x)
    dense_in, dense_w = _dense_inputs(x, feats, conv.kernel, 3)
    dense_out = F.conv3d(dense_in, dense_w, stride=2, padding=1)
    _check(x, feats, y, conv.kernel, dense_in, dense_w, dense_out, transposed=False)


def test_even_kernel_stride_one() -> None:
    x, feats = _input(21, 2)
    conv = SparseConv3d(2, 3, kernel_size=2, stride=1).double()
    y = conv(x)
    dense_in, dense_w = _dense_inputs(x, feats, conv.kernel, 2)
    dense_out = F.conv3d(F.pad(dense_in, (0, 1, 0, 1, 0, 1)), dense_w)  # offsets 0..1 (not centred)
    _check(x, feats, y, conv.kernel, dense_in, dense_w, dense_out, transposed=False)


def _coarse_input(seed: int, fine_stride: int, c_in: int) -> tuple[SparseTensor, SparseTensor, torch.Tensor]:
    """A fine set at `fine_stride` and random features on its cached coarse set (stride 2*fine_stride)."""
    fine, _ = _input(seed, 1, stride=fine_stride)
    _, coarse_set = fine.manager.strided_map(fine_stride, 2, 2)
    g = torch.Generator().manual_seed(seed + 1)
    feats = torch.randn(len(coarse_set), c_in, generator=g, dtype=torch.float64, requires_grad=True)
    return fine, SparseTensor(feats, manager=fine.manager, coordinate_set=coarse_set), feats


@pytest.mark.parametrize("fine_stride", [1, 2])
def test_transposed_k2s2_onto_cached_set(fine_stride: int) -> None:
    fine, coarse, feats = _coarse_input(30 + fine_stride, fine_stride, 4)
    conv = SparseConvTranspose3d(4, 3, kernel_size=2, stride=2).double()
    y = conv(coarse)
    assert y.coordinate_set is fine.coordinate_set  # rows aligned with the encoder's skip features
    dense_in, dense_w = _dense_inputs(coarse, feats, conv.kernel, 2, transposed=True)
    dense_out = F.conv_transpose3d(dense_in, dense_w, stride=2)
    _check(coarse, feats, y, conv.kernel, dense_in, dense_w, dense_out, transposed=True)


def test_transposed_k3s2_onto_cached_set() -> None:
    fine, coarse, feats = _coarse_input(40, 1, 2)
    conv = SparseConvTranspose3d(2, 3, kernel_size=3, stride=2).double()
    y = conv(coarse)
    assert y.coordinate_set is fine.coordinate_set
    dense_in, dense_w = _dense_inputs(coarse, feats, conv.kernel, 3, transposed=True)
    dense_out = F.conv_transpose3d(dense_in, dense_w, stride=2, padding=1, output_padding=1)
    _check(coarse, feats, y, conv.kernel, dense_in, dense_w, dense_out, transposed=True)


def test_pointwise_is_plain_matmul_with_bias() -> None:
    x, feats = _input(50, 3)
    conv = SparseConv3d(3, 2, kernel_size=1, bias=True).double()
    assert conv.kernel.shape == (3, 2) and conv.bias.shape == (1, 2)
    y = conv(x)
    torch.testing.assert_close(y.features, feats @ conv.kernel + conv.bias)
    assert y.coordinate_set is x.coordinate_set
