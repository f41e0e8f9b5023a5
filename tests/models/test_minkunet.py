"""MinkUNet34C: parameter counts (METHODS §3.4), MinkowskiEngine keys (ENGINE §4.3), a dense-grid reference
forward, gradients, determinism and tiny configurations; forwards and backwards run on the test device
(CMCR_TEST_DEVICE), the dense reference on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.models.minkunet import MinkUNet34C, MinkUNetTrunk
from cmcr_core.sparse import SparseTensor

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference_model() -> MinkUNet34C:
    return MinkUNet34C(1, 64)


def _count(model: torch.nn.Module, *prefixes: str) -> int:
    return sum(p.numel() for k, p in model.named_parameters() if k.split(".")[0] in prefixes)


def test_trunk_and_group_parameter_counts(reference_model: MinkUNet34C) -> None:
    m = reference_model
    trunk = sum(p.numel() for k, p in m.named_parameters() if not k.startswith("final."))
    assert trunk == 37_842_976
    assert sum(p.numel() for p in MinkUNetTrunk().parameters()) == 37_842_976
    groups = {("conv0p1s1", "bn0"): 928, ("conv1p1s2", "bn1"): 8_256, ("block1",): 110_848,
              ("conv2p2s2", "bn2"): 8_256, ("block2",): 611_200, ("conv3p4s2", "bn3"): 32_896,
              ("block3",): 3_328_256, ("conv4p8s2", "bn4"): 131_328, ("block4",): 20_388_352,
              ("convtr4p16s2", "bntr4"): 524_800, ("block5",): 8_063_488, ("convtr5p8s2", "bntr5"): 262_400,
              ("block6",): 2_016_512, ("convtr6p4s2", "bntr6"): 98_496, ("block7",): 1_091_520,
              ("convtr7p2s2", "bntr7"): 73_920, ("block8",): 1_091_520, ("final",): 6_208}
    for names, expected in groups.items():
        assert _count(m, *names) == expected, names
    assert _count(MinkUNet34C(1, 17), "final") == 1_649
    assert _count(MinkUNet34C(1, 20), "final") == 1_940


def test_minkowski_state_dict_keys_and_shapes(reference_model: MinkUNet34C) -> None:
    sd = reference_model.state_dict()
    expected = {
        "conv0p1s1.kernel": (27, 1, 32), "bn0.bn.running_var": (32,), "conv1p1s2.kernel": (8, 32, 32),
        "conv2p2s2.kernel": (8, 32, 32), "conv3p4s2.kernel": (8, 64, 64), "conv4p8s2.kernel": (8, 128, 128),
        "bn4.bn.weight": (128,), "block1.0.conv1.kernel": (27, 32, 32),
        "block2.0.conv1.kernel": (27, 32, 64), "block2.0.conv2.kernel": (27, 64, 64),
        "block2.0.downsample.0.kernel": (32, 64), "block2.0.downsample.1.bn.running_mean": (64,),
        "block4.5.norm2.bn.bias": (256,), "block5.0.downsample.0.kernel": (384, 256),
        "block8.0.downsample.0.kernel": (128, 96), "block8.1.conv2.kernel": (27, 96, 96),
        "convtr4p16s2.kernel": (8, 256, 256), "convtr5p8s2.kernel": (8, 256, 128),
        "convtr6p4s2.kernel": (8, 128, 96), "convtr7p2s2.kernel": (8, 96, 96), "bntr7.bn.weight": (96,),
        "final.kernel": (96, 64), "final.bias": (1, 64), "bn0.bn.num_batches_tracked": (),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "block1.0.downsample.0.kernel" not in sd  # 32 -> 32 needs no shortcut
    assert "block4.6.conv1.kernel" not in sd and "block4.5.conv1.kernel" in sd


def test_bn_momentum_quirk(reference_model: MinkUNet34C) -> None:
    m = reference_model
    assert m.bn0.bn.momentum == 0.05 and m.bntr7.bn.momentum == 0.05
    assert m.block2[0].downsample[1].bn.momentum == 0.05  # shortcut BN: config momentum
    assert m.block2[0].norm1.bn.momentum == 0.1 and m.block8[1].norm2.bn.momentum == 0.1
    custom = MinkUNet34C(1, 17, bn_momentum=0.02, block_bn_momentum=0.02, planes=(4,) * 8, layers=(1,) * 8)
    assert {b.bn.momentum for b in _bns(custom)} == {0.02}


def _bns(model):
    from cmcr_core.sparse import SparseBatchNorm

    return [m for m in model.modules() if isinstance(m, SparseBatchNorm)]


def test_init_follows_minkowski_defaults(reference_model: MinkUNet34C) -> None:
    m = reference_model
    assert float(m.conv0p1s1.kernel.abs().max()) <= 1 / 27**0.5
    bound = 1 / (256 * 8) ** 0.5  # transposed: fan = C_out * K
    assert float(m.convtr5p8s2.kernel.abs().max()) <= (128 * 8) ** -0.5
    assert float(m.convtr4p16s2.kernel.abs().max()) <= bound
    assert float(m.convtr4p16s2.kernel.abs().max()) > 0.9 * bound
    assert all(bool((b.bn.weight == 1).all()) and bool((b.bn.bias == 0).all()) for b in _bns(m))


TINY = {"planes": (4, 6, 8, 10, 10, 8, 6, 6), "layers": (1, 2, 1, 1, 1, 1, 1, 1), "init_dim": 5}


def _input(seed: int, size: int = 16, density: float = 0.12, dtype=torch.float32):
    """Unique coordinates in a size^3 box from -size/2 (negative: floor vs truncation), batch of 2."""
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand(2, size, size, size, generator=g) < density
    coords = torch.nonzero(occ)
    coords[:, 1:] -= size // 2
    return torch.rand(len(coords), 1, generator=g, dtype=dtype), coords.to(torch.int32).contiguous()


def _dense_reference(model: MinkUNet34C, feats: torch.Tensor, coords: torch.Tensor, size: int
                     ) -> torch.Tensor:
    """Eval-mode forward on dense grids: sparse semantics = dense conv masked to the active sites.

    The grid origin -size/2 must be a multiple of 16 so that every stride's cells align with conv3d windows.
    """
    def dense_w(kernel, k, transposed=False):
        w = kernel.reshape(k, k, k, kernel.shape[1], kernel.shape[2])
        return w.permute(3, 4, 2, 1, 0) if transposed else w.permute(4, 3, 2, 1, 0)

    def bn(mod, x, mask):
        b = mod.bn
        scale = (b.weight / torch.sqrt(b.running_var + b.eps)).view(1, -1, 1, 1, 1)
        shift = (b.bias - b.running_mean * b.weight / torch.sqrt(b.running_var + b.eps)).view(1, -1, 1, 1, 1)
        return (x * scale + shift) * mask

    def sub(conv, x, mask):
        return F.conv3d(x, dense_w(conv.kernel, 3), padding=1) * mask

    def block(blk, x, mask):
        out = F.relu(bn(blk.norm1, sub(blk.conv1, x, mask), mask))
        out = bn(blk.norm2, sub(blk.conv2, out, mask), mask)
        if blk.downsample is not None:
            x = bn(blk.downsample[1], torch.einsum("bidhw,io->bodhw", x, blk.downsample[0].kernel), mask)
        return F.relu(out + x)

    idx = coords.long()
    idx[:, 1:] += size // 2
    grid = feats.new_zeros(2, 1, size, size, size)
    grid[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = feats
    occupied = torch.zeros(2, 1, size, size, size, dtype=torch.bool)
    occupied[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = True
    masks = [occupied]
    for _ in range(4):  # active parents at strides 2, 4, 8, 16
        masks.append(F.max_pool3d(masks[-1].float(), 2) > 0)
    masks = [mk.to(feats.dtype) for mk in masks]
    out_p1 = F.relu(bn(model.bn0, sub(model.conv0p1s1, grid, masks[0]), masks[0]))
    skips, out = [out_p1], out_p1
    for s in range(1, 5):
        down = getattr(model, f"conv{s}p{2 ** (s - 1)}s2")
        out = F.conv3d(out, dense_w(down.kernel, 2), stride=2) * masks[s]
        out = F.relu(bn(getattr(model, f"bn{s}"), out, masks[s]))
        for blk in getattr(model, f"block{s}"):
            out = block(blk, out, masks[s])
        skips.append(out)
    for i, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
        level = 3 - i
        up = F.conv_transpose3d(out, dense_w(getattr(model, name).kernel, 2, True), stride=2) * masks[level]
        out = torch.cat([F.relu(bn(getattr(model, f"bntr{4 + i}"), up, masks[level])), skips[level]], 1)
        for blk in getattr(model, f"block{5 + i}"):
            out = block(blk, out, masks[level])
    head = torch.einsum("bidhw,io->bodhw", out, model.final.kernel) + model.final.bias.view(1, -1, 1, 1, 1)
    return head[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]]


def test_forward_matches_dense_reference(device) -> None:
    torch.manual_seed(0)
    model = MinkUNet34C(1, 3, **TINY).double().eval()
    g = torch.Generator().manual_seed(5)
    for b in _bns(model):  # non-trivial statistics so that BN is not the identity
        b.bn.running_mean = torch.randn(b.bn.num_features, generator=g, dtype=torch.float64) * 0.1
        b.bn.running_var = torch.rand(b.bn.num_features, generator=g, dtype=torch.float64) + 0.5
        b.bn.weight.data = torch.rand(b.bn.num_features, generator=g, dtype=torch.float64) + 0.5
    feats, coords = _input(1, size=32, density=0.04, dtype=torch.float64)
    with torch.no_grad():
        y = copy.deepcopy(model).to(device)(SparseTensor(feats.to(device), coords.to(device)))
        expected = _dense_reference(model, feats, coords, 32)
    assert y.features.device == device and y.coords.tolist() == coords.tolist()  # output rows = input rows
    torch.testing.assert_close(y.features.cpu(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("config", [TINY, {"planes": (8,) * 8, "layers": (1,) * 8, "init_dim": 8},
                                    {"planes": (2, 4, 4, 4, 4, 4, 2, 3), "layers": (2, 1, 1, 2, 1, 1, 1, 3)}])
def test_tiny_configs_train_step(config: dict, device) -> None:
    torch.manual_seed(0)
    model = MinkUNet34C(2, 5, **config).train().to(device)
    feats, coords = _input(2)
    feats = torch.cat([feats, feats.square()], 1)
    trunk_out = model.forward_features(SparseTensor(feats.to(device), coords.to(device)))
    assert trunk_out.features.shape == (len(coords), config["planes"][7])
    out = model.final(trunk_out)
    assert out.features.shape == (len(coords), 5) and bool(torch.isfinite(out.features).all())
    (out.features * torch.linspace(-1, 1, 5, device=device)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_reference_size_gradients_and_determinism(reference_model: MinkUNet34C, device, tolerance) -> None:
    model = copy.deepcopy(reference_model).train().to(device)
    feats, coords = _input(3, size=48, density=0.01)  # spread out: several voxels at stride 16
    feats, coords = feats.to(device), coords.to(device)
    out = model(SparseTensor(feats, coords)).features
    assert bool(torch.isfinite(out).all())
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        a = model(SparseTensor(feats, coords)).features
        b = model(SparseTensor(feats, coords)).features
    tolerance.same(device, b, a, dtype=torch.float32)  # bit-identical on the CPU (no atomic adds)


def test_seeded_init_is_reproducible_and_normalized_head(device) -> None:
    a = MinkUNet34C(1, 4, normalize_output=True, **TINY)
    b = MinkUNet34C(1, 4, normalize_output=True, **TINY)
    a.init_weights(torch.Generator().manual_seed(7))
    b.init_weights(torch.Generator().manual_seed(7))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    feats, coords = _input(4)
    out = a.eval().to(device)(SparseTensor(feats.to(device), coords.to(device))).features
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(coords), device=device))


def test_bad_configuration_and_input_are_rejected() -> None:
    with pytest.raises(ValueError, match="8 entries"):
        MinkUNet34C(1, 2, planes=(4,) * 7)
    model = MinkUNet34C(1, 2, **TINY)
    coords = torch.tensor([[0, 0, 0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="tensor stride 1"):
        model(SparseTensor(torch.ones(1, 1), coords * 2, stride=2))
