"""SuperpixelInfoNCE vs a naive per-superpixel loop (on the CPU), kept-superpixel rule (D15) and id offsets
(D14), computed on the test device."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.losses.superpixel_info_nce import SuperpixelInfoNCE, superpixel_pool
from cmcr_core.ops.pixels import offset_superpixel_ids

torch.set_num_threads(1)


def _problem(seed=0, num_voxels=40, num_pairs=60, dim=6, images=2, height=6, width=8, segments=5,
             device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    point_features = F.normalize(torch.randn(num_voxels, dim, generator=generator), dim=1)
    image_features = F.normalize(torch.randn(images, dim, height, width, generator=generator), dim=1)
    local = torch.randint(0, segments, (images, height, width), generator=generator)
    superpixels = offset_superpixel_ids(local)
    pairing_points = torch.randint(0, num_voxels, (num_pairs,), generator=generator)
    # A voxel paired twice with pixels of one superpixel must count twice.
    pairing_points[1] = pairing_points[0]
    pairing_images = torch.stack([torch.randint(0, n, (num_pairs,), generator=generator)
                                  for n in (images, height, width)], dim=1)
    pairing_images[1] = pairing_images[0]
    return tuple(t.to(device) for t in (point_features, image_features, superpixels, pairing_points,
                                        pairing_images))


def _naive_pool(point_features, image_features, superpixels, pairing_points, pairing_images):
    """Per-superpixel Python loops: mean over pairs (3D) and over all pixels (2D), sorted by id."""
    pixel_sums, pixel_counts, pair_sums, pair_counts = {}, {}, {}, {}
    images, dim, height, width = image_features.shape
    for i in range(images):
        for r in range(height):
            for c in range(width):
                s = int(superpixels[i, r, c])
                zero = torch.zeros(dim, dtype=torch.float64)
                pixel_sums[s] = pixel_sums.get(s, zero) + image_features[i, :, r, c]
                pixel_counts[s] = pixel_counts.get(s, 0) + 1
    for v, (i, r, c) in zip(pairing_points.tolist(), pairing_images.tolist(), strict=True):
        s = int(superpixels[i, r, c])
        pair_sums[s] = pair_sums.get(s, torch.zeros(dim, dtype=torch.float64)) + point_features[v]
        pair_counts[s] = pair_counts.get(s, 0) + 1
    kept = sorted(pair_sums)
    k = torch.stack([pair_sums[s] / pair_counts[s] for s in kept])
    q = torch.stack([pixel_sums[s] / pixel_counts[s] for s in kept])
    return k, q, kept


def _naive_info_nce(k, q, tau):
    total = 0.0
    for i in range(len(k)):
        scores = [float(k[i] @ q[j]) / tau for j in range(len(q))]
        total -= scores[i] - math.log(sum(math.exp(s) for s in scores))
    return total / len(k)


def test_pooling_matches_naive_loops(device):
    inputs = _problem(device=device)
    k, q, counts = superpixel_pool(*inputs)
    k_ref, q_ref, kept = _naive_pool(*(t.cpu() for t in inputs))
    assert k.device == q.device == counts.device == device
    assert torch.allclose(k.cpu().double(), k_ref, atol=1e-6)
    assert torch.allclose(q.cpu().double(), q_ref, atol=1e-6)
    assert counts.sum().item() == inputs[3].shape[0]
    # Pooled vectors are means of unit vectors, not re-normalised: strictly shorter here.
    assert (k.norm(dim=1) < 1 - 1e-4).any() and (q.norm(dim=1) < 1 - 1e-4).all()


def test_loss_matches_naive_reference(device, tolerance):
    inputs = _problem(seed=1, device=device)
    loss = SuperpixelInfoNCE(temperature=0.07)(*inputs)
    k_ref, q_ref, _ = _naive_pool(*(t.cpu() for t in inputs))
    assert loss.item() == pytest.approx(_naive_info_nce(k_ref, q_ref, 0.07), rel=tolerance.on(device, 1e-5))
    # The count collate hands over (no wait for the device) gives the same loss as counting here.
    counted = SuperpixelInfoNCE(temperature=0.07)(*inputs, num_superpixels=int(inputs[2].max()) + 1)
    assert torch.equal(counted, loss)


def test_superpixels_without_points_are_dropped_and_zero_first_component_kept(device):
    point_features = torch.tensor([[0.0, 1.0], [1.0, 0.0]], device=device)
    image_features = F.normalize(torch.randn(1, 2, 2, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    image_features = image_features.to(device)
    superpixels = torch.tensor([[[0, 0, 1], [2, 2, 1]]], device=device)  # id 1 gets no pair
    pairing_points = torch.tensor([0, 1, 0], device=device)
    pairing_images = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 1]], device=device)  # ids 0, 2, 0
    k, q, counts = superpixel_pool(
        point_features, image_features, superpixels, pairing_points, pairing_images
    )
    # Superpixel 0 pools (0, 1): its first component is exactly 0, yet it is kept (count > 0, D15).
    assert torch.equal(k.cpu(), torch.tensor([[0.0, 1.0], [1.0, 0.0]])) and counts.tolist() == [2.0, 1.0]
    assert torch.allclose(q[1], image_features[0, :, 1, :2].mean(dim=1))


def test_offsets_use_each_images_actual_maximum():
    # Image 0 has ids up to 160 (> 150): a fixed 150-per-image offset would collide with image 1.
    local = torch.zeros(3, 2, 2, dtype=torch.uint8)
    local[0, 0, 0], local[0, 1, 1] = 160, 3
    local[1, 0, 1] = 7
    local[2] = 2
    ids = offset_superpixel_ids(local)
    expected_offsets = [0, 161, 161 + 8]
    for image in range(3):
        assert torch.equal(ids[image], local[image].long() + expected_offsets[image])
    per_image = [set(ids[i].flatten().tolist()) for i in range(3)]
    assert all(a.isdisjoint(b) for n, a in enumerate(per_image) for b in per_image[n + 1:])


def test_gradients_reach_both_modalities(device):
    point_features, image_features, *rest = _problem(seed=2, device=device)
    point_features.requires_grad_(True)
    image_features.requires_grad_(True)
    SuperpixelInfoNCE()(point_features, image_features, *rest, num_superpixels=10).backward()
    assert point_features.grad.abs().sum() > 0 and image_features.grad.abs().sum() > 0


def test_shape_mismatch_is_named():
    point_features, image_features, superpixels, pairing_points, pairing_images = _problem()
    with pytest.raises(ValueError, match="superpixels"):
        superpixel_pool(point_features, image_features, superpixels[:1], pairing_points, pairing_images)
