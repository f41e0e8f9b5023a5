"""Voxelisation: floor quantisation of cartesian or cylindrical coordinates (as SLidR's loaders).

Semantics of MinkowskiEngine's `sparse_quantize(return_index=True, return_inverse=True)` with one
documented deviation: the representative point of a voxel is the FIRST point of that voxel in input
order (deterministic), whereas MinkowskiEngine keeps whichever point its hash map saw first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cmcr_core.sparse.coords import check_coordinate_range, pack_keys, unpack_keys


@dataclass(frozen=True)
class Voxelization:
    """Result of `voxelize` for N points and V voxels.

    Attributes:
        coords: (V, 3) int32 voxel coordinates, or (V, 4) `[batch, ...]` when a batch index was given;
            sorted lexicographically (batch first).
        representative: (V,) int64 index of the first input point falling in each voxel.
        inverse: (N,) int64 voxel of each point; coords[inverse] are the floored point coordinates.
    """

    coords: Tensor
    representative: Tensor
    inverse: Tensor

    @property
    def num_voxels(self) -> int:
        return self.coords.shape[0]


def quantization_coordinates(points: Tensor, voxel_size: float, cylindrical: bool = False) -> Tensor:
    """Continuous voxel coordinates (N, 3) before flooring.

    Cartesian: xyz / voxel_size.  Cylindrical: (rho / voxel_size, phi in degrees, z / voxel_size) with
    rho = sqrt(x^2 + y^2), phi = atan2(y, x) * 180 / pi in (-180, 180]: 1-degree azimuth bins, no
    wrap-around (SLidR/CMCR convention).
    """
    if points.dim() != 2 or points.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, 3+), got {tuple(points.shape)}")
    if not points.dtype.is_floating_point:
        raise ValueError(f"points: expected a floating-point tensor, got {points.dtype}")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    if not cylindrical:
        return torch.stack([x, y, z], dim=1) / voxel_size
    rho = torch.sqrt(x * x + y * y) / voxel_size
    phi = torch.atan2(y, x) * (180.0 / math.pi)
    return torch.stack([rho, phi, z / voxel_size], dim=1)


def voxelize(points: Tensor, voxel_size: float, cylindrical: bool = False,
             batch: Tensor | None = None) -> Voxelization:
    """Floor-quantise points into unique voxels.

    Args:
        points: (N, 3+) float xyz (extra columns ignored).
        voxel_size: edge length (radial/vertical edge for cylindrical coordinates).
        cylindrical: use (rho, phi degrees, z) instead of (x, y, z).
        batch: optional (N,) integer sample index of each point; adds column 0 to `coords`, and points of
            different samples never share a voxel.
    Returns:
        `Voxelization` (coords, representative, inverse).
    """
    q = quantization_coordinates(points, voxel_size, cylindrical)
    if q.numel() and not bool(torch.isfinite(q).all()):
        raise ValueError("points: non-finite coordinates (NaN or inf) cannot be voxelised")
    n = q.shape[0]
    grid = torch.empty(n, 4, dtype=torch.int64, device=points.device)
    grid[:, 1:] = torch.floor(q).to(torch.int64)
    if batch is None:
        grid[:, 0] = 0
    else:
        if batch.shape != (n,):
            raise ValueError(f"batch: expected shape ({n},), got {tuple(batch.shape)}")
        grid[:, 0] = batch.to(torch.int64)
    check_coordinate_range(grid, name="voxel coordinates")
    keys, inverse = torch.unique(pack_keys(grid), sorted=True, return_inverse=True)
    representative = torch.full((keys.numel(),), n, dtype=torch.int64, device=points.device)
    representative.scatter_reduce_(0, inverse, torch.arange(n, device=points.device), "amin")
    coords = unpack_keys(keys)
    if batch is None:
        coords = coords[:, 1:].contiguous()
    return Voxelization(coords=coords, representative=representative, inverse=inverse)


def voxel_mean(features: Tensor, inverse: Tensor, num_voxels: int) -> Tensor:
    """Average point features per voxel: (N, C) features, (N,) inverse -> (V, C)."""
    if features.shape[0] != inverse.shape[0]:
        raise ValueError(f"features has {features.shape[0]} rows but inverse has {inverse.shape[0]}")
    feats = features if features.dim() == 2 else features.unsqueeze(1)
    sums = feats.new_zeros(num_voxels, feats.shape[1]).index_add_(0, inverse, feats)
    counts = torch.bincount(inverse, minlength=num_voxels).clamp_(min=1).to(feats.dtype)
    out = sums / counts.unsqueeze(1)
    return out if features.dim() == 2 else out.squeeze(1)


def batch_coordinates(coords: Sequence[Tensor]) -> Tensor:
    """Prepend the sample index to per-sample voxel coordinates: [(V_i, 3)] -> (sum V_i, 4) int32."""
    if len(coords) == 0:
        raise ValueError("batch_coordinates needs at least one sample")
    parts = []
    for i, c in enumerate(coords):
        if c.dim() != 2 or c.shape[1] != 3:
            raise ValueError(f"sample {i}: expected coordinates (V, 3), got {tuple(c.shape)}")
        index = torch.full((c.shape[0], 1), i, dtype=torch.int32, device=c.device)
        parts.append(torch.cat([index, c.to(torch.int32)], dim=1))
    return torch.cat(parts, dim=0)
