"""SLidR's superpixel-driven InfoNCE (Sautier et al., CVPR 2022; valeoai/SLidR).

For every superpixel s of the batch:

* k_s = mean of the student features over the **pairs** whose pixel lies in s (a voxel paired with several
  pixels of s counts once per pair);
* q_s = mean of the teacher features over **all pixels** of s (at crop resolution);
* superpixels with at least one pair are kept (count > 0, not SLidR's ``k[:, 0] != 0``: D15 of
  docs/differences.md);
* the pooled vectors are **not** re-normalised;
* L = InfoNCE(k, q, τ = 0.07) over the kept superpixels (same formula as PointInfoNCE).

Superpixel ids must be unique across the whole batch: image i's ids are offset by the number of ids used by
images 0..i−1, counted from each image's *actual* maximum id, not by a fixed 150 per image (D14 of
docs/differences.md; ``cmcr_core.ops.pixels.offset_superpixel_ids``, called by the collate function). Means
are scatter-adds (``index_add``) divided by exact counts; SLidR divides by count + 1e-6, a relative difference
below 1e-6.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cmcr_core.losses.point_info_nce import info_nce

__all__ = ["SuperpixelInfoNCE", "superpixel_pool"]


def superpixel_pool(
    point_features: Tensor,
    image_features: Tensor,
    superpixels: Tensor,
    pairing_points: Tensor,
    pairing_images: Tensor,
    num_superpixels: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pooled 3D and 2D features of the superpixels that received at least one pair.

    Args:
        point_features: (V, D) student features.
        image_features: (I, D, H, W) teacher features at crop resolution.
        superpixels: (I, H, W) int64 ids, unique across the batch, ≥ 0.
        pairing_points: (P,) int64 voxel index of each pair.
        pairing_images: (P, 3) int64 [image index, row, col] of each pair.
        num_superpixels: S, an upper bound of the ids + 1 (computed, with a host sync, when None).

    Returns:
        k (S', D) and q (S', D) float32 means, and the (S',) pair counts, for the S' kept superpixels in
        increasing id order.
    """
    num_images, dim, height, width = image_features.shape
    if superpixels.shape != (num_images, height, width):
        raise ValueError(f"superpixels {tuple(superpixels.shape)} must be (I, H, W) = "
                         f"{(num_images, height, width)} like image_features {tuple(image_features.shape)}")
    if point_features.dim() != 2 or point_features.shape[1] != dim:
        raise ValueError(f"point_features must be (V, {dim}), got {tuple(point_features.shape)}")
    if pairing_images.dim() != 2 or pairing_images.shape != (pairing_points.shape[0], 3):
        raise ValueError(f"pairing_images must be (P, 3) with P = {pairing_points.shape[0]}, got "
                         f"{tuple(pairing_images.shape)}")
    pixel_ids = superpixels.reshape(-1).long()
    size = int(pixel_ids.max()) + 1 if num_superpixels is None else num_superpixels
    image, row, col = pairing_images.unbind(1)
    pair_ids = superpixels[image, row, col].long()

    k_sum = point_features.new_zeros(size, dim, dtype=torch.float32).index_add(
        0, pair_ids, point_features[pairing_points].float()
    )
    counts = torch.zeros(size, device=point_features.device).index_add(
        0, pair_ids, torch.ones_like(pair_ids, dtype=torch.float32)
    )
    # (I, D, H, W) → (I·H·W, D) so every pixel adds its vector to its superpixel's row.
    pixels = image_features.permute(0, 2, 3, 1).reshape(-1, dim).float()
    q_sum = pixels.new_zeros(size, dim).index_add(0, pixel_ids, pixels)
    pixel_counts = torch.bincount(pixel_ids, minlength=size).to(torch.float32)

    keep = counts > 0
    # Every kept superpixel owns at least the pixel of its pair, so pixel_counts[keep] >= 1.
    k = k_sum[keep] / counts[keep].unsqueeze(1)
    q = q_sum[keep] / pixel_counts[keep].unsqueeze(1)
    return k, q, counts[keep]


class SuperpixelInfoNCE(nn.Module):
    """Superpixel-pooled InfoNCE (SLidR) with temperature τ."""

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(
        self,
        point_features: Tensor,
        image_features: Tensor,
        superpixels: Tensor,
        pairing_points: Tensor,
        pairing_images: Tensor,
        num_superpixels: int | None = None,
    ) -> Tensor:
        """Scalar loss; arguments as in ``superpixel_pool`` (ids unique across the batch)."""
        k, q, _ = superpixel_pool(
            point_features, image_features, superpixels, pairing_points, pairing_images, num_superpixels
        )
        return info_nce(k, q, self.temperature)
