"""Parity with MinkowskiEngine 0.5.4 (skipped where it is not installed): single layers and Res16UNet34C."""

from __future__ import annotations

import pytest
import torch
from dense_oracle import random_coords

from cmcr_core.models.convert import load_minkowski_checkpoint
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.sparse import SparseConv3d, SparseConvTranspose3d, SparseTensor, pack_keys


def _order(coords: torch.Tensor) -> torch.Tensor:
    """Row permutation sorting (N, 4) coordinates lexicographically (to align two engines' rows)."""
    return torch.argsort(pack_keys(coords.to(torch.int32)))


def _aligned(ours: torch.Tensor, ours_coords: torch.Tensor, theirs: torch.Tensor, their_coords: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    po, pt = _order(ours_coords), _order(their_coords)
    same = torch.equal(ours_coords[po].to(torch.int32), their_coords[pt].to(torch.int32))
    assert same, "coordinate sets differ"
    return ours[po], theirs[pt]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


LAYERS = [  # (kind, kernel size, stride, input tensor stride)
    ("conv", 3, 1, 1), ("conv", 3, 1, 2), ("conv", 5, 1, 1), ("conv", 2, 2, 1), ("conv", 3, 2, 2),
    ("conv", 1, 1, 1), ("transposed", 2, 2, 2), ("transposed", 3, 2, 2),
]


@pytest.mark.parametrize(("kind", "kernel_size", "stride", "tensor_stride"), LAYERS)
def test_single_layer_parity(minkowski, kind: str, kernel_size: int, stride: int, tensor_stride: int) -> None:
    me = minkowski
    g = torch.Generator().manual_seed(kernel_size * 10 + stride)
    fine_stride = tensor_stride // 2 if kind == "transposed" else tensor_stride
    coords = random_coords(g, 2, 8, 0.3, stride=fine_stride, origin=-8)
    c_in, c_out = 3, 4
    if kind == "conv":
        ours_layer = SparseConv3d(c_in, c_out, kernel_size, stride, bias=kernel_size == 1).double()
        their_layer = me.MinkowskiConvolution(c_in, c_out, kernel_size=kernel_size, stride=stride,
                                              bias=kernel_size == 1, dimension=3).double()
        feats = torch.randn(len(coords), c_in, generator=g, dtype=torch.float64)
        leaf_ours, leaf_theirs = feats.clone().requires_grad_(True), feats.clone().requires_grad_(True)
        x_ours = SparseTensor(leaf_ours, coords, stride=tensor_stride)
        x_theirs = me.SparseTensor(leaf_theirs, coordinates=coords, tensor_stride=tensor_stride)
        leaf_coords = coords
    else:
        ours_layer = SparseConvTranspose3d(c_in, c_out, kernel_size, stride).double()
        their_layer = me.MinkowskiConvolutionTranspose(c_in, c_out, kernel_size=kernel_size, stride=stride,
                                                       dimension=3).double()
        # Both engines first create the coarse set from the fine one, then convolve back onto it.
        ones = torch.ones(len(coords), 1, dtype=torch.float64)
        fine_ours = SparseTensor(ones, coords, stride=fine_stride)
        _, coarse_set = fine_ours.manager.strided_map(fine_stride, 2, 2)
        fine_theirs = me.SparseTensor(ones, coordinates=coords, tensor_stride=fine_stride)
        pool = me.MinkowskiConvolution(1, 1, kernel_size=2, stride=2, dimension=3).double()
        coarse_theirs = pool(fine_theirs)
        feats_theirs = torch.randn(len(coarse_set), c_in, generator=g, dtype=torch.float64)
        # Our coarse rows in the order of MinkowskiEngine's coarse rows.
        po, pt = _order(coarse_set.coords), _order(coarse_theirs.C)
        leaf_ours = torch.empty_like(feats_theirs)
        leaf_ours[po] = feats_theirs[pt]
        leaf_ours.requires_grad_(True)
        leaf_theirs = feats_theirs.requires_grad_(True)
        leaf_coords = coarse_theirs.C
        x_ours = SparseTensor(leaf_ours, manager=fine_ours.manager, coordinate_set=coarse_set)
        x_theirs = me.SparseTensor(leaf_theirs, coordinate_map_key=coarse_theirs.coordinate_map_key,
                                   coordinate_manager=coarse_theirs.coordinate_manager)
    with torch.no_grad():
        ours_layer.kernel.copy_(their_layer.kernel)
        if ours_layer.bias is not None:
            ours_layer.bias.copy_(their_layer.bias)
    y_ours, y_theirs = ours_layer(x_ours), their_layer(x_theirs)
    a, b = _aligned(y_ours.features, y_ours.coords, y_theirs.F, y_theirs.C)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    r = torch.randn(a.shape, generator=g, dtype=torch.float64)
    (a * r).sum().backward()
    (b * r).sum().backward()
    ga, gb = _aligned(leaf_ours.grad, x_ours.coords, leaf_theirs.grad, leaf_coords)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours_layer.kernel.grad, their_layer.kernel.grad, rtol=1e-10, atol=1e-10)


