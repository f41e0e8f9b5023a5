"""PPKT and SLidR: a 3D student distilled from a frozen 2D teacher by point or superpixel InfoNCE.

Both methods are this one module; the recipe decides which losses are on (a loss is on when its weight is
> 0) and which decoder the teacher uses (`ppkt`: stride-32 encoder + 1x1 conv + bilinear upsampling;
`dilation`: stride-4 dilated encoder, SLidR). References: the PPKT and SLidR papers, valeoai/SLidR.
"""

from __future__ import annotations

from torch import Tensor

from cmcr_core.data.batch import Batch
from cmcr_core.losses.point_info_nce import PointInfoNCE
from cmcr_core.losses.superpixel_info_nce import SuperpixelInfoNCE
from cmcr_core.methods.base import DistillationMethod
from cmcr_core.models.frozen_teacher import FrozenTeacher
from cmcr_core.models.image_decoders import PixelDecoder
from cmcr_core.models.minkunet import MinkUNet34C


class PixelToPointDistillation(DistillationMethod):
    """Student MinkUNet + frozen teacher + trainable decoder + InfoNCE losses.

    Args:
        student: 3D network whose output is L2-normalised (V, D) per voxel.
        teacher: frozen image encoder, (I, 3, H, W) in [0, 1] -> (I, C, h, w).
        decoder: trainable (I, C, h, w) -> (I, D, H, W) unit-norm pixel features.
        point_nce_weight, superpixel_nce_weight: loss weights (0 = off).
        num_matches, temperature: PointInfoNCE settings; the temperature is shared with SLidR's loss.
        seed: seed of the pair-sampling generator (checkpointed through `generators()`).
    """

    def __init__(
        self,
        student: MinkUNet34C,
        teacher: FrozenTeacher,
        decoder: PixelDecoder,
        point_nce_weight: float = 1.0,
        superpixel_nce_weight: float = 0.0,
        num_matches: int = 4096,
        temperature: float = 0.07,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if point_nce_weight <= 0 and superpixel_nce_weight <= 0:
            raise ValueError("every loss weight is 0: set loss.point_nce or loss.superpixel_nce > 0")
        self.student = student
        self.teacher = teacher
        self.decoder = decoder
        self.point_nce_weight = point_nce_weight
        self.superpixel_nce_weight = superpixel_nce_weight
        self.point_nce = PointInfoNCE(num_matches, temperature)
        self.superpixel_nce = SuperpixelInfoNCE(temperature)
        self.seed_generators(seed, "pair_generator")

    def teacher_features(self, batch: Batch) -> Tensor:
        """(I, D, H, W) unit-norm pixel features: frozen encoder, then the trainable decoder."""
        images = batch.images.float().div_(255.0)
        return self.decoder(self.teacher(images), output_size=tuple(images.shape[-2:]))

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        points = self.student_features(batch)
        pixels = self.teacher_features(batch)
        losses: dict[str, Tensor] = {}
        if self.point_nce_weight > 0:
            loss = self.point_nce(
                points, pixels, batch.pairing_points, batch.pairing_images, self.pair_generator
            )
            losses["point_nce"] = self.point_nce_weight * loss
        if self.superpixel_nce_weight > 0:
            if batch.superpixels is None:
                raise ValueError("the superpixel loss needs superpixels: prepare with --superpixels slic")
            loss = self.superpixel_nce(
                points, pixels, batch.superpixels, batch.pairing_points, batch.pairing_images,
                batch.num_superpixels,
            )
            losses["superpixel_nce"] = self.superpixel_nce_weight * loss
        return losses
