"""Kernel maps: for every kernel offset, which input rows feed which output rows.

A map stores the (input row, output row) pairs of all offsets in two flat int64 tensors grouped by kernel
offset, with the group boundaries as Python ints (counted once when the map is built, so executing a
convolution never synchronises with the device).  Three builders cover every layer:

* `submanifold_map`: odd kernel, stride 1, output set = input set.  Offsets o and -o give the same pairs
  with input and output swapped, so only the K**3 // 2 offsets before the centre are searched; the centre
  pairs every row with itself and is executed as a plain row-aligned matmul (`identity`).
* `pooling_map`: kernel size = stride (k2 s2 down-sampling): parents floor(c / 2s) * 2s, output set =
  unique parents, offset from (c - parent) / s; no search needed and every input row feeds exactly one
  output row.
* `query_map`: any other kernel/stride: for each output coordinate and offset look the input coordinate up
  in the sorted input keys.

A transposed convolution uses `KernelMap.transposed()` of the down-sampling map of the same level pair, so
its output rows are exactly the cached finer coordinate set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from cmcr_core.sparse.coords import floor_to_stride, kernel_offsets, key_delta, pack_keys, unpack_keys


@dataclass(frozen=True, eq=False)
class KernelMap:
    """Pairs (in_rows[p], out_rows[p]) meaning y[out_rows[p]] += x[in_rows[p]] @ W[offset of p].

    Attributes:
        kernel_volume: K (number of kernel offsets, e.g. 27 or 8).
        n_in, n_out: number of rows of the input and output coordinate sets.
        in_rows, out_rows: (P,) int64, grouped by offset (pairs of `identity` are not stored).
        offsets: kernel index of each group, ascending.
        bounds: group g spans [bounds[g], bounds[g + 1]) of the pair tensors.
        identity: kernel index whose pairs are (i, i) for every row (submanifold centre), else None.
        out_once: every output row has exactly one pair (transposed k2 s2): the forward writes each row
            once (`index_copy_` into an uninitialised output) instead of zero-filling and accumulating.
        in_once: every input row has exactly one pair (strided k2 s2): the same for the input gradient.
    """

    kernel_volume: int
    n_in: int
    n_out: int
    in_rows: Tensor
    out_rows: Tensor
    offsets: tuple[int, ...]
    bounds: tuple[int, ...]
    identity: int | None = None
    out_once: bool = False
    in_once: bool = False
    _pieces: dict = field(default_factory=dict, repr=False)

    def pieces(self, split: Callable[[int], Sequence[tuple[int, int, int]]]
               ) -> list[tuple[int, Tensor, Tensor, int, int]]:
        """(kernel index, in_rows slice, out_rows slice, rows, GEMM rows) of every GEMM piece.

        `split(m)` cuts a group of m pairs into (start, rows, GEMM rows) pieces (`gemm.padded_pieces` or
        `gemm.inference_pieces`).  Computed once per map and split: the ~25 convolutions at one resolution
        reuse the slices.
        """
        return self._plan(split)[0]

    def max_call_rows(self, split: Callable[[int], Sequence[tuple[int, int, int]]]) -> int:
        """The largest GEMM row count of `pieces(split)` (sizes the gather workspace)."""
        return self._plan(split)[1]

    def _plan(self, split: Callable[[int], Sequence[tuple[int, int, int]]]
              ) -> tuple[list[tuple[int, Tensor, Tensor, int, int]], int]:
        """(pieces, largest GEMM row count) for `split`, built on first use."""
        if split not in self._pieces:
            plan = [(k, rows, call_rows) for g, k in enumerate(self.offsets)
                    for _, rows, call_rows in split(self.bounds[g + 1] - self.bounds[g])]
            sizes = [rows for _, rows, _ in plan]  # the pieces tile the pair tensors in order
            ins = self.in_rows.split_with_sizes(sizes) if sizes else ()
            outs = self.out_rows.split_with_sizes(sizes) if sizes else ()
            pieces = [(k, i, o, rows, call_rows)
                      for (k, rows, call_rows), i, o in zip(plan, ins, outs, strict=True)]
            self._pieces[split] = (pieces, max((call_rows for _, _, call_rows in plan), default=0))
        return self._pieces[split]

    @property
    def num_pairs(self) -> int:
        """Number of (input, output) pairs including the identity offset."""
        return self.bounds[-1] + (self.n_in if self.identity is not None else 0)

    def counts(self) -> dict[int, int]:
        """Pairs per kernel index (offsets without pairs are absent)."""
        out = {k: self.bounds[g + 1] - self.bounds[g] for g, k in enumerate(self.offsets)}
        if self.identity is not None:
            out[self.identity] = self.n_in
        return dict(sorted(out.items()))

    def transposed(self) -> KernelMap:
        """The same pairs read backwards: the map of the transposed convolution."""
        return KernelMap(
            kernel_volume=self.kernel_volume,
            n_in=self.n_out,
            n_out=self.n_in,
            in_rows=self.out_rows,
            out_rows=self.in_rows,
            offsets=self.offsets,
            bounds=self.bounds,
            identity=self.identity,
            out_once=self.in_once,
            in_once=self.out_once,
        )


def _groups(kernel_index: Sequence[int], counts: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Non-empty groups (kernel indices, boundaries) from per-kernel-index pair counts (host ints: the one
    device synchronisation of a map is the `.tolist()` of its counts)."""
    offsets, bounds = [], [0]
    for k, n in zip(kernel_index, counts, strict=True):
        if n > 0:
            offsets.append(int(k))
            bounds.append(bounds[-1] + int(n))
    return tuple(offsets), tuple(bounds)


