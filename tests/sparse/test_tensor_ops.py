"""Feature-wise layers, concatenation, slicing back to points and global pooling."""

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


def _tensor(seed: int = 0, channels: int = 3, batch: int = 3) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(g, batch, 5, 0.3)
    return SparseTensor(torch.randn(len(coords), channels, generator=g), coords)


def test_batchnorm_and_relu_act_on_rows() -> None:
    x = _tensor()
    bn = SparseBatchNorm(3, momentum=0.05).train()
    y = SparseReLU()(bn(x))
    ref = torch.nn.functional.batch_norm(x.features, None, None, training=True, eps=1e-5).clamp(min=0)
    torch.testing.assert_close(y.features, ref)
    assert y.coordinate_set is x.coordinate_set
    unbiased = x.features.var(0, unbiased=True)
    torch.testing.assert_close(bn.bn.running_var, 0.95 + 0.05 * unbiased)
    assert [k for k in bn.state_dict()] == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                            "bn.num_batches_tracked"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batchnorm_inference_fast_path_matches_batch_norm(dtype: torch.dtype) -> None:
    """Eval + no_grad runs x * scale + shift; it must equal `F.batch_norm` with the running statistics, and
    train mode (even under no_grad) and eval with grad enabled must keep the module's own path."""
    g = torch.Generator().manual_seed(3)
    x = _tensor(channels=7).replace(torch.randn(len(_tensor(channels=7)), 7, generator=g, dtype=dtype))
    bn = SparseBatchNorm(7).to(dtype).eval()
    with torch.no_grad():
        bn.bn.running_mean.copy_(torch.randn(7, generator=g))
        bn.bn.running_var.copy_(torch.rand(7, generator=g) + 0.2)
        bn.bn.weight.copy_(torch.randn(7, generator=g))
        bn.bn.bias.copy_(torch.randn(7, generator=g))
        fast = bn(x).features
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


def test_pointwise_inference_fast_path_matches_mm() -> None:
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


def test_cat_requires_the_same_rows() -> None:
    x = _tensor()
    y = x.replace(torch.ones(len(x), 2))
    z = cat(x, y)
    assert torch.equal(z.features, torch.cat([x.features, torch.ones(len(x), 2)], 1))
    down = SparseConv3d(3, 3, kernel_size=2, stride=2)(x)
    with pytest.raises(ValueError, match="different coordinate set"):
        cat(x, down)


def test_decoder_reuses_encoder_rows() -> None:
    """A down/up round trip lands on the very same cached coordinate set (row-aligned skips)."""
    from cmcr_core.sparse import SparseConvTranspose3d

    x = _tensor()
    up = SparseConvTranspose3d(4, 3)(SparseConv3d(3, 4, kernel_size=2, stride=2)(x))
    assert up.coordinate_set is x.coordinate_set
    assert cat(up, x).features.shape == (len(x), 6)


def test_slice_to_points_and_global_pool_match_naive() -> None:
    g = torch.Generator().manual_seed(1)
    points = torch.rand(300, 3, generator=g) * 2
    batch = torch.randint(0, 3, (300,), generator=g)
    vox = voxelize(points, 0.25, batch=batch)
    x = SparseTensor(torch.randn(vox.num_voxels, 4, generator=g), vox.coords)
    per_point = slice_to_points(x, vox.inverse)
    for i in range(300):
        assert torch.equal(per_point[i], x.features[vox.inverse[i]])
    for mode, reduce in (("mean", lambda f: f.mean(0)), ("max", lambda f: f.max(0).values),
                         ("sum", lambda f: f.sum(0))):
        pooled = global_pool(x, mode)
        assert pooled.shape == (3, 4)
        for b in range(3):
            torch.testing.assert_close(pooled[b], reduce(x.features[x.coords[:, 0] == b]))
    assert torch.equal(global_pool(x, "sum", batch_size=5)[3:], torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mode"):
        global_pool(x, "median")


def test_sparse_tensor_validates_rows() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="expected shape \\(2, C\\)"):
        SparseTensor(torch.zeros(3, 1), coords)
    with pytest.raises(ValueError, match="\\(N, 4\\)"):
        SparseTensor(torch.zeros(2, 1), coords[:, :3])