def test_offset_order_matches_minkowski(minkowski) -> None:
    """The explicit example of ENGINE §4.2 run through MinkowskiEngine: W_k = k, one active neighbour."""
    me = minkowski
    centre = [0, 4, 4, 4]
    for offset, index in (((1, 0, 0), 14), ((0, 1, 0), 16), ((0, 0, 1), 22), ((0, -1, -1), 1)):
        coords = torch.tensor([centre, [0, 4 + offset[0], 4 + offset[1], 4 + offset[2]]], dtype=torch.int32)
        conv = me.MinkowskiConvolution(1, 1, kernel_size=3, dimension=3).double()
        with torch.no_grad():
            conv.kernel.copy_(torch.arange(27, dtype=torch.float64).view(27, 1, 1))
        out = conv(me.SparseTensor(torch.tensor([[0.0], [1.0]], dtype=torch.float64), coordinates=coords))
        row = [i for i, c in enumerate(out.C.tolist()) if c == centre][0]
        assert out.F[row, 0].item() == index


def _network_pair(me, dtype: torch.dtype, **widths):
    from minkowski_reference import MERes16UNet34C

    torch.manual_seed(0)
    theirs = MERes16UNet34C(1, 7, **widths).to(dtype)
    g = torch.Generator().manual_seed(1)
    for m in theirs.modules():  # non-trivial BN parameters and statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.weight.data = torch.rand(m.weight.shape, generator=g, dtype=dtype) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g, dtype=dtype) * 0.2
            m.running_mean = torch.randn(m.running_mean.shape, generator=g, dtype=dtype) * 0.1
            m.running_var = torch.rand(m.running_var.shape, generator=g, dtype=dtype) + 0.5
    ours = MinkUNet34C(1, 7, **widths).to(dtype)
    report = load_minkowski_checkpoint(ours, {"state_dict": {f"model.{k}": v for k, v in
                                                             theirs.state_dict().items()}})
    assert not report.skipped and not report.missing
    return ours, theirs


def _network_input(dtype: torch.dtype, size: int, density: float):
    g = torch.Generator().manual_seed(2)
    coords = random_coords(g, 2, size, density, origin=-size // 2)
    return torch.rand(len(coords), 1, generator=g, dtype=dtype), coords


@pytest.mark.parametrize("train", [False, True])
def test_full_res16unet34c_parity(minkowski, train: bool) -> None:
    """Reference widths and depths, float32: whole-network output within 1e-4 relative error."""
    ours, theirs = _network_pair(minkowski, torch.float32)
    feats, coords = _network_input(torch.float32, 24, 0.05)
    ours.train(train)
    theirs.train(train)
    with torch.no_grad():
        y_ours = ours(SparseTensor(feats, coords))
        from minkowski_reference import minkowski_input

        y_theirs = theirs(minkowski_input(feats, coords))
    a, b = _aligned(y_ours.features, y_ours.coords, y_theirs.F, y_theirs.C)
    assert _rel_err(a, b) < 1e-4
    if train:  # running statistics were updated identically
        torch.testing.assert_close(ours.bntr7.bn.running_var, theirs.bntr7.bn.running_var,
                                   rtol=1e-4, atol=1e-6)


def test_tiny_network_parity_with_gradients(minkowski) -> None:
    """Tiny widths in float64: outputs and every parameter gradient agree (train-mode BN)."""
    from minkowski_reference import minkowski_input

    widths = {"planes": (4, 6, 8, 10, 10, 8, 6, 6), "layers": (1, 2, 1, 1, 1, 1, 1, 1), "init_dim": 5}
    ours, theirs = _network_pair(minkowski, torch.float64, **widths)
    feats, coords = _network_input(torch.float64, 12, 0.2)
    y_ours = ours(SparseTensor(feats, coords))
    y_theirs = theirs(minkowski_input(feats, coords))
    a, b = _aligned(y_ours.features, y_ours.coords, y_theirs.F, y_theirs.C)
    assert _rel_err(a, b) < 1e-10
    r = torch.randn(a.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (a * r).sum().backward()
    (b * r).sum().backward()
    their_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, their_params[name].grad, rtol=1e-8, atol=1e-10, msg=name)
