"""Dense-grid oracles for sparse convolutions: scatter sparse features into a small dense grid, run
`torch.nn.functional.conv3d` / `conv_transpose3d`, read the result back at the active sites.

Weights map as in ENGINE.md §4.4: dense[co, ci, i0, i1, i2] = kernel[i0 + K*i1 + K*K*i2][ci, co], with the
dense spatial axes in the order of the coordinate columns (x, y, z).
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_coords(generator: torch.Generator, batch: int, size: int, density: float, stride: int = 1,
                  origin: int = -6) -> Tensor:
    """Unique coordinates (N, 4) int32 of a random occupancy grid: `size`^3 cells of edge `stride`
    starting at `origin` (negative on purpose: floor vs truncation), per batch sample."""
    occupied = torch.rand(batch, size, size, size, generator=generator) < density
    idx = torch.nonzero(occupied)
    coords = idx.clone()
    coords[:, 1:] = origin + idx[:, 1:] * stride
    return coords.to(torch.int32).contiguous()


def to_dense(features: Tensor, coords: Tensor, origin: int, stride: int, size: int, batch: int) -> Tensor:
    """(N, C) features at coords (N, 4) -> (B, C, size, size, size) grid, cell = (c - origin) / stride."""
    grid = features.new_zeros(batch, features.shape[1], size, size, size)
    idx = grid_index(coords, origin, stride)
    grid[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = features
    return grid


def grid_index(coords: Tensor, origin: int, stride: int) -> Tensor:
    """(N, 4) int64 [batch, i, j, k] grid cells of coordinates (exact division is asserted)."""
    c = coords.to(torch.int64).clone()
    rel = c[:, 1:] - origin
    assert bool((rel % stride == 0).all()) and bool((rel >= 0).all()), "coordinates off the dense grid"
    c[:, 1:] = rel // stride
    return c


def read_dense(grid: Tensor, coords: Tensor, origin: int, stride: int) -> Tensor:
    """Rows (N, C) of a dense (B, C, D, D, D) grid at coords (N, 4)."""
    idx = grid_index(coords, origin, stride)
    return grid[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]]


def dense_weight(kernel: Tensor, kernel_size: int) -> Tensor:
    """(K, C_in, C_out) -> conv3d weight (C_out, C_in, k, k, k) with axes (x, y, z)."""
    k = kernel_size
    return kernel.reshape(k, k, k, kernel.shape[1], kernel.shape[2]).permute(4, 3, 2, 1, 0)


def dense_weight_transposed(kernel: Tensor, kernel_size: int) -> Tensor:
    """(K, C_in, C_out) -> conv_transpose3d weight (C_in, C_out, k, k, k) with axes (x, y, z)."""
    k = kernel_size
    return kernel.reshape(k, k, k, kernel.shape[1], kernel.shape[2]).permute(3, 4, 2, 1, 0)


def sparse_kernel_grad(dense_grad: Tensor, transposed: bool) -> Tensor:
    """Inverse of `dense_weight` / `dense_weight_transposed` for a weight gradient."""
    if transposed:
        g = dense_grad.permute(4, 3, 2, 0, 1)  # (i2, i1, i0, C_in, C_out)
    else:
        g = dense_grad.permute(4, 3, 2, 1, 0)
    return g.reshape(-1, g.shape[3], g.shape[4])
