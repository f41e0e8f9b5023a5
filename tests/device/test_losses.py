"""Every loss of cmcr_core.losses, forward and backward, in float32 on the test device against the same loss
in float64 on the CPU (losses that compute in float32 internally are compared at float32 tolerance too)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from cmcr_core.losses.chamfer import chamfer_l1, chamfer_l2
from cmcr_core.losses.code_matching import code_matching_loss
from cmcr_core.losses.codebook import UnifiedCodebook
from cmcr_core.losses.commitment import commitment_losses
from cmcr_core.losses.contrastive_distill import contrastive_distill_loss
from cmcr_core.losses.feature_regression import REGRESSION_KINDS, feature_regression
from cmcr_core.losses.lovasz import lovasz_softmax
from cmcr_core.losses.occupancy import occupancy_losses
from cmcr_core.losses.orthogonality import orthogonality_loss
from cmcr_core.losses.point_info_nce import PointInfoNCE
from cmcr_core.losses.relational import relational_loss
from cmcr_core.losses.similarity import similarity_loss
from cmcr_core.losses.single_modal_contrastive import multi_positive_contrastive
from cmcr_core.losses.superpixel_info_nce import SuperpixelInfoNCE
from cmcr_core.ops.pixels import offset_superpixel_ids

V, P, D, IMAGES, H, W = 30, 40, 8, 2, 5, 6


def _pairs(g: torch.Generator) -> dict[str, Tensor]:
    """Point features, teacher maps and pairings of a small batch (float64 CPU)."""
    return {
        "points": F.normalize(torch.randn(V, D, generator=g, dtype=torch.float64), dim=1),
        "maps": F.normalize(torch.randn(IMAGES, D, H, W, generator=g, dtype=torch.float64), dim=1),
        "pairing_points": torch.randint(0, V, (P,), generator=g),
        "pairing_images": torch.stack([torch.randint(0, n, (P,), generator=g) for n in (IMAGES, H, W)], 1),
    }


def _rows(g: torch.Generator, n: int = 12, d: int = D) -> dict[str, Tensor]:
    return {"student": torch.randn(n, d, generator=g, dtype=torch.float64),
            "teacher": torch.randn(n, d, generator=g, dtype=torch.float64)}


def _codes(g: torch.Generator) -> dict[str, Tensor]:
    rows = _rows(g)
    return {**rows, "codebook": F.normalize(torch.randn(16, D, generator=g, dtype=torch.float64), dim=1)}


def _occupancy(g: torch.Generator) -> dict[str, Tensor]:
    intensity = torch.rand(20, generator=g, dtype=torch.float64)
    intensity[::4] = -1.0  # queries without an intensity target
    return {"outputs": torch.randn(20, 2, generator=g, dtype=torch.float64),
            "occupancy": (torch.rand(20, generator=g) < 0.5).double(), "intensity": intensity}


def _sets(g: torch.Generator) -> dict[str, Tensor]:
    return {"pred": torch.randn(3, 7, 3, generator=g, dtype=torch.float64),
            "gt": torch.randn(3, 9, 3, generator=g, dtype=torch.float64)}


def _superpixels(g: torch.Generator) -> dict[str, Tensor]:
    local_ids = torch.randint(0, 4, (IMAGES, H, W), generator=g)
    return {**_pairs(g), "superpixels": offset_superpixel_ids(local_ids)}


def _segmentation(g: torch.Generator) -> dict[str, Tensor]:
    return {"logits": torch.randn(50, 4, generator=g, dtype=torch.float64),
            "labels": torch.randint(0, 4, (50,), generator=g)}


def _embeddings(g: torch.Generator) -> dict[str, Tensor]:
    return {"embeddings": torch.randn(10, D, generator=g, dtype=torch.float64),
            "labels": torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])}


# name: (inputs, loss of the inputs, names of the inputs that receive a gradient)
CASES: dict[str, tuple[Callable, Callable[..., Tensor], tuple[str, ...]]] = {
    "point_info_nce": (_pairs, lambda points, maps, pairing_points, pairing_images: PointInfoNCE(10**6)(
        points, maps, pairing_points, pairing_images), ("points", "maps")),
    "superpixel_info_nce": (_superpixels, lambda points, maps, superpixels, pairing_points, pairing_images:
                            SuperpixelInfoNCE()(points, maps, superpixels, pairing_points, pairing_images),
                            ("points", "maps")),
    "contrastive_distill": (_rows, contrastive_distill_loss, ("student",)),
    "similarity": (_rows, similarity_loss, ("student",)),
    "relational": (_rows, lambda student, teacher: relational_loss(student, teacher)["loss"], ("student",)),
    "relational_blockwise": (_rows, lambda student, teacher: relational_loss(student, teacher,
                                                                              block_size=5)["loss"],
                             ("student",)),
    "orthogonality": (_rows, lambda student, teacher: orthogonality_loss(
        F.normalize(student, dim=1), teacher), ("student", "teacher")),
    "commitment": (_codes, lambda student, teacher, codebook: sum(commitment_losses(
        student, teacher, codebook[:12], codebook[4:])), ("student", "teacher")),
    "code_matching": (_codes, lambda student, teacher, codebook: code_matching_loss(
        F.normalize(student, dim=1), F.normalize(teacher, dim=1), codebook), ("student", "teacher")),
    "occupancy": (_occupancy, lambda outputs, occupancy, intensity: sum(occupancy_losses(
        outputs, occupancy, intensity)), ("outputs",)),
    **{f"regression_{kind}": (_rows, lambda student, teacher, kind=kind: feature_regression(
        student, teacher, kind), ("student",)) for kind in REGRESSION_KINDS},
    "chamfer_l1": (_sets, chamfer_l1, ("pred", "gt")),
    "chamfer_l2": (_sets, chamfer_l2, ("pred", "gt")),
    "lovasz_softmax": (_segmentation, lambda logits, labels: lovasz_softmax(logits.softmax(1), labels),
                       ("logits",)),
    "multi_positive_contrastive": (_embeddings, lambda embeddings, labels: multi_positive_contrastive(
        F.normalize(embeddings, dim=1), labels), ("embeddings",)),
}


def _evaluate(name: str, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, dict[str, Tensor]]:
    make, loss_of, with_grad = CASES[name]
    inputs = {}
    for key, value in make(torch.Generator().manual_seed(0)).items():
        value = value.to(device, dtype) if value.is_floating_point() else value.to(device)
        inputs[key] = value.requires_grad_(True) if key in with_grad else value
    loss = loss_of(**inputs)
    loss.backward()
    return loss, {key: inputs[key].grad for key in with_grad}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_forward_and_backward_on_device(name: str, device, tolerance) -> None:
    loss, grads = _evaluate(name, device, torch.float32)
    expected, expected_grads = _evaluate(name, torch.device("cpu"), torch.float64)
    assert loss.device == device and loss.dim() == 0
    tolerance.check(loss, expected, torch.float32, msg="loss")
    for key, grad in grads.items():
        assert grad is not None and grad.device == device, key
        tolerance.check(grad, expected_grads[key], torch.float32, msg=f"gradient of {key}")


def test_codebook_search_and_update_on_device(device, tolerance) -> None:
    """Nearest codes, STE quantisation and one EMA update of the unified codebook: the same codes and
    (float32) codewords on the device as on the CPU."""
    g = torch.Generator().manual_seed(3)
    points, pixels = torch.randn(64, D, generator=g), torch.randn(64, D, generator=g)
    results = []
    for where in (device, torch.device("cpu")):
        codebook = UnifiedCodebook(num_codes=16, dim=D, decay=0.9, seed=0, chunk_size=16).to(where)
        x = points.to(where).requires_grad_(True)
        point_codes, pixel_codes = codebook.nearest(x), codebook.nearest(pixels.to(where))
        quantized = codebook.quantize(x, codes=point_codes)
        quantized.square().sum().backward()
        codebook.update(x.detach(), pixels.to(where), point_codes, pixel_codes)
        results.append((point_codes.cpu(), pixel_codes.cpu(), quantized.detach(), x.grad, codebook.embedding))
    (codes, pixel_codes, quantized, grad, embedding), (codes64, pixel_codes64, *cpu) = results
    assert torch.equal(codes, codes64) and torch.equal(pixel_codes, pixel_codes64)
    for actual, expected in zip((quantized, grad, embedding), cpu, strict=True):
        assert actual.device == device
        tolerance.check(actual, expected.double(), torch.float32)
