"""Layers on SparseTensors with MinkowskiEngine parameter names and layouts.

| Layer | Parameters (MinkowskiEngine names) |
|---|---|
| `SparseConv3d` | `kernel` (K, C_in, C_out), or (C_in, C_out) for kernel 1 and stride 1; `bias` (1, C_out) |
| `SparseConvTranspose3d` | `kernel` (K, C_in, C_out); `bias` (1, C_out) |
| `SparseBatchNorm` | `bn.{weight, bias, running_mean, running_var, num_batches_tracked}` |

Convolutions are the only layers that touch coordinates; everything else maps features row-wise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.sparse import gemm
from cmcr_core.sparse.functional import autocast_dtype, autograd_needed, sparse_conv
from cmcr_core.sparse.tensor import SparseTensor


class _SparseConvBase(nn.Module):
    transposed = False

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool
    ) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.kernel_volume = kernel_size**3
        if self.is_pointwise:
            self.kernel = nn.Parameter(torch.empty(in_channels, out_channels))
        else:
            self.kernel = nn.Parameter(torch.empty(self.kernel_volume, in_channels, out_channels))
        if bias:
            self.bias = nn.Parameter(torch.empty(1, out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def is_pointwise(self) -> bool:
        """Kernel 1, stride 1: a plain (C_in, C_out) matmul, stored without the kernel axis."""
        return self.kernel_size == 1 and self.stride == 1

    def reset_parameters(self) -> None:
        """MinkowskiEngine default: uniform(+-1/sqrt(fan)), fan = C_in*K (C_out*K when transposed)."""
        fan = (self.out_channels if self.transposed else self.in_channels) * self.kernel_volume
        bound = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.kernel, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, bias={self.bias is not None}")

    def _pointwise(self, x: SparseTensor) -> SparseTensor:
        features = x.features
        if (not autograd_needed(features, self.kernel, self.bias)
                and gemm.use_onednn(features, self.in_channels, self.out_channels, inference=True)
                and autocast_dtype("cpu") is None):
            # Inference on CPU float32: oneDNN's matmul (~2x MKL's rate here, see gemm.py); training keeps
            # torch.mm, whose backward autograd provides (and which autocast casts, like sparse_conv).
            out = gemm.matmul(features, self.kernel, True)
            return x.replace(out if self.bias is None else out.add_(self.bias))
        if self.bias is None:
            return x.replace(torch.mm(features, self.kernel))
        return x.replace(torch.addmm(self.bias, features, self.kernel))

    def _finish(self, features: Tensor, x: SparseTensor, coordinate_set) -> SparseTensor:
        if self.bias is not None:  # in the features' dtype: bfloat16 under autocast, as addmm would give
            features = features + self.bias.to(features.dtype)
        return SparseTensor(features, manager=x.manager, coordinate_set=coordinate_set)


class SparseConv3d(_SparseConvBase):
    """Sparse 3D convolution (MinkowskiEngine `MinkowskiConvolution` semantics, dilation 1).

    Stride 1: output set = input set (odd kernels centred, even kernels offsets 0..K-1).  Stride t > 1:
    output set = unique floor(c / (s*t)) * (s*t) at tensor stride s*t.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """x: (N, C_in) at stride s -> (M, C_out) at stride s * self.stride."""
        if self.is_pointwise:
            return self._pointwise(x)
        manager = x.manager
        if self.stride == 1:
            cset = x.coordinate_set
            if self.kernel_size % 2 == 1:
                kmap = manager.submanifold_map(x.stride, self.kernel_size)
            else:
                kmap = manager.general_map(x.stride, self.kernel_size)
        else:
            kmap, cset = manager.strided_map(x.stride, self.kernel_size, self.stride)
        return self._finish(sparse_conv(x.features, self.kernel, kmap), x, cset)


class SparseConvTranspose3d(_SparseConvBase):
    """Transposed sparse convolution onto the CACHED coordinate set at stride s / t.

    Uses the pairs of the strided convolution of the same level pair read backwards, so its output rows are
    exactly the encoder's rows at that stride and skip concatenation is row-aligned.
    """

    transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2,
                 bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """x: (M, C_in) at stride s -> (N, C_out) on the cached set at stride s / self.stride."""
        if self.is_pointwise:
            return self._pointwise(x)
        manager = x.manager
        if self.stride == 1:
            cset = x.coordinate_set
            if self.kernel_size % 2 == 1:
                kmap = manager.submanifold_map(x.stride, self.kernel_size).transposed()
            else:
                kmap = manager.general_map(x.stride, self.kernel_size).transposed()
        else:
            kmap, cset = manager.transposed_map(x.stride, self.kernel_size, self.stride)
        return self._finish(sparse_conv(x.features, self.kernel, kmap), x, cset)


class SparseBatchNorm(nn.Module):
    """BatchNorm over the rows of a SparseTensor; wraps `nn.BatchNorm1d` as `bn` (MinkowskiEngine keys)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        bn = self.bn
        running = not bn.training and bn.running_mean is not None
        if running and not autograd_needed(x.features, bn.weight, bn.bias):
            # Inference with running statistics: y = x * scale + shift in one pass (about twice as fast as
            # batch_norm's kernel on (N, C) rows); same values up to rounding.
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale
            if bn.bias is not None:
                shift = shift + bn.bias
            return x.replace(torch.addcmul(shift, x.features, scale).to(x.features.dtype))
        return x.replace(bn(x.features))


class SparseReLU(nn.Module):
    """ReLU on the features; `inplace=True` is safe after BatchNorm (its backward needs only its input)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.relu(x.features, inplace=self.inplace))


def cat(*tensors: SparseTensor) -> SparseTensor:
    """Concatenate features along channels; all inputs must live on the same coordinate set (same rows)."""
    if not tensors:
        raise ValueError("cat needs at least one SparseTensor")
    first = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        if t.coordinate_set is not first.coordinate_set:
            raise ValueError(
                f"cat: tensor {i} is on a different coordinate set (stride {t.stride}, n={len(t)}) than "
                f"tensor 0 (stride {first.stride}, n={len(first)})"
            )
    return first.replace(torch.cat([t.features for t in tensors], dim=1))


def slice_to_points(x: SparseTensor, inverse: Tensor) -> Tensor:
    """Voxel features back to points: (N_points, C) = x.features[inverse] (inverse from `voxelize`)."""
    return x.features.index_select(0, inverse)


def global_pool(x: SparseTensor, mode: str = "mean", batch_size: int | None = None) -> Tensor:
    """Per-sample pooling of the features: (B, C), B = batch_size or 1 + max batch index.

    Samples without rows get 0 for every mode.
    """
    if mode not in ("mean", "max", "sum"):
        raise ValueError(f"global_pool: mode must be 'mean', 'max' or 'sum', got {mode!r}")
    b = batch_size if batch_size is not None else x.batch_size
    batch = x.coords[:, 0].to(torch.int64)
    feats = x.features
    out = feats.new_zeros(b, feats.shape[1])
    if mode == "max":
        index = batch.unsqueeze(1).expand_as(feats)
        return out.scatter_reduce(0, index, feats, "amax", include_self=False)
    out = out.index_add(0, batch, feats)
    if mode == "sum":
        return out
    counts = torch.bincount(batch, minlength=b).clamp_(min=1).to(feats.dtype)
    return out / counts.unsqueeze(1)
