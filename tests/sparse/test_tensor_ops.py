"""Feature-wise layers, concatenation, slicing back to points and global pooling, on the test device
(CMCR_TEST_DEVICE, see tests/support/device.py) against float64 CPU references."""

from __future__ import annotations

import pytest
import torch
from dense_oracle import random_coords

from cmcr_core.sparse import (
    SparseBatchNorm,
    SparseConv3d,
    SparseReLU,
    SparseTensor,
    cat,
    global_pool,
    slice_to_points,
    voxelize,
)


def _tensor(seed: int = 0, channels: int = 3, batch: int = 3, device: torch.device | str = "cpu"
            ) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(g, batch, 5, 0.3)
    return SparseTensor(torch.randn(len(coords), channels, generator=g).to(device), coords.to(device))


def test_batchnorm_and_relu_act_on_rows(device, tolerance) -> None:
    x = _tensor(device=device)
    bn = SparseBatchNorm(3, momentum=0.05).to(device).train()
    y = SparseReLU()(bn(x))
    x64 = x.features.cpu().double()
    ref = torch.nn.functional.batch_norm(x64, None, None, training=True, eps=1e-5).clamp(min=0)
    tolerance.check(y.features, ref)
    assert y.coordinate_set is x.coordinate_set
    unbiased = x64.var(0, unbiased=True)
    tolerance.check(bn.bn.running_var, 0.95 + 0.05 * unbiased)
    assert [k for k in bn.state_dict()] == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                            "bn.num_batches_tracked"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batchnorm_inference_fast_path_matches_batch_norm(dtype: torch.dtype, device) -> None:
    """Eval + no_grad runs x * scale + shift; it must equal `F.batch_norm` with the running statistics, and
    train mode (even under no_grad) and eval with grad enabled must keep the module's own path."""
    g = torch.Generator().manual_seed(3)
    x = _tensor(channels=7, device=device)
    x = x.replace(torch.randn(len(x), 7, generator=g, dtype=dtype).to(device))
    bn = SparseBatchNorm(7).to(device, dtype).eval()
    with torch.no_grad():
        bn.bn.running_mean.copy_(torch.randn(7, generator=g))
        bn.bn.running_var.copy_(torch.rand(7, generator=g) + 0.2)
        bn.bn.weight.copy_(torch.randn(7, generator=g))
        bn.bn.bias.copy_(torch.randn(7, generator=g))
        fast = bn(x).features
    assert fast.dtype == dtype
    ref = torch.nn.functional.batch_norm(x.features, bn.bn.running_mean, bn.bn.running_var, bn.bn.weight,
                                         bn.bn.bias, training=False, eps=bn.bn.eps)
    torch.testing.assert_close(fast, ref, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)
    torch.testing.assert_close(bn(x).features.detach(), ref.detach())  # grad enabled: module path
    x_before = x.features.clone()
    bn.train()
    with torch.no_grad():
        y = bn(x).features  # batch statistics, running statistics updated
        ref_train = torch.nn.functional.batch_norm(x.features, None, None, bn.bn.weight, bn.bn.bias,
                                                   training=True, eps=bn.bn.eps)
    torch.testing.assert_close(y, ref_train)
    assert bn.bn.num_batches_tracked.item() == 1
    assert torch.equal(x.features, x_before)  # the input is never written


def test_pointwise_inference_fast_path_matches_mm() -> None:  # CPU only: the oneDNN path
    """Kernel 1 under no_grad on CPU float32 goes through oneDNN (pieces of fixed row counts): equal to the
    plain product, with and without bias, for row counts that are not multiples of the piece sizes."""
    g = torch.Generator().manual_seed(4)
    coords = random_coords(g, 2, 16, 0.4)  # ~3.3k rows
    x = SparseTensor(torch.randn(len(coords), 96, generator=g), coords)
    for bias in (False, True):
        layer = SparseConv3d(96, 112, kernel_size=1, bias=bias)
        ref = x.features @ layer.kernel + (layer.bias if bias else 0)
        with torch.no_grad():
            fast = layer(x).features
        torch.testing.assert_close(fast, ref.detach(), rtol=1e-5, atol=1e-5)
        assert layer(x).features.requires_grad  # training path: autograd through torch.mm


def test_cat_requires_the_same_rows(device) -> None:
    x = _tensor(device=device)
    y = x.replace(torch.ones(len(x), 2, device=device))
    z = cat(x, y)
    assert torch.equal(z.features, torch.cat([x.features, torch.ones(len(x), 2, device=device)], 1))
    down = SparseConv3d(3, 3, kernel_size=2, stride=2).to(device)(x)
    with pytest.raises(ValueError, match="different coordinate set"):
        cat(x, down)


def test_decoder_reuses_encoder_rows(device) -> None:
    """A down/up round trip lands on the very same cached coordinate set (row-aligned skips)."""
    from cmcr_core.sparse import SparseConvTranspose3d

    x = _tensor(device=device)
    up = SparseConvTranspose3d(4, 3).to(device)(SparseConv3d(3, 4, kernel_size=2, stride=2).to(device)(x))
    assert up.coordinate_set is x.coordinate_set
    assert cat(up, x).features.shape == (len(x), 6)


def test_slice_to_points_and_global_pool_match_naive(device, tolerance) -> None:
    g = torch.Generator().manual_seed(1)
    points = torch.rand(300, 3, generator=g) * 2
    batch = torch.randint(0, 3, (300,), generator=g)
    vox = voxelize(points.to(device), 0.25, batch=batch.to(device))
    features = torch.randn(vox.num_voxels, 4, generator=g)
    x = SparseTensor(features.to(device), vox.coords)
    per_point = slice_to_points(x, vox.inverse).cpu()
    inverse = vox.inverse.cpu()
    for i in range(300):
        assert torch.equal(per_point[i], features[inverse[i]])
    sample = vox.coords[:, 0].cpu()
    for mode, reduce in (("mean", lambda f: f.mean(0)), ("max", lambda f: f.max(0).values),
                         ("sum", lambda f: f.sum(0))):
        pooled = global_pool(x, mode)
        assert pooled.shape == (3, 4) and pooled.device == x.device
        for b in range(3):
            tolerance.check(pooled[b], reduce(features[sample == b].double()))
    assert torch.equal(global_pool(x, "sum", batch_size=5)[3:].cpu(), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mode"):
        global_pool(x, "median")


def test_sparse_tensor_validates_rows() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="expected shape \\(2, C\\)"):
        SparseTensor(torch.zeros(3, 1), coords)
    with pytest.raises(ValueError, match="\\(N, 4\\)"):
        SparseTensor(torch.zeros(2, 1), coords[:, :3])
