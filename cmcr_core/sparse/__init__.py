"""Sparse-convolution engine in plain PyTorch with MinkowskiEngine semantics (docs/sparse-engine.md)."""

from cmcr_core.sparse.coords import kernel_offsets, pack_keys, unpack_keys
from cmcr_core.sparse.functional import sparse_conv
from cmcr_core.sparse.gemm import set_cpu_gemm
from cmcr_core.sparse.kernel_map import KernelMap
from cmcr_core.sparse.manager import CoordinateManager, CoordinateSet
from cmcr_core.sparse.nn import (
    SparseBatchNorm,
    SparseConv3d,
    SparseConvTranspose3d,
    SparseReLU,
    cat,
    global_pool,
    slice_to_points,
)
from cmcr_core.sparse.tensor import SparseTensor
from cmcr_core.sparse.voxelize import Voxelization, batch_coordinates, voxel_mean, voxelize

__all__ = [
    "CoordinateManager",
    "CoordinateSet",
    "KernelMap",
    "SparseBatchNorm",
    "SparseConv3d",
    "SparseConvTranspose3d",
    "SparseReLU",
    "SparseTensor",
    "Voxelization",
    "batch_coordinates",
    "cat",
    "global_pool",
    "kernel_offsets",
    "pack_keys",
    "set_cpu_gemm",
    "slice_to_points",
    "sparse_conv",
    "unpack_keys",
    "voxel_mean",
    "voxelize",
]
