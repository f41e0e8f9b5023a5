"""What changes with the device: autocast (bfloat16) convolutions, device checks, scratch buffers, and on
CUDA the absence of host synchronisation in a training step (CMCR_TEST_DEVICE, see tests/conftest.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from dense_oracle import random_coords

from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.sparse import SparseConv3d, SparseConvTranspose3d, SparseTensor, functional, gemm

TINY = {"planes": (8, 8, 16, 16, 16, 16, 8, 8), "layers": (1, 1, 1, 1, 1, 1, 1, 1), "init_dim": 8}


def _layer(kind: str) -> torch.nn.Module:
    return {"sub3": lambda: SparseConv3d(6, 5, 3), "sub3_bias": lambda: SparseConv3d(6, 5, 3, bias=True),
            "down2": lambda: SparseConv3d(6, 5, 2, 2), "up2": lambda: SparseConvTranspose3d(6, 5, 2, 2),
            "pointwise_bias": lambda: SparseConv3d(6, 5, 1, bias=True)}[kind]()


def _run(layer: torch.nn.Module, kind: str, device: torch.device, dtype: torch.dtype, autocast: bool
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, input gradient, weight gradient) of sum(y * R) for one layer on one scan-like input."""
    g = torch.Generator().manual_seed(5)
    coords = random_coords(g, 2, 10, 0.3, origin=-6).to(device)
    features = torch.randn(len(coords), 6, generator=g, dtype=torch.float64).to(device, dtype)
    x = SparseTensor(features, coords)
    if kind == "up2":
        _, coarse = x.manager.strided_map(1, 2, 2)
        coarse_features = torch.randn(len(coarse), 6, generator=g, dtype=torch.float64).to(device, dtype)
        x = SparseTensor(coarse_features, manager=x.manager, coordinate_set=coarse)
    leaf = x.features.clone().requires_grad_(True)
    with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
        y = layer(x.replace(leaf)).features
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (y.float() * r.to(device, torch.float32)).sum().backward()
    return y, leaf.grad, layer.kernel.grad


@pytest.mark.parametrize("kind", ["sub3", "sub3_bias", "down2", "up2", "pointwise_bias"])
def test_autocast_runs_convolutions_in_bfloat16(kind: str, device, tolerance) -> None:
    """Under autocast a convolution computes in bfloat16 (output bfloat16) while its parameters and their
    gradients stay float32; values and gradients agree with float64 on the CPU."""
    reference = _layer(kind).double()
    layer = copy.deepcopy(reference).to(device, torch.float32)
    y, grad_x, grad_w = _run(layer, kind, device, torch.float32, autocast=True)
    assert y.dtype == torch.bfloat16 and y.device == grad_x.device == grad_w.device
    assert layer.kernel.dtype == grad_w.dtype == grad_x.dtype == torch.float32
    y64, grad_x64, grad_w64 = _run(reference, kind, torch.device("cpu"), torch.float64, autocast=False)
    for actual, expected, name in ((y, y64, "forward"), (grad_x, grad_x64, "input gradient"),
                                   (grad_w, grad_w64, "weight gradient")):
        tolerance.check(actual, expected, torch.bfloat16, msg=name)


def _network_input(device: torch.device) -> SparseTensor:
    g = torch.Generator().manual_seed(7)
    coords = random_coords(g, 2, 14, 0.25, origin=-7)
    return SparseTensor(torch.rand(len(coords), 1, generator=g).to(device), coords.to(device))


def test_minkunet_training_step_under_autocast(device, tolerance) -> None:
    """A whole (tiny) MinkUNet34C forward and backward under bfloat16 autocast, train-mode BatchNorm: the
    output within bfloat16 tolerance of the float64 CPU network, every gradient float32 and finite, and the
    convolution kernels' gradients pointing the same way with the same size."""
    torch.manual_seed(0)
    reference = MinkUNet34C(1, 6, **TINY).double().train()
    model = copy.deepcopy(reference).to(device, torch.float32).train()
    x = _network_input(device)
    with torch.autocast(device.type, torch.bfloat16):
        y = model(x).features
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    x64 = _network_input(torch.device("cpu"))
    y64 = reference(x64.replace(x64.features.double())).features
    y64.square().sum().backward()
    tolerance.check(y, y64, torch.bfloat16, msg="forward")
    kernels, kernels64 = [], []
    for (name, p), p64 in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None and p.grad.dtype == torch.float32 and bool(p.grad.isfinite().all()), name
        if name.endswith("kernel"):
            kernels.append(p.grad.double().cpu().flatten())
            kernels64.append(p64.grad.flatten())
    # Gradients through ~20 bfloat16 layers with BatchNorm over a few rows at the coarse levels: each
    # layer's gradient is ~0.85-0.99 aligned with float64; all of them together ~0.95 (float32: 1 - 1e-11).
    a, b = torch.cat(kernels), torch.cat(kernels64)
    cosine = float(a @ b / (a.norm() * b.norm()))
    assert cosine > 0.9 and abs(float(a.norm() / b.norm()) - 1) < 0.1, cosine


def test_device_mismatch_is_a_clear_error(device) -> None:
    other = "meta" if device.type == "cpu" else "cpu"
    x = _network_input(device)
    with pytest.raises(ValueError, match="one device"):
        SparseConv3d(1, 2, 3).to(other)(x)
    with pytest.raises(ValueError, match="oneDNN's CPU matmul"):
        gemm.linear(torch.zeros(64, 4, device="meta"), torch.zeros(4, 4, device="meta"))


def _cuda_training_step(model: torch.nn.Module, x: SparseTensor) -> None:
    with torch.autocast("cuda", torch.bfloat16):
        loss = model(x).features.float().square().mean()
    loss.backward()


@pytest.mark.gpu
def test_cuda_step_does_not_synchronise_once_maps_exist() -> None:
    """With the kernel maps built (the first forward of a batch builds them), a MinkUNet forward and backward
    never waits for the GPU: no `.item()`, `.tolist()`, `nonzero` or boolean indexing in the layers."""
    torch.manual_seed(0)
    model = MinkUNet34C(1, 6, **TINY).cuda().train()
    x = _network_input(torch.device("cuda"))
    _cuda_training_step(model, x)  # builds and caches every map of this input
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _cuda_training_step(model, x)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_workspaces_are_kept_only_on_cpu(device) -> None:
    """CPU: one scratch buffer per slot, reused (fresh multi-MB buffers page-fault on every call). Other
    devices: fresh tensors from the caching allocator, so no buffer sized for the largest layer stays
    allocated through a run (it would count at the training peak)."""
    like = torch.empty(0, device=device)
    first, second = functional._workspace(0, 64, 8, like), functional._workspace(0, 64, 8, like)
    assert first.shape == second.shape == (64, 8) and first.device == device
    assert (first.data_ptr() == second.data_ptr()) == (device.type == "cpu")
