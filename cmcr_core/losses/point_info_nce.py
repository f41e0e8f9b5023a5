"""PointInfoNCE: point-to-pixel contrastive loss of PPKT and CMCR (PPKT as in valeoai/SLidR).

From the P pairs (voxel index, image index, row, col) of a per-GPU batch, M pairs are sampled uniformly
without replacement (all P pairs, in their given order, when P ≤ M). With k_m the student feature of the
m-th sampled voxel and q_m the teacher feature of its pixel (both unit norm)::

    L = CrossEntropy(K Qᵀ / τ, arange(M)) = −(1/M) Σ_i log( exp(k_i·q_i/τ) / Σ_j exp(k_i·q_j/τ) )

One direction only: each 3D anchor scores against all sampled pixels (any camera, any sample).
Defaults: M = 4096 (PPKT/SLidR; CMCR uses 2048), τ = 0.07. Sampling runs on the features' device with an
explicit ``torch.Generator`` (no host round trip, D11 of docs/differences.md; reproducible, resumable).
The similarity matrix is computed in float32 even under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.ops.pixels import gather_pixel_features

__all__ = ["PointInfoNCE", "info_nce", "sample_pairs"]


def info_nce(anchors: Tensor, candidates: Tensor, temperature: float = 0.07) -> Tensor:
    """InfoNCE with row i of ``candidates`` as the positive of row i of ``anchors``.

    Args:
        anchors: K, (M, D).
        candidates: Q, (M, D).
        temperature: τ > 0.

    Returns:
        scalar ``cross_entropy(K Qᵀ / τ, arange(M))`` (float32).
    """
    if anchors.dim() != 2 or anchors.shape != candidates.shape:
        raise ValueError(
            f"anchors and candidates must both be (M, D); got {tuple(anchors.shape)} and "
            f"{tuple(candidates.shape)}"
        )
    if anchors.shape[0] == 0:
        raise ValueError("InfoNCE needs at least one pair, got M = 0")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # Autocast would run the product in bfloat16 even on float32 inputs (matmul is on its cast list).
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        logits = anchors.float() @ candidates.float().t() / temperature
        target = torch.arange(anchors.shape[0], device=anchors.device)
        return F.cross_entropy(logits, target)


def sample_pairs(
    num_pairs: int, num_matches: int, device: torch.device | str, generator: torch.Generator | None = None
) -> Tensor:
    """Indices of min(P, M) distinct pairs: (min(P, M),) int64 on ``device``.

    ``randperm(P)[:M]`` drawn from ``generator`` (which must live on ``device``) when P > M, else
    ``arange(P)`` (every pair, untouched order, no random draw).
    """
    if num_pairs <= num_matches:
        return torch.arange(num_pairs, device=device)
    return torch.randperm(num_pairs, generator=generator, device=device)[:num_matches]


class PointInfoNCE(nn.Module):
    """Point-to-pixel InfoNCE over M sampled pairs.

    Args:
        num_matches: M, the number of sampled pairs (all pairs when fewer exist).
        temperature: τ.
    """

    def __init__(self, num_matches: int = 4096, temperature: float = 0.07) -> None:
        super().__init__()
        if num_matches < 1:
            raise ValueError(f"num_matches must be >= 1, got {num_matches}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_matches = num_matches
        self.temperature = temperature

    def forward(
        self,
        point_features: Tensor,
        image_features: Tensor,
        pairing_points: Tensor,
        pairing_images: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Loss over sampled pairs.

        Args:
            point_features: K, (V, D) unit-norm student features of the V voxels of the batch.
            image_features: either (I, D, H, W) teacher feature maps (then ``pairing_images`` is
                required) or (P, D) teacher vectors already gathered per pair.
            pairing_points: (P,) int64 voxel index of each pair.
            pairing_images: (P, 3) int64 [image index, row, col] of each pair.
            generator: ``torch.Generator`` on the features' device driving the sampling.

        Returns:
            scalar loss.
        """
        num_pairs = pairing_points.shape[0]
        if pairing_points.dim() != 1 or num_pairs == 0:
            raise ValueError(
                f"pairing_points must be a non-empty (P,) tensor, got {tuple(pairing_points.shape)}"
            )
        if point_features.dim() != 2:
            raise ValueError(f"point_features must be (V, D), got {tuple(point_features.shape)}")
        chosen = sample_pairs(num_pairs, self.num_matches, point_features.device, generator)
        anchors = point_features[pairing_points[chosen]]
        if image_features.dim() == 4:
            if pairing_images is None or pairing_images.shape[0] != num_pairs:
                got = None if pairing_images is None else tuple(pairing_images.shape)
                raise ValueError(f"image feature maps need pairing_images (P={num_pairs}, 3), got {got}")
            candidates = gather_pixel_features(image_features, pairing_images[chosen])
        elif image_features.dim() == 2 and image_features.shape[0] == num_pairs:
            candidates = image_features[chosen]
        else:
            raise ValueError(
                f"image_features must be (I, D, H, W) maps or (P={num_pairs}, D) gathered vectors, got "
                f"{tuple(image_features.shape)}"
            )
        return info_nce(anchors, candidates, self.temperature)
