"""Relational, similarity and contrastive distillation (docs/analysis.md): a student in the teacher's space.

One module serves the three methods; the recipe decides which losses are on (a loss is on when its weight
is > 0: ``loss.relational``, ``loss.similarity``, ``loss.contrastive``), all computed on the same M =
``loss.num_matches`` point–pixel pairs drawn uniformly without replacement from the batch's pairings
(default [assumed; the paper does not say]: N = 4096 single point–pixel pairs).

**No trainable image decoder** (decision; the paper does not say). The student must land in the
teacher's own space: for CLIP that space is shared with the text encoder, which is what makes zero-shot
segmentation possible (the student's head size must equal the CLIP embedding size), and the
offline semantic teacher's class prototypes live in its encoder space too. A trainable decoder on the
teacher side would move that space, and with the similarity loss (no negatives) it could collapse both
sides to one constant vector at zero loss. So the teacher's feature map is used as it comes: bilinear
interpolation at each paired pixel (identical to upsampling the map to the image with
``align_corners=True`` and reading the pixel, as the PPKT/SLidR decoders and the semantic teacher's
prototypes do), then L2 normalisation. Only the student is trained. The ``teacher.decoder`` preset only
chooses the ResNet encoder's dilation (``dilation`` → stride 4); ``teacher.out_channels`` is not used.

Loss values are computed in float32 with autocast off (N×N similarity matrices lose too much in bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cmcr_core.data.batch import Batch
from cmcr_core.losses.contrastive_distill import contrastive_distill_loss
from cmcr_core.losses.point_info_nce import sample_pairs
from cmcr_core.losses.relational import relational_loss
from cmcr_core.losses.similarity import similarity_loss
from cmcr_core.methods.base import DistillationMethod
from cmcr_core.models.frozen_teacher import FrozenTeacher
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.ops.pixels import bilinear_pixel_features

__all__ = ["FeatureSpaceDistillation"]


class FeatureSpaceDistillation(DistillationMethod):
    """Student MinkUNet distilled into a frozen teacher's feature space (no decoder).

    Args:
        student: 3D network with L2-normalised (V, D) output, D = ``teacher.out_channels``.
        teacher: frozen image encoder, (I, 3, H, W) in [0, 1] → (I, D, h, w).
        relational_weight, similarity_weight, contrastive_weight: loss weights (0 = off).
        num_matches: M pairs sampled per step (all pairs when fewer exist).
        temperature: τ of the contrastive loss.
        lambda_cross, lambda_intra: weights inside the relational loss.
        relational_block_size: None = dense N×N matrices; an int = row blocks (bounded memory).
        seed: seed of the pair-sampling generator (checkpointed through ``generators()``).
    """

    def __init__(
        self,
        student: MinkUNet34C,
        teacher: FrozenTeacher,
        relational_weight: float = 0.0,
        similarity_weight: float = 0.0,
        contrastive_weight: float = 0.0,
        num_matches: int = 4096,
        temperature: float = 0.07,
        lambda_cross: float = 1.0,
        lambda_intra: float = 1.0,
        relational_block_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        weights = {"relational": relational_weight, "similarity": similarity_weight,
                   "contrastive": contrastive_weight}
        if all(w <= 0 for w in weights.values()):
            raise ValueError(
                "every loss weight is 0: set loss.relational, loss.similarity or loss.contrastive > 0"
            )
        if num_matches < 2:
            raise ValueError(f"loss.num_matches must be >= 2 (relational needs pairs), got {num_matches}")
        self.student = student
        self.teacher = teacher
        self.weights = weights
        self.num_matches = num_matches
        self.temperature = temperature
        self.lambda_cross, self.lambda_intra = lambda_cross, lambda_intra
        self.relational_block_size = relational_block_size
        self.seed_generators(seed, "pair_generator")

    def teacher_maps(self, images: Tensor) -> Tensor:
        """(I, 3, H, W) uint8 images → (I, D, h, w) frozen teacher maps (no gradient)."""
        return self.teacher(images.float().div(255.0))

    def paired_teacher_features(self, images: Tensor, pairing_images: Tensor) -> Tensor:
        """(P, D) unit-norm teacher features at the paired pixels [image, row, col] of uint8 ``images``."""
        maps = self.teacher_maps(images)
        return F.normalize(bilinear_pixel_features(maps, pairing_images, tuple(images.shape[-2:])), dim=1)

    def teacher_features(self, batch: Batch) -> Tensor:
        """(I, D, H, W) unit-norm teacher features at every pixel (full-resolution maps; for analysis)."""
        maps = self.teacher_maps(batch.images)
        size = tuple(batch.images.shape[-2:])
        return F.normalize(F.interpolate(maps, size=size, mode="bilinear", align_corners=True), dim=1)

    def forward(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        points = self.student_features(batch)
        chosen = sample_pairs(batch.pairing_points.shape[0], self.num_matches, points.device,
                              self.pair_generator)
        if chosen.numel() < 2:
            raise ValueError(f"batch {batch.tokens}: {chosen.numel()} point–pixel pairs; at least 2 needed")
        pixels = self.paired_teacher_features(batch.images, batch.pairing_images[chosen])
        anchors = points[batch.pairing_points[chosen]]
        losses: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        with torch.autocast(device_type=points.device.type, enabled=False):
            k, q = anchors.float(), pixels.float()
            if self.weights["relational"] > 0:
                terms = relational_loss(k, q, self.lambda_cross, self.lambda_intra,
                                        block_size=self.relational_block_size)
                losses["relational"] = self.weights["relational"] * terms["loss"]
                metrics.update({name: terms[name].detach() for name in
                                ("l_cross_diag", "l_cross_offdiag", "l_intra")})
            if self.weights["similarity"] > 0:
                losses["similarity"] = self.weights["similarity"] * similarity_loss(k, q)
            if self.weights["contrastive"] > 0:
                losses["contrastive"] = self.weights["contrastive"] * contrastive_distill_loss(
                    k, q, temperature=self.temperature)
            metrics["pair_cosine"] = (F.normalize(k, dim=1) * q).sum(dim=1).mean().detach()
        return losses, metrics
