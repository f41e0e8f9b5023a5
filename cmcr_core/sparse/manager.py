"""Coordinate manager: the coordinate sets and kernel maps shared along one forward pass.

One manager per input batch.  It holds one coordinate set per tensor stride (the decoder reuses the
encoder's sets, so skip concatenations are row-aligned) and caches every kernel map by
(kind, tensor stride, kernel size, convolution stride): the ~25 convolutions at one resolution of a
MinkUNet34C build their map once.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from cmcr_core.sparse.coords import check_coordinate_range, check_query_range, floor_to_stride, pack_keys
from cmcr_core.sparse.kernel_map import (
    KernelMap,
    pooling_map,
    query_map,
    strided_coordinates,
    submanifold_map,
)


class CoordinateSet:
    """The unique coordinates (N, 4) int32 `[batch, x, y, z]` of one tensor stride.

    Keys are packed int64 (`coords.pack_keys`); `sorted_keys`/`perm` (= `torch.sort(keys)`) are what the
    neighbour searches run on.  `low`/`high` bound the spatial coordinates for the key-range checks.
    """

    def __init__(self, coords: Tensor, stride: int, keys: Tensor, sorted_keys: Tensor, perm: Tensor,
                 low: int, high: int) -> None:
        self.coords = coords
        self.stride = stride
        self.keys = keys
        self.sorted_keys = sorted_keys
        self.perm = perm
        self.low = low
        self.high = high

    def __len__(self) -> int:
        return self.coords.shape[0]

    def __repr__(self) -> str:
        return f"CoordinateSet(n={len(self)}, stride={self.stride}, device={self.coords.device})"


class CoordinateManager:
    """Per-forward cache of coordinate sets (by stride) and kernel maps.

    `map_seconds` accumulates the wall time spent building sets and maps (for benchmarks).
    """

    def __init__(self) -> None:
        self._sets: dict[int, CoordinateSet] = {}
        self._maps: dict[tuple, KernelMap] = {}
        self._parents: dict[tuple[int, int], Tensor] = {}
        self.map_seconds = 0.0

    def __repr__(self) -> str:
        return f"CoordinateManager(strides={sorted(self._sets)}, maps={len(self._maps)})"

    @property
    def strides(self) -> list[int]:
        return sorted(self._sets)

    def insert(self, coords: Tensor, stride: int = 1) -> CoordinateSet:
        """Register user coordinates (N, 4) at `stride`; they must be unique multiples of `stride`.

        Raises ValueError for duplicates, bad shapes/ranges, or a different set already at this stride.
        """
        if stride in self._sets:
            existing = self._sets[stride]
            if existing.coords is coords:
                return existing
            raise ValueError(f"a different coordinate set is already registered at tensor stride {stride}")
        if stride < 1:
            raise ValueError(f"tensor stride must be >= 1, got {stride}")
        start = time.perf_counter()
        low, high = check_coordinate_range(coords)
        if stride > 1 and coords.shape[0] and bool((torch.remainder(coords[:, 1:], stride) != 0).any()):
            raise ValueError(f"coords: spatial coordinates must be multiples of the tensor stride {stride}")
        keys = pack_keys(coords)
        sorted_keys, perm = torch.sort(keys)
        if sorted_keys.numel() > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
            dup = int(perm[1:][sorted_keys[1:] == sorted_keys[:-1]][0])
            raise ValueError(
                f"coords: duplicate coordinate {coords[dup].tolist()} (row {dup}); voxelize first"
            )
        cset = CoordinateSet(coords.to(torch.int32), stride, keys, sorted_keys, perm, low, high)
        self._sets[stride] = cset
        self.map_seconds += time.perf_counter() - start
        return cset

    def coordinate_set(self, stride: int) -> CoordinateSet:
        if stride not in self._sets:
            raise KeyError(f"no coordinate set at tensor stride {stride}; cached strides: {self.strides}")
        return self._sets[stride]

    def submanifold_map(self, stride: int, kernel_size: int) -> KernelMap:
        """Map of a stride-1 convolution with an odd kernel on the set at `stride` (output = input set)."""
        key = ("sub", stride, kernel_size)
        if key not in self._maps:
            start = time.perf_counter()
            cset = self.coordinate_set(stride)
            check_query_range(cset.low, cset.high, (kernel_size // 2) * stride)
            self._maps[key] = submanifold_map(cset.keys, cset.sorted_keys, cset.perm, kernel_size, stride)
            self.map_seconds += time.perf_counter() - start
        return self._maps[key]

    def _strided_set(self, stride: int, conv_stride: int) -> tuple[CoordinateSet, Tensor]:
        """Set at stride * conv_stride (created from the set at `stride` if new) and each row's parent."""
        out_stride = stride * conv_stride
        if (stride, conv_stride) in self._parents:
            return self._sets[out_stride], self._parents[(stride, conv_stride)]
        cset = self.coordinate_set(stride)
        if out_stride in self._sets:
            out = self._sets[out_stride]
            parent_keys = pack_keys(floor_to_stride(cset.coords, out_stride))
            pos = torch.searchsorted(out.sorted_keys, parent_keys).clamp_(max=max(len(out) - 1, 0))
            if len(out) == 0 or bool((out.sorted_keys[pos] != parent_keys).any()):
                raise ValueError(
                    f"the cached set at stride {out_stride} does not contain every parent of stride {stride}"
                )
            parent_row = out.perm[pos]
        else:
            coords, out_keys, parent_row = strided_coordinates(cset.coords, out_stride)
            perm = torch.arange(out_keys.numel(), device=out_keys.device)
            # Flooring can only lower coordinates, by less than out_stride.
            low = cset.low - out_stride
            out = CoordinateSet(coords, out_stride, out_keys, out_keys, perm, low, cset.high)
            self._sets[out_stride] = out
        self._parents[(stride, conv_stride)] = parent_row
        return out, parent_row

    def strided_map(self, stride: int, kernel_size: int, conv_stride: int) -> tuple[KernelMap, CoordinateSet]:
        """Map and output set of a convolution with `conv_stride` > 1 from the set at `stride`."""
        key = ("down", stride, kernel_size, conv_stride)
        if key not in self._maps:
            start = time.perf_counter()
            out, parent_row = self._strided_set(stride, conv_stride)
            cset = self.coordinate_set(stride)
            if kernel_size == conv_stride:
                kmap = pooling_map(cset.coords, parent_row, len(out), stride, stride * conv_stride)
            else:
                reach = (kernel_size // 2 if kernel_size % 2 else kernel_size - 1) * stride
                check_query_range(out.low, out.high, reach)
                kmap = query_map(cset.sorted_keys, cset.perm, out.keys, kernel_size, stride)
            self._maps[key] = kmap
            self.map_seconds += time.perf_counter() - start
        return self._maps[key], self._sets[stride * conv_stride]

    def transposed_map(
        self, stride: int, kernel_size: int, conv_stride: int
    ) -> tuple[KernelMap, CoordinateSet]:
        """Map and output set of a transposed convolution from the set at `stride` onto the CACHED set at
        stride // conv_stride: the pairs of the matching strided convolution, read backwards."""
        if stride % conv_stride:
            raise ValueError(f"transposed convolution: stride {stride} is not divisible by {conv_stride}")
        fine = stride // conv_stride
        if fine not in self._sets:
            raise KeyError(
                f"transposed convolution needs the cached set at stride {fine}; cached: {self.strides}"
            )
        key = ("up", stride, kernel_size, conv_stride)
        if key not in self._maps:
            down, _ = self.strided_map(fine, kernel_size, conv_stride)
            self._maps[key] = down.transposed()
        return self._maps[key], self._sets[fine]

    def general_map(self, stride: int, kernel_size: int) -> KernelMap:
        """Stride-1 map of any kernel (even kernels are not centred) by direct search; output = input set."""
        key = ("query", stride, kernel_size)
        if key not in self._maps:
            start = time.perf_counter()
            cset = self.coordinate_set(stride)
            reach = (kernel_size // 2 if kernel_size % 2 else kernel_size - 1) * stride
            check_query_range(cset.low, cset.high, reach)
            self._maps[key] = query_map(cset.sorted_keys, cset.perm, cset.keys, kernel_size, stride)
            self.map_seconds += time.perf_counter() - start
        return self._maps[key]
