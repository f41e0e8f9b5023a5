"""The method registry: the one place of `cmcr_core.methods` that reads a recipe.

It builds students, teachers (every kind, through ``cmcr_core.models.teacher.build_teacher``), the
pretraining methods named by ``recipe.method`` (``METHOD_BUILDERS``), ReCon's method and the downstream
networks; the method modules themselves take explicit keyword arguments only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from cmcr_core.config import (
    FinetuneRecipe,
    PretrainRecipe,
    ReconModelConfig,
    ReconRecipe,
    StudentConfig,
    TeacherConfig,
)
from cmcr_core.engine.method import Method
from cmcr_core.losses.codebook import UnifiedCodebook
from cmcr_core.methods.cmcr import CMCR
from cmcr_core.methods.distill import PixelToPointDistillation
from cmcr_core.methods.recon import RECON_PRESETS, ReConMethod
from cmcr_core.methods.relational import FeatureSpaceDistillation
from cmcr_core.models.cmcr_heads import MIMDecoder, OccupancyMLP
from cmcr_core.models.frozen_teacher import FrozenTeacher
from cmcr_core.models.image_decoders import DECODER_PRESETS, PixelDecoder, build_image_decoder
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.models.teacher import build_teacher

FEATURE_DISTILLATION_METHODS: tuple[str, ...] = ("relational", "similarity", "contrastive")

logger = logging.getLogger(__name__)


def build_student(
    cfg: StudentConfig, out_channels: int | None = None, normalize: bool | None = None
) -> MinkUNet34C:
    """The 3D student of the recipe (Res16UNet34C widths and depths unless overridden)."""
    return MinkUNet34C(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels if out_channels is None else out_channels,
        normalize_output=cfg.normalize if normalize is None else normalize,
        planes=cfg.planes,
        layers=cfg.layers,
        init_dim=cfg.init_dim,
        bn_momentum=cfg.bn_momentum,
        block_bn_momentum=cfg.block_bn_momentum,
    )


def teacher_from_config(cfg: TeacherConfig) -> FrozenTeacher:
    """The recipe's frozen teacher, any kind (``cmcr_core.models.teacher.build_teacher``); the decoder preset
    chooses the ResNet encoder's dilation (SLidR's ``dilation`` decoder wants output stride 4)."""
    return build_teacher(cfg.arch, cfg.weights, DECODER_PRESETS[cfg.decoder].encoder_dilation)


def build_distillation(recipe: PretrainRecipe) -> Method:
    """PPKT / SLidR: the same module, losses switched by their weights."""
    teacher = teacher_from_config(recipe.teacher)
    decoder = build_image_decoder(
        recipe.teacher.decoder,
        in_channels=teacher.out_channels,
        out_channels=recipe.teacher.out_channels,
        upsample=teacher.output_stride,
    )
    if recipe.teacher.out_channels != recipe.student.out_channels:
        raise ValueError(
            f"teacher.out_channels ({recipe.teacher.out_channels}) must equal student.out_channels "
            f"({recipe.student.out_channels}): both sides of a pair live in one embedding space"
        )
    return PixelToPointDistillation(
        student=build_student(recipe.student),
        teacher=teacher,
        decoder=decoder,
        point_nce_weight=recipe.loss.point_nce,
        superpixel_nce_weight=recipe.loss.superpixel_nce,
        num_matches=recipe.loss.num_matches,
        temperature=recipe.loss.temperature,
        seed=recipe.train.seed,
    )


def build_feature_distillation(recipe: PretrainRecipe) -> FeatureSpaceDistillation:
    """relational / similarity / contrastive (docs/analysis.md): no decoder, losses on by their weights."""
    loss = recipe.loss
    if recipe.method in FEATURE_DISTILLATION_METHODS and getattr(loss, recipe.method) <= 0:
        raise ValueError(
            f"method {recipe.method!r} needs loss.{recipe.method} > 0 (it is {getattr(loss, recipe.method)})"
        )
    if loss.point_nce > 0 or loss.superpixel_nce > 0:
        raise ValueError(
            f"method {recipe.method!r} distils in the teacher's space with loss.relational/similarity/"
            f"contrastive; set loss.point_nce and loss.superpixel_nce to 0 (they are {loss.point_nce} and "
            f"{loss.superpixel_nce}; PPKT's decoder-based InfoNCE is method 'ppkt')"
        )
    teacher = teacher_from_config(recipe.teacher)
    if recipe.student.out_channels != teacher.out_channels:
        raise ValueError(
            f"student.out_channels ({recipe.student.out_channels}) must equal the {teacher.info.arch} "
            f"teacher's feature size ({teacher.out_channels}): method {recipe.method!r} has no decoder, so "
            "the student's head outputs the teacher's (for CLIP: the image–text) space"
        )
    if not recipe.student.normalize:
        raise ValueError("student.normalize must be true: the losses compare unit vectors")
    return FeatureSpaceDistillation(
        student=build_student(recipe.student),
        teacher=teacher,
        relational_weight=loss.relational,
        similarity_weight=loss.similarity,
        contrastive_weight=loss.contrastive,
        num_matches=loss.num_matches,
        temperature=loss.temperature,
        lambda_cross=loss.lambda_cross,
        lambda_intra=loss.lambda_intra,
        relational_block_size=loss.relational_block_size or None,
        seed=recipe.train.seed,
    )


def build_cmcr(recipe: PretrainRecipe) -> CMCR:
    """CMCR from a resolved recipe (``method: cmcr``); modules of losses that are off are not built."""
    loss = recipe.loss
    if loss.superpixel_nce > 0:
        raise ValueError("loss.superpixel_nce must be 0 for method cmcr (CMCR distils point-pixel pairs)")
    dim = recipe.student.out_channels
    if recipe.teacher.out_channels != dim:
        raise ValueError(
            f"teacher.out_channels ({recipe.teacher.out_channels}) must equal student.out_channels ({dim}): "
            "both sides of a pair live in one embedding space"
        )
    if loss.mim > 0 and recipe.data.mim_mask == "none":
        logger.warning("loss.mim > 0 but data.mim_mask is 'none': MIM reconstructs unmasked images")
    teacher = teacher_from_config(recipe.teacher)

    def image_decoder(preset: str) -> PixelDecoder:
        return build_image_decoder(preset, in_channels=teacher.out_channels, out_channels=dim,
                                   upsample=teacher.output_stride)

    occupancy_on = loss.occupancy > 0 or loss.intensity > 0
    return CMCR(
        student=build_student(recipe.student),
        teacher=teacher,
        decoder=image_decoder(recipe.teacher.decoder),
        codebook=UnifiedCodebook(loss.codebook_size, dim, decay=loss.codebook_decay, eps=loss.codebook_eps,
                                 seed=recipe.train.seed, dead_code_reset=loss.dead_code_reset,
                                 dead_code_threshold=loss.dead_code_steps),
        specific_decoder=image_decoder("cmcr_specific") if loss.mim > 0 else None,
        mim_decoder=MIMDecoder(dim) if loss.mim > 0 else None,
        occupancy_mlp=OccupancyMLP(dim + 3) if occupancy_on else None,
        point_nce_weight=loss.point_nce,
        orthogonality_weight=loss.orthogonality,
        commitment_weight=loss.commitment,
        code_matching_weight=loss.code_matching,
        mim_weight=loss.mim,
        mim_images=loss.mim_images,
        occupancy_weight=loss.occupancy,
        intensity_weight=loss.intensity,
        num_matches=loss.num_matches,
        temperature=loss.temperature,
        commitment_beta=loss.commitment_beta,
        code_matching_temperature=loss.code_matching_temperature,
        occupancy_radius=loss.occupancy_radius,
        occupancy_max_neighbours=loss.occupancy_max_neighbours,
        shared_codebook_pairs=loss.shared_codebook_pairs,
        contrast_images=loss.contrast_images,
        orthogonality_per_voxel=loss.orthogonality_per_voxel,
        mim_point_codes=loss.mim_point_codes,
        seed=recipe.train.seed,
    )


# method name -> builder; later methods register here.
METHOD_BUILDERS: dict[str, Callable[[PretrainRecipe], Method]] = {
    "ppkt": build_distillation,
    "slidr": build_distillation,
    "relational": build_feature_distillation,
    "similarity": build_feature_distillation,
    "contrastive": build_feature_distillation,
    "cmcr": build_cmcr,
}


def build_method(recipe: PretrainRecipe) -> Method:
    """The pretraining method named by `recipe.method`."""
    if recipe.method not in METHOD_BUILDERS:
        raise ValueError(f"unknown method {recipe.method!r} in the recipe; known: {sorted(METHOD_BUILDERS)}")
    return METHOD_BUILDERS[recipe.method](recipe)


# --- ReCon (object point clouds) and the downstream networks -------------------------------------------


def recon_model_sizes(model: ReconModelConfig) -> dict[str, int]:
    """The preset's sizes with the recipe's own G and K where set."""
    sizes = dict(RECON_PRESETS[model.preset])
    if model.num_groups > 0:
        sizes["num_groups"] = model.num_groups
    if model.group_size > 0:
        sizes["group_size"] = model.group_size
    return sizes


def recon_encoder_sizes(model: ReconModelConfig) -> dict[str, int]:
    """The encoder part of ``recon_model_sizes`` (no decoder): kwargs of ``PointTransformerClassifier``."""
    keys = ("embed_dim", "depth", "num_heads", "num_groups", "group_size")
    return {k: v for k, v in recon_model_sizes(model).items() if k in keys}


def build_recon_method(recipe: ReconRecipe, mask_generator: torch.Generator | None = None) -> ReConMethod:
    """``ReConMethod`` with the recipe's sizes and loss weights."""
    m, loss = recipe.model, recipe.loss
    return ReConMethod(
        **recon_model_sizes(m),
        drop_path_rate=m.drop_path_rate,
        mask_ratio=m.mask_ratio,
        mask_type=m.mask_type,
        img_dim=m.img_dim,
        text_dim=m.text_dim,
        w_rec=loss.rec,
        w_img=loss.img,
        w_text=loss.text,
        w_smc=loss.smc,
        rec_loss=loss.rec_loss,
        regression=loss.regression,
        smc_temperature=loss.smc_temperature,
        mask_generator=mask_generator,
    )


def build_segmentation_model(recipe: FinetuneRecipe, num_classes: int, seed: int) -> MinkUNet34C:
    """MinkUNet34C with `num_classes` outputs, initialised from an explicit generator seeded `seed`."""
    m = recipe.model
    model = MinkUNet34C(in_channels=m.in_channels, out_channels=num_classes, normalize_output=False,
                        planes=m.planes, layers=m.layers, init_dim=m.init_dim, bn_momentum=m.bn_momentum,
                        block_bn_momentum=m.block_bn_momentum)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model
