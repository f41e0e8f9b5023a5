"""The gradient-flow table of METHODS.md §7.12, row by row: each loss alone reaches exactly its modules (one
step on the test device, CMCR_TEST_DEVICE)."""

from __future__ import annotations

import pytest
import torch
from cmcr_toys import tiny_batch, tiny_cmcr

from cmcr_core.methods.cmcr import CMCR

# Loss -> module groups that must receive a non-zero gradient; every other group must receive none.
TABLE = {
    "point_nce": {"trunk", "final", "decoder"},
    "orthogonality": {"trunk", "final", "final_class_level"},
    "commit_points": {"trunk", "final"},
    "commit_pixels": {"decoder"},
    "cmcm": {"trunk", "final", "decoder"},
    "mim": {"decoder", "specific_decoder", "mim_decoder"},
    "occupancy": {"trunk", "final", "final_class_level", "occupancy_mlp"},
    "intensity": {"trunk", "final", "final_class_level", "occupancy_mlp"},
}


def groups(method: CMCR) -> dict[str, list[torch.nn.Parameter]]:
    student = dict(method.student.named_parameters())
    return {
        "trunk": [p for name, p in student.items() if not name.startswith("final.")],
        "final": list(method.student.final.parameters()),
        "final_class_level": list(method.final_class_level.parameters()),
        "decoder": list(method.decoder.parameters()),
        "specific_decoder": list(method.specific_decoder.parameters()),
        "mim_decoder": list(method.mim_decoder.parameters()),
        "occupancy_mlp": list(method.occupancy_mlp.parameters()),
    }


@pytest.fixture(scope="module")
def step(device):
    method = tiny_cmcr(seed=0).train().to(device)
    batch = tiny_batch(seed=0).to(device)
    before = {k: v.clone() for k, v in method.codebook.state_dict().items()}
    losses, metrics = method(batch)
    return method, losses, metrics, before


def test_every_loss_is_returned_finite(step):
    _, losses, metrics, _ = step
    assert set(losses) == set(TABLE)
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    assert set(metrics) == {"codebook_perplexity", "codebook_active", "occupancy_accuracy"}
    assert 0.0 <= float(metrics["occupancy_accuracy"]) <= 1.0
    assert 1.0 <= float(metrics["codebook_perplexity"]) <= float(metrics["codebook_active"]) <= 40


@pytest.mark.parametrize("loss_name", sorted(TABLE))
def test_gradient_flow_row(step, loss_name):
    method, losses, _, _ = step
    named = groups(method)
    params = [p for group in named.values() for p in group]
    grads = torch.autograd.grad(losses[loss_name], params, retain_graph=True, allow_unused=True)
    reached = {}
    i = 0
    for name, group in named.items():
        gs = grads[i : i + len(group)]
        i += len(group)
        reached[name] = any(g is not None and bool(g.abs().sum() > 0) for g in gs)
    assert {name for name, hit in reached.items() if hit} == TABLE[loss_name]
    # The frozen teacher never receives a gradient; the codebook is a buffer (moved by EMA only).
    assert not any(p.requires_grad for p in method.teacher.parameters())
    assert not any(b.requires_grad for b in method.codebook.buffers())


def test_the_ema_update_moved_the_codebook_without_autograd(step):
    method, _, _, before = step
    assert not torch.equal(method.codebook.ema_weight, before["ema_weight"])
    assert method.codebook.embedding.grad_fn is None
    assert torch.allclose(method.codebook.embedding.norm(dim=1).cpu(), torch.ones(40), atol=1e-6)


def test_the_total_reaches_every_trainable_parameter(step):
    method, losses, _, _ = step
    params = [p for p in method.parameters() if p.requires_grad]
    grads = torch.autograd.grad(sum(losses.values()), params, retain_graph=True, allow_unused=True)
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)  # DDP: no unused parameter


def test_losses_that_are_off_build_no_module(device):
    method = tiny_cmcr(seed=1, mim_weight=0.0, occupancy_weight=0.0, intensity_weight=0.0,
                       orthogonality_weight=0.0).to(device)
    assert method.final_class_level is None
    losses, _ = method(tiny_batch(seed=1).to(device))
    assert set(losses) == {"point_nce", "commit_points", "commit_pixels", "cmcm"}
    with pytest.raises(ValueError, match="every CMCR loss weight is 0"):
        tiny_cmcr(seed=1, **{f"{n}_weight": 0.0 for n in ("point_nce", "orthogonality", "commitment",
                                                           "code_matching", "mim", "occupancy", "intensity")})