def _search(sorted_keys: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
    """Positions of `queries` (any shape) in `sorted_keys` and whether each one was found."""
    pos = torch.searchsorted(sorted_keys, queries)
    pos.clamp_(max=max(sorted_keys.numel() - 1, 0))
    hit = sorted_keys[pos] == queries
    return pos, hit


def submanifold_map(
    keys: Tensor, sorted_keys: Tensor, perm: Tensor, kernel_size: int, tensor_stride: int
) -> KernelMap:
    """Submanifold map of an odd kernel on one coordinate set.

    Args:
        keys: (N,) int64 keys in row order; sorted_keys, perm: `torch.sort(keys)`.
        kernel_size: odd K; tensor_stride: stride s of the set (offsets are o * s).
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"submanifold maps need an odd kernel size, got {kernel_size}")
    n = keys.numel()
    volume = kernel_size**3
    centre = volume // 2
    deltas = key_delta(kernel_offsets(kernel_size, keys.device)[:centre] * tensor_stride)
    if centre == 0 or n == 0:
        empty = keys.new_empty(0)
        return KernelMap(volume, n, n, empty, empty, (), (0,), identity=centre)
    # Output row u sees input key(u) + delta_k; a hit at sorted position pos is input row perm[pos].
    queries = keys.unsqueeze(0) + deltas.unsqueeze(1)  # (centre, N)
    pos, hit = _search(sorted_keys, queries)
    counts = hit.sum(dim=1).tolist()
    flat = torch.nonzero(hit.reshape(-1)).squeeze(1)
    u = flat % n
    v = perm[pos.reshape(-1)[flat]]
    # Offset k (< centre): out u, in v.  Mirror offset volume-1-k: out v, in u (same pairs, swapped).
    first_in, first_out = v, u
    mirror_in = torch.cat(list(reversed(torch.split(u, counts)))) if flat.numel() else u
    mirror_out = torch.cat(list(reversed(torch.split(v, counts)))) if flat.numel() else v
    kernel_index = [*range(centre), *range(centre + 1, volume)]
    offsets, bounds = _groups(kernel_index, counts + counts[::-1])
    return KernelMap(
        kernel_volume=volume,
        n_in=n,
        n_out=n,
        in_rows=torch.cat([first_in, mirror_in]),
        out_rows=torch.cat([first_out, mirror_out]),
        offsets=offsets,
        bounds=bounds,
        identity=centre,
    )


def strided_coordinates(coords: Tensor, out_stride: int) -> tuple[Tensor, Tensor, Tensor]:
    """Output set of a strided convolution: unique parents floor(c / out_stride) * out_stride.

    Returns (out_coords (M, 4) int32 sorted by key, out_keys (M,) int64 sorted, parent row (N,) of each
    input row).
    """
    parents = floor_to_stride(coords, out_stride)
    out_keys, parent_row = torch.unique(pack_keys(parents), sorted=True, return_inverse=True)
    return unpack_keys(out_keys), out_keys, parent_row


def pooling_map(
    coords: Tensor, parent_row: Tensor, n_out: int, tensor_stride: int, out_stride: int
) -> KernelMap:
    """Map of a convolution whose kernel size equals its stride (k2 s2): each input feeds one output.

    Args:
        coords: (N, 4) input coordinates at `tensor_stride`.
        parent_row: (N,) output row of each input row (from `strided_coordinates`).
        n_out: number of output rows; out_stride = tensor_stride * kernel size.
    """
    kernel_size = out_stride // tensor_stride
    c = coords[:, 1:].to(torch.int64)
    rel = torch.div(c - torch.div(c, out_stride, rounding_mode="floor") * out_stride, tensor_stride,
                    rounding_mode="floor")
    k = rel[:, 0] + kernel_size * rel[:, 1] + kernel_size * kernel_size * rel[:, 2]
    volume = kernel_size**3
    order = torch.argsort(k, stable=True)
    counts = torch.bincount(k, minlength=volume).tolist()
    offsets, bounds = _groups(range(volume), counts)
    return KernelMap(
        kernel_volume=volume,
        n_in=coords.shape[0],
        n_out=n_out,
        in_rows=order,
        out_rows=parent_row[order],
        offsets=offsets,
        bounds=bounds,
        in_once=True,
    )


def query_map(
    in_sorted_keys: Tensor, in_perm: Tensor, out_keys: Tensor, kernel_size: int, tensor_stride: int
) -> KernelMap:
    """General map: y[u] = sum_k x[u + o_k * s] W_k, by searching every (output, offset) in the input keys.

    Args:
        in_sorted_keys, in_perm: sorted keys of the input set and the row of each sorted key.
        out_keys: (M,) keys of the output set in row order.
        kernel_size: any K (odd: centred offsets, even: 0..K-1); tensor_stride: input stride s.
    """
    n_out = out_keys.numel()
    volume = kernel_size**3
    deltas = key_delta(kernel_offsets(kernel_size, out_keys.device) * tensor_stride)
    if n_out == 0 or in_sorted_keys.numel() == 0:
        empty = out_keys.new_empty(0)
        return KernelMap(volume, in_sorted_keys.numel(), n_out, empty, empty, (), (0,))
    queries = out_keys.unsqueeze(0) + deltas.unsqueeze(1)  # (K, M)
    pos, hit = _search(in_sorted_keys, queries)
    counts = hit.sum(dim=1).tolist()
    flat = torch.nonzero(hit.reshape(-1)).squeeze(1)
    offsets, bounds = _groups(range(volume), counts)
    return KernelMap(
        kernel_volume=volume,
        n_in=in_sorted_keys.numel(),
        n_out=n_out,
        in_rows=in_perm[pos.reshape(-1)[flat]],
        out_rows=flat % n_out,
        offsets=offsets,
        bounds=bounds,
    )
