"""Every convolution type against a dense conv3d / conv_transpose3d oracle: forward and gradients.

The oracle runs on the CPU in float64; the engine runs on the test device (CMCR_TEST_DEVICE, see
tests/support/device.py) in float64 and float32, and is compared with the per-dtype `tolerance`.
"""

from __future__ import annotations

import copy

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
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])


class Case:
    """One convolution on the device next to its float64 CPU copy: `layer(x)` runs on the device, the
    oracle reads the CPU copies (`cpu_features`, `cpu_layer`)."""

    def __init__(self, x: SparseTensor, cpu_features: torch.Tensor, cpu_layer: torch.nn.Module,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.x, self.cpu_features, self.cpu_layer, self.dtype = x, cpu_features, cpu_layer, dtype
        self.layer = copy.deepcopy(cpu_layer).to(device, dtype)
        self.y = self.layer(x)


def _input(seed: int, c_in: int, device: torch.device, dtype: torch.dtype, stride: int = 1,
           density: float = 0.3) -> tuple[SparseTensor, torch.Tensor]:
    """(SparseTensor on the device, its float64 CPU features); the device features are a leaf."""
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(g, BATCH, SIZE, density, stride=stride, origin=ORIGIN)
    feats = torch.randn(len(coords), c_in, generator=g, dtype=torch.float64)
    leaf = feats.to(device, dtype, copy=True).requires_grad_(True)
    return SparseTensor(leaf, coords.to(device), stride=stride), feats


def _dense_inputs(case: Case, kernel_size: int, transposed: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense float64 CPU copies (with gradients) of the sparse input and of the kernel."""
    coords = case.x.coords.cpu()
    dense_in = to_dense(case.cpu_features, coords, ORIGIN, case.x.stride, SIZE, BATCH).requires_grad_(True)
    make = dense_weight_transposed if transposed else dense_weight
    dense_w = make(case.cpu_layer.kernel.detach(), kernel_size).clone().requires_grad_(True)
    return dense_in, dense_w


def _check(case: Case, dense_in: torch.Tensor, dense_w: torch.Tensor, dense_out: torch.Tensor,
           transposed: bool, tolerance) -> None:
    """Forward values at the active output sites, then input and weight gradients of sum(y * R)."""
    x, y = case.x, case.y
    assert y.features.dtype == case.dtype and y.features.device == x.device
    expected = read_dense(dense_out, y.coords.cpu(), ORIGIN, y.stride)
    tolerance.check(y.features, expected, msg="forward")
    r = torch.randn(y.features.shape, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    (y.features * r.to(y.features)).sum().backward()
    (expected * r).sum().backward()
    grad_in = read_dense(dense_in.grad, x.coords.cpu(), ORIGIN, x.stride)
    tolerance.check(x.features.grad, grad_in, msg="input gradient")
    grad_w = sparse_kernel_grad(dense_w.grad, transposed)
    tolerance.check(case.layer.kernel.grad, grad_w, msg="weight gradient")


@DTYPES
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_submanifold_odd_kernel(kernel_size: int, stride: int, dtype, device, tolerance) -> None:
    x, feats = _input(kernel_size + stride, 3, device, dtype, stride=stride)
    case = Case(x, feats, SparseConv3d(3, 4, kernel_size=kernel_size).double(), device, dtype)
    assert case.y.coordinate_set is x.coordinate_set
    dense_in, dense_w = _dense_inputs(case, kernel_size)
    dense_out = F.conv3d(dense_in, dense_w, padding=kernel_size // 2)
    _check(case, dense_in, dense_w, dense_out, False, tolerance)


@DTYPES
@pytest.mark.parametrize("stride", [1, 2])
def test_strided_k2s2_down(stride: int, dtype, device, tolerance) -> None:
    x, feats = _input(10 + stride, 3, device, dtype, stride=stride)
    case = Case(x, feats, SparseConv3d(3, 5, kernel_size=2, stride=2).double(), device, dtype)
    y = case.y
    assert y.stride == 2 * stride
    # Output set = unique parents floor(c / 2s) * 2s.
    coords = x.coords.cpu()
    parents = torch.div(coords[:, 1:], 2 * stride, rounding_mode="floor") * 2 * stride
    expected_set = torch.unique(torch.cat([coords[:, :1], parents], 1), dim=0)
    assert torch.equal(torch.unique(y.coords.cpu(), dim=0), expected_set)
    dense_in, dense_w = _dense_inputs(case, 2)
    dense_out = F.conv3d(dense_in, dense_w, stride=2)
    _check(case, dense_in, dense_w, dense_out, False, tolerance)


@DTYPES
def test_strided_k3s2_general(dtype, device, tolerance) -> None:
    x, feats = _input(20, 2, device, dtype)
    case = Case(x, feats, SparseConv3d(2, 3, kernel_size=3, stride=2).double(), device, dtype)
    dense_in, dense_w = _dense_inputs(case, 3)
    dense_out = F.conv3d(dense_in, dense_w, stride=2, padding=1)
    _check(case, dense_in, dense_w, dense_out, False, tolerance)


@DTYPES
def test_even_kernel_stride_one(dtype, device, tolerance) -> None:
    x, feats = _input(21, 2, device, dtype)
    case = Case(x, feats, SparseConv3d(2, 3, kernel_size=2, stride=1).double(), device, dtype)
    dense_in, dense_w = _dense_inputs(case, 2)
    dense_out = F.conv3d(F.pad(dense_in, (0, 1, 0, 1, 0, 1)), dense_w)  # offsets 0..1 (not centred)
    _check(case, dense_in, dense_w, dense_out, False, tolerance)


def _coarse_input(seed: int, fine_stride: int, c_in: int, device: torch.device, dtype: torch.dtype
                  ) -> tuple[SparseTensor, SparseTensor, torch.Tensor]:
    """A fine set at `fine_stride` and random features on its cached coarse set (stride 2*fine_stride):
    (fine, coarse on the device, coarse float64 CPU features)."""
    fine, _ = _input(seed, 1, device, dtype, stride=fine_stride)
    _, coarse_set = fine.manager.strided_map(fine_stride, 2, 2)
    g = torch.Generator().manual_seed(seed + 1)
    feats = torch.randn(len(coarse_set), c_in, generator=g, dtype=torch.float64)
    leaf = feats.to(device, dtype, copy=True).requires_grad_(True)
    return fine, SparseTensor(leaf, manager=fine.manager, coordinate_set=coarse_set), feats


@DTYPES
@pytest.mark.parametrize("fine_stride", [1, 2])
def test_transposed_k2s2_onto_cached_set(fine_stride: int, dtype, device, tolerance) -> None:
    fine, coarse, feats = _coarse_input(30 + fine_stride, fine_stride, 4, device, dtype)
    case = Case(coarse, feats, SparseConvTranspose3d(4, 3, kernel_size=2, stride=2).double(), device, dtype)
    assert case.y.coordinate_set is fine.coordinate_set  # rows aligned with the encoder's skip features
    dense_in, dense_w = _dense_inputs(case, 2, transposed=True)
    dense_out = F.conv_transpose3d(dense_in, dense_w, stride=2)
    _check(case, dense_in, dense_w, dense_out, True, tolerance)


@DTYPES
def test_transposed_k3s2_onto_cached_set(dtype, device, tolerance) -> None:
    fine, coarse, feats = _coarse_input(40, 1, 2, device, dtype)
    case = Case(coarse, feats, SparseConvTranspose3d(2, 3, kernel_size=3, stride=2).double(), device, dtype)
    assert case.y.coordinate_set is fine.coordinate_set
    dense_in, dense_w = _dense_inputs(case, 3, transposed=True)
    dense_out = F.conv_transpose3d(dense_in, dense_w, stride=2, padding=1, output_padding=1)
    _check(case, dense_in, dense_w, dense_out, True, tolerance)


@DTYPES
def test_pointwise_is_plain_matmul_with_bias(dtype, device, tolerance) -> None:
    x, feats = _input(50, 3, device, dtype)
    case = Case(x, feats, SparseConv3d(3, 2, kernel_size=1, bias=True).double(), device, dtype)
    assert case.layer.kernel.shape == (3, 2) and case.layer.bias.shape == (1, 2)
    tolerance.check(case.y.features, feats @ case.cpu_layer.kernel + case.cpu_layer.bias)
    assert case.y.coordinate_set is x.coordinate_set
