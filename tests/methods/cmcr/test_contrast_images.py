"""loss.contrast_images = "unmasked": PointInfoNCE and the codebook pairs take the teacher's features of
the unmasked crops, while MIM still reconstructs from the masked ones."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from cmcr_toys import tiny_batch, tiny_cmcr

torch.set_num_threads(1)


def _losses(method, batch):
    method = copy.deepcopy(method).train()  # same weights, codebook and generator states for every call
    losses, metrics = method(batch)
    return {k: v.detach() for k, v in losses.items()}, metrics


def test_unmasked_contrast_targets_equal_a_step_on_unmasked_images_and_keep_mim_masked(device):
    batch = tiny_batch(seed=3).to(device)
    assert batch.target_images is not None and not torch.equal(batch.images, batch.target_images)
    unmasked_batch = replace(batch, images=batch.target_images)
    masked = tiny_cmcr(seed=2).to(device)  # reference: the masked input feeds everything
    unmasked = copy.deepcopy(masked)
    unmasked.contrast_images = "unmasked"
    u, u_metrics = _losses(unmasked, batch)
    m, _ = _losses(masked, batch)
    m_clean, clean_metrics = _losses(masked, unmasked_batch)
    # Contrastive and codebook terms: exactly those of a step whose input crops are the unmasked ones.
    for name in ("point_nce", "commit_points", "commit_pixels", "cmcm"):
        torch.testing.assert_close(u[name], m_clean[name], msg=name)
    torch.testing.assert_close(u_metrics["codebook_active"], clean_metrics["codebook_active"])
    assert not torch.allclose(u["point_nce"], m["point_nce"])
    # MIM: reconstructs the unmasked crops from the masked ones, as in the reference.
    torch.testing.assert_close(u["mim"], m["mim"])
    # 3D-only terms do not depend on the images.
    for name in ("orthogonality", "occupancy", "intensity"):
        torch.testing.assert_close(u[name], m[name], msg=name)


def test_unmasked_contrast_targets_with_a_mim_subset_and_unknown_values(device):
    batch = tiny_batch(seed=4).to(device)
    method = tiny_cmcr(seed=1, mim_images=1, contrast_images="unmasked").to(device)
    losses, _ = _losses(method, batch)
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="contrast_images"):
        tiny_cmcr(seed=1, contrast_images="clean")
