"""Integer coordinate keys, MinkowskiEngine kernel offsets and the per-stride coordinate sets.

Coordinates are `(N, 4)` integer tensors `[batch, x, y, z]` kept in input units: at tensor stride s every
spatial coordinate is a multiple of s (MinkowskiEngine convention).  For hashing-free neighbour search
every row is packed into one int64 key (18 bits per spatial axis, 9 bits of batch) whose ascending order
is the lexicographic order of `(batch, x, y, z)`.  Because the packing is linear inside the asserted
ranges, the key of `c + o` is `key(c) + key_delta(o)`, so neighbour queries never unpack.
"""

from __future__ import annotations

import torch
from torch import Tensor

AXIS_BITS = 18
AXIS_HALF = 1 << (AXIS_BITS - 1)  # spatial coordinates must lie in [-AXIS_HALF, AXIS_HALF)
BATCH_SHIFT = 3 * AXIS_BITS
MAX_BATCH = 1 << (63 - BATCH_SHIFT)  # 512: keeps the packed key positive in int64
_AXIS_MASK = (1 << AXIS_BITS) - 1


def check_coordinate_range(coords: Tensor, margin: int = 0, name: str = "coords") -> tuple[int, int]:
    """Raise ValueError unless `coords` (N, 4) packs into int64 keys with `margin` to spare per axis.

    Returns the (min, max) spatial coordinate, which callers cache so later neighbour queries (which move a
    coordinate by at most `margin`) can be validated without another pass over the data.
    """
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f"{name}: expected shape (N, 4) [batch, x, y, z], got {tuple(coords.shape)}")
    if coords.dtype.is_floating_point or coords.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got {coords.dtype}")
    if coords.shape[0] == 0:
        return 0, 0
    # One host round trip for the four bounds (a CUDA synchronisation each if read one by one).
    batch_min, batch_max, low, high = torch.stack(
        [*torch.aminmax(coords[:, 0]), *torch.aminmax(coords[:, 1:])]).tolist()
    if batch_min < 0 or batch_max >= MAX_BATCH:
        raise ValueError(f"{name}: batch index must lie in [0, {MAX_BATCH}), got [{batch_min}, {batch_max}]")
    check_query_range(low, high, margin, name)
    return low, high


def check_query_range(low: int, high: int, margin: int, name: str = "coords") -> None:
    """Raise ValueError if moving coordinates in [low, high] by up to `margin` leaves the packable range."""
    if low - margin < -AXIS_HALF or high + margin >= AXIS_HALF:
        raise ValueError(
            f"{name}: spatial coordinates span [{low}, {high}]; with neighbour offsets up to {margin} they "
            f"must stay inside [{-AXIS_HALF}, {AXIS_HALF - 1}] (18-bit keys). Use a larger voxel size."
        )


def pack_keys(coords: Tensor) -> Tensor:
    """Pack `[batch, x, y, z]` rows (N, 4) into int64 keys (N,) that sort lexicographically.

    The caller is responsible for the range check (`check_coordinate_range`); this function is on the
    hot path and does not synchronise with the device.
    """
    c = coords.to(torch.int64)
    return (
        (c[:, 0] << BATCH_SHIFT)
        + ((c[:, 1] + AXIS_HALF) << (2 * AXIS_BITS))
        + ((c[:, 2] + AXIS_HALF) << AXIS_BITS)
        + (c[:, 3] + AXIS_HALF)
    )


def unpack_keys(keys: Tensor) -> Tensor:
    """Inverse of `pack_keys`: int64 keys (N,) -> int32 coordinates (N, 4)."""
    out = torch.empty(keys.shape[0], 4, dtype=torch.int64, device=keys.device)
    out[:, 0] = keys >> BATCH_SHIFT
    out[:, 1] = ((keys >> (2 * AXIS_BITS)) & _AXIS_MASK) - AXIS_HALF
    out[:, 2] = ((keys >> AXIS_BITS) & _AXIS_MASK) - AXIS_HALF
    out[:, 3] = (keys & _AXIS_MASK) - AXIS_HALF
    return out.to(torch.int32)


def key_delta(offsets: Tensor) -> Tensor:
    """Key increments (K,) int64 of spatial offsets (K, 3): key(c + o) = key(c) + key_delta(o)."""
    o = offsets.to(torch.int64)
    return (o[:, 0] << (2 * AXIS_BITS)) + (o[:, 1] << AXIS_BITS) + o[:, 2]


def kernel_offsets(kernel_size: int, device: torch.device | str | None = None) -> Tensor:
    """Kernel offsets (K**3, 3) int64 in MinkowskiEngine order, in units of the input tensor stride.

    Index k = i0 + K*i1 + K*K*i2 with the FIRST spatial axis fastest (MinkowskiEngine's).  Odd kernels are
    centred (i - K//2, so k = K**3 // 2 is the centre); even kernels are not (offsets 0..K-1).
    Flattening `torch.meshgrid(indexing="ij")` would give the last axis fastest, hence the explicit build.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    r = torch.arange(kernel_size, dtype=torch.int64, device=device)
    if kernel_size % 2 == 1:
        r = r - kernel_size // 2
    k = kernel_size
    i0 = r.repeat(k * k)
    i1 = r.repeat_interleave(k).repeat(k)
    i2 = r.repeat_interleave(k * k)
    return torch.stack([i0, i1, i2], dim=1)


def floor_to_stride(coords: Tensor, stride: int) -> Tensor:
    """Parents of `coords` (N, 4) on the grid of tensor stride `stride`: floor(c / stride) * stride.

    Floor (not truncation) so negative coordinates, e.g. cylindrical azimuths, map to the correct cell.
    """
    out = coords.clone()
    out[:, 1:] = torch.div(coords[:, 1:], stride, rounding_mode="floor") * stride
    return out
