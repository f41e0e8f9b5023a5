"""Kernel offsets in MinkowskiEngine order, key packing, and kernel maps against a brute-force search, on
the test device (CMCR_TEST_DEVICE, see tests/support/device.py)."""

from __future__ import annotations

import pytest
import torch
from dense_oracle import random_coords

from cmcr_core.sparse import (
    CoordinateManager,
    SparseConv3d,
    SparseTensor,
    kernel_offsets,
    pack_keys,
    unpack_keys,
)
from cmcr_core.sparse.coords import AXIS_HALF, MAX_BATCH


def test_kernel_offsets_first_axis_fastest(device) -> None:
    k3 = kernel_offsets(3, device).tolist()
    assert k3[0] == [-1, -1, -1] and k3[1] == [0, -1, -1] and k3[2] == [1, -1, -1]
    assert k3[3] == [-1, 0, -1] and k3[13] == [0, 0, 0] and k3[26] == [1, 1, 1]
    assert kernel_offsets(2, device).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0],
                                          [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]]
    # Mirror symmetry used by the submanifold map: offset K^3-1-k is -offset k.
    assert torch.equal(kernel_offsets(5, device).flip(0), -kernel_offsets(5, device))


def _conv_with_index_weights(kernel_size: int, stride: int, device: torch.device) -> SparseConv3d:
    conv = SparseConv3d(1, 1, kernel_size=kernel_size, stride=stride).double()
    with torch.no_grad():
        conv.kernel.copy_(torch.arange(kernel_size**3, dtype=torch.float64).view(-1, 1, 1))
    return conv.to(device)


@pytest.mark.parametrize(("offset", "index"), [((1, 0, 0), 14), ((0, 1, 0), 16), ((0, 0, 1), 22),
                                               ((-1, -1, -1), 0), ((0, -1, -1), 1), ((1, -1, -1), 2),
                                               ((-1, 0, -1), 3), ((1, 1, 1), 26)])
def test_k3_offset_order_explicit(offset: tuple[int, int, int], index: int, device) -> None:
    """y[u] = sum_k x[u + o_k] W_k: with x = 1 only at u + d and W_k = k, y[u] is the index of d."""
    s = 2  # offsets scale with the tensor stride
    coords = torch.tensor([[0, 4, 4, 4], [0, 4 + s * offset[0], 4 + s * offset[1], 4 + s * offset[2]]],
                          dtype=torch.int32, device=device)
    x = SparseTensor(torch.tensor([[0.0], [1.0]], dtype=torch.float64, device=device), coords, stride=s)
    y = _conv_with_index_weights(3, 1, device)(x)
    assert y.features[0, 0].item() == index


@pytest.mark.parametrize(("child", "index"), [((0, 0, 0), 0), ((1, 0, 0), 1), ((0, 1, 0), 2), ((1, 1, 0), 3),
                                              ((0, 0, 1), 4), ((1, 1, 1), 7)])
def test_k2s2_offset_order_explicit(child: tuple[int, int, int], index: int, device) -> None:
    coords = torch.tensor([[0, -4 + child[0], -4 + child[1], -4 + child[2]]], dtype=torch.int32,
                          device=device)
    ones = torch.ones(1, 1, dtype=torch.float64, device=device)
    y = _conv_with_index_weights(2, 2, device)(SparseTensor(ones, coords))
    assert y.coords.tolist() == [[0, -4, -4, -4]] and y.features.item() == index


def test_pack_unpack_roundtrip_and_order(device) -> None:
    g = torch.Generator().manual_seed(0)
    coords = torch.randint(-AXIS_HALF, AXIS_HALF, (500, 4), generator=g)
    coords[:, 0] = torch.randint(0, MAX_BATCH, (500,), generator=g)
    keys = pack_keys(coords.to(device))
    assert torch.equal(unpack_keys(keys).cpu(), coords.to(torch.int32))
    lexicographic = sorted(range(500), key=lambda i: tuple(coords[i].tolist()))
    assert torch.argsort(keys).tolist() == lexicographic


