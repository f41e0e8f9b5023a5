"""PointInfoNCE vs a naive Python-loop reference, analytic values, invariance and sampling, on the test device
(CMCR_TEST_DEVICE; the references run on the CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.losses.point_info_nce import PointInfoNCE, info_nce, sample_pairs
from cmcr_core.ops.pixels import gather_pixel_features

torch.set_num_threads(1)


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _naive_loss(point_features, image_maps, pairing_points, pairing_images, tau):
    """−(1/M) Σ_i log(exp(k_i·q_i/τ) / Σ_j exp(k_i·q_j/τ)) with Python loops over pairs and channels."""
    k = [point_features[v].tolist() for v in pairing_points.tolist()]
    q = [[image_maps[i, d, r, c].item() for d in range(image_maps.shape[1])]
         for i, r, c in pairing_images.tolist()]
    total = 0.0
    for i in range(len(k)):
        scores = [sum(a * b for a, b in zip(k[i], q[j], strict=True)) / tau for j in range(len(q))]
        total -= scores[i] - math.log(sum(math.exp(s) for s in scores))
    return total / len(k)


def _problem(num_voxels=30, num_pairs=25, dim=8, images=3, height=5, width=7, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    point_features = _unit(num_voxels, dim, seed=seed)
    image_maps = F.normalize(torch.randn(images, dim, height, width, generator=generator), dim=1)
    pairing_points = torch.randint(0, num_voxels, (num_pairs,), generator=generator)
    pairing_images = torch.stack([torch.randint(0, n, (num_pairs,), generator=generator)
                                  for n in (images, height, width)], dim=1)
    return tuple(t.to(device) for t in (point_features, image_maps, pairing_points, pairing_images))


def _generator(device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def test_matches_naive_reference_when_all_pairs_are_used(device, tolerance):
    problem = _problem(device=device)
    loss = PointInfoNCE(num_matches=100, temperature=0.07)(*problem)
    expected = _naive_loss(*(t.cpu() for t in problem), 0.07)
    assert loss.device == device and loss.item() == pytest.approx(expected, rel=tolerance.on(device, 1e-5))


def test_sampled_pairs_match_naive_reference_on_the_same_subset(device, tolerance):
    point_features, image_maps, pairing_points, pairing_images = _problem(num_pairs=40, device=device)
    loss = PointInfoNCE(num_matches=12)(point_features, image_maps, pairing_points, pairing_images,
                                        generator=_generator(device, 3))
    chosen = torch.randperm(40, generator=_generator(device, 3), device=device)[:12]
    expected = _naive_loss(point_features.cpu(), image_maps.cpu(), pairing_points[chosen].cpu(),
                           pairing_images[chosen].cpu(), 0.07)
    assert loss.item() == pytest.approx(expected, rel=tolerance.on(device, 1e-5))


def test_sampling_is_without_replacement_and_reproducible(device):
    picked = sample_pairs(1000, 300, device, _generator(device, 0))
    assert picked.device == device and picked.shape == (300,) and picked.unique().numel() == 300
    assert 0 <= picked.min() and picked.max() < 1000
    assert torch.equal(picked, sample_pairs(1000, 300, device, _generator(device, 0)))
    # Fewer pairs than M: all of them, in order.
    assert torch.equal(sample_pairs(5, 300, device), torch.arange(5, device=device))


@pytest.mark.parametrize("num_matches", [1, 4, 16])
def test_analytic_value_for_matched_orthonormal_pairs(num_matches, device):
    # k_i = q_i = e_i: logits are 1/τ on the diagonal and 0 elsewhere, so every row contributes
    # −log(e^{1/τ} / (e^{1/τ} + (M − 1))) = log(1 + (M − 1)·e^{−1/τ}).
    tau = 0.07
    basis = torch.eye(16, device=device)[:num_matches]
    loss = info_nce(basis, basis.clone(), tau)
    expected = math.log1p((num_matches - 1) * math.exp(-1 / tau))
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_analytic_value_for_identical_features_is_log_m(device, tolerance):
    same = F.normalize(torch.ones(9, 4, device=device), dim=1)
    assert info_nce(same, same, 0.07).item() == pytest.approx(math.log(9), rel=tolerance.on(device, 1e-6))


def test_similarities_are_float32_under_bfloat16_autocast(device, tolerance):
    """Autocast would run K Qᵀ in bfloat16 (matmul is on its cast list) even on float32 inputs: logits
    of up to 1/τ ≈ 14 then carry errors of ~0.05. The loss switches autocast off for its product."""
    point_features, image_maps, pairing_points, pairing_images = _problem(num_pairs=25, dim=64, device=device)
    criterion = PointInfoNCE(num_matches=100)
    plain = criterion(point_features, image_maps, pairing_points, pairing_images)
    with torch.autocast(device.type, torch.bfloat16):
        autocast = criterion(point_features, image_maps, pairing_points, pairing_images)
    assert autocast.dtype == torch.float32
    assert autocast.item() == pytest.approx(plain.item(), rel=tolerance.on(device, 1e-6))


def test_permuting_pairs_does_not_change_the_loss(device, tolerance):
    point_features, image_maps, pairing_points, pairing_images = _problem(num_pairs=20, device=device)
    criterion = PointInfoNCE(num_matches=4096)
    permutation = torch.randperm(20, generator=torch.Generator().manual_seed(9)).to(device)
    a = criterion(point_features, image_maps, pairing_points, pairing_images)
    b = criterion(point_features, image_maps, pairing_points[permutation], pairing_images[permutation])
    assert a.item() == pytest.approx(b.item(), rel=tolerance.on(device, 1e-6))


def test_gathered_vectors_equal_feature_maps_and_gradients_flow(device):
    point_features, image_maps, pairing_points, pairing_images = _problem(device=device)
    point_features.requires_grad_(True)
    image_maps.requires_grad_(True)
    gathered = gather_pixel_features(image_maps, pairing_images)
    i, r, c = pairing_images[4].tolist()
    assert torch.equal(gathered[4], image_maps[i, :, r, c])
    criterion = PointInfoNCE(num_matches=10)
    a = criterion(point_features, image_maps, pairing_points, pairing_images, generator=_generator(device, 1))
    b = criterion(point_features, gathered, pairing_points, generator=_generator(device, 1))
    assert a.item() == b.item()
    a.backward()
    assert point_features.grad.abs().sum() > 0 and image_maps.grad.abs().sum() > 0


def test_bad_inputs_are_named():
    point_features, image_maps, pairing_points, pairing_images = _problem()
    criterion = PointInfoNCE()
    with pytest.raises(ValueError, match="pairing_images"):
        criterion(point_features, image_maps, pairing_points)
    with pytest.raises(ValueError, match="image_features"):
        criterion(point_features, image_maps[0], pairing_points, pairing_images)
    with pytest.raises(ValueError, match="temperature"):
        PointInfoNCE(temperature=0.0)