@pytest.mark.parametrize("bad", [[0, AXIS_HALF, 0, 0], [0, 0, -AXIS_HALF - 1, 0], [MAX_BATCH, 0, 0, 0],
                                 [-1, 0, 0, 0]])
def test_out_of_range_coordinates_are_rejected(bad: list[int], device) -> None:
    with pytest.raises(ValueError, match="coords"):
        CoordinateManager().insert(torch.tensor([bad], device=device))


def test_neighbour_queries_near_the_range_limit_are_rejected(device) -> None:
    manager = CoordinateManager()
    manager.insert(torch.tensor([[0, AXIS_HALF - 1, 0, 0]], device=device))
    with pytest.raises(ValueError, match="neighbour offsets"):
        manager.submanifold_map(1, 3)


def test_duplicate_and_misaligned_coordinates_are_rejected(device) -> None:
    with pytest.raises(ValueError, match="duplicate coordinate \\[0, 1, 2, 3\\]"):
        CoordinateManager().insert(torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 2, 3]], device=device))
    with pytest.raises(ValueError, match="multiples of the tensor stride 2"):
        CoordinateManager().insert(torch.tensor([[0, 1, 2, 4]], device=device), stride=2)


def _brute_force(in_coords: torch.Tensor, out_coords: torch.Tensor, offsets: torch.Tensor) -> set:
    """{(k, in_row, out_row)} with in = out + offset_k, by a Python dictionary lookup (any device)."""
    rows = {tuple(c): i for i, c in enumerate(in_coords.tolist())}
    pairs = set()
    for j, u in enumerate(out_coords.tolist()):
        for k, o in enumerate(offsets.tolist()):
            i = rows.get((u[0], u[1] + o[0], u[2] + o[1], u[3] + o[2]))
            if i is not None:
                pairs.add((k, i, j))
    return pairs


def _pairs(kmap) -> set:
    out = set()
    for g, k in enumerate(kmap.offsets):
        a, b = kmap.bounds[g], kmap.bounds[g + 1]
        rows = zip(kmap.in_rows[a:b].tolist(), kmap.out_rows[a:b].tolist(), strict=True)
        out |= {(k, i, j) for i, j in rows}
    if kmap.identity is not None:
        out |= {(kmap.identity, i, i) for i in range(kmap.n_in)}
    return out


@pytest.mark.parametrize(("kernel_size", "stride"), [(3, 1), (3, 2), (5, 1)])
def test_submanifold_map_matches_brute_force(kernel_size: int, stride: int, device) -> None:
    coords = random_coords(torch.Generator().manual_seed(kernel_size), 2, 7, 0.35, stride=stride).to(device)
    manager = CoordinateManager()
    manager.insert(coords, stride)
    kmap = manager.submanifold_map(stride, kernel_size)
    assert kmap.in_rows.device == kmap.out_rows.device == coords.device
    assert _pairs(kmap) == _brute_force(coords, coords, kernel_offsets(kernel_size) * stride)
    assert kmap.num_pairs == len(_pairs(kmap))
    assert manager.submanifold_map(stride, kernel_size) is kmap  # cached


def test_strided_maps_match_brute_force_and_each_other(device) -> None:
    coords = random_coords(torch.Generator().manual_seed(3), 2, 8, 0.3).to(device)
    manager = CoordinateManager()
    manager.insert(coords)
    down, coarse = manager.strided_map(1, 2, 2)
    assert down.in_rows.device == coarse.coords.device == coords.device
    assert down.in_once and sorted(down.in_rows.tolist()) == list(range(len(coords)))
    expected = _brute_force(coords, coarse.coords, kernel_offsets(2))
    assert _pairs(down) == expected
    k3s2, coarse_again = manager.strided_map(1, 3, 2)
    assert coarse_again is coarse  # one coordinate set per stride, shared by both kernels
    assert _pairs(k3s2) == _brute_force(coords, coarse.coords, kernel_offsets(3))
    up, fine = manager.transposed_map(2, 2, 2)
    assert fine is manager.coordinate_set(1) and up.out_once
    assert _pairs(up) == {(k, j, i) for k, i, j in expected}
