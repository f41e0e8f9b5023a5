"""Build students, teachers and pretraining methods from a resolved recipe."""

from __future__ import annotations

import logging
from collections.abc import Callable

from cmcr_core.config import PretrainRecipe, StudentConfig, TeacherConfig
from cmcr_core.engine.method import Method
from cmcr_core.models.image_decoders import DECODER_PRESETS, build_image_decoder
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.models.resnet import RESNET_LAYOUTS
from cmcr_core.models.teacher import TEACHER_FILE_FORMAT, FrozenTeacher, build_teacher, load_teacher

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


def build_frozen_teacher(cfg: TeacherConfig) -> FrozenTeacher:
    """Load the teacher from its local file, or build a random one when `weights` is empty."""
    dilation = DECODER_PRESETS[cfg.decoder].encoder_dilation
    is_resnet = cfg.arch in RESNET_LAYOUTS
    overrides = {"replace_stride_with_dilation": dilation} if is_resnet and any(dilation) else {}
    if not cfg.weights:
        logger.warning("teacher.weights is empty: the %s teacher has RANDOM weights", cfg.arch)
        return build_teacher(cfg.arch, **overrides)
    # `arch` names the architecture expected of a third-party ResNet file; a cmcr-teacher file names its own
    # (any registered arch, e.g. the synthetic semantic teacher), so the recipe's arch is not imposed on it.
    teacher = load_teacher(cfg.weights, overrides=overrides or None)
    third_party = teacher.info.checkpoint_format != TEACHER_FILE_FORMAT
    if is_resnet and third_party and teacher.info.arch != cfg.arch:
        raise ValueError(f"{cfg.weights} holds {teacher.info.arch} weights, but teacher.arch is {cfg.arch!r}")
    if any(dilation) and not is_resnet:
        raise ValueError(f"teacher.decoder 'dilation' needs a ResNet teacher, got {teacher.info.arch!r}")
    return teacher


def build_distillation(recipe: PretrainRecipe) -> Method:
    """PPKT / SLidR: the same module, losses switched by their weights."""
    from cmcr_core.methods.distill import PixelToPointDistillation

    teacher = build_frozen_teacher(recipe.teacher)
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


def build_feature_space_distillation(recipe: PretrainRecipe) -> Method:
    """relational / similarity / contrastive (METHODS.md §8): no decoder, losses switched by their weights."""
    from cmcr_core.methods.relational import build_feature_distillation

    return build_feature_distillation(recipe)


def build_cmcr_method(recipe: PretrainRecipe) -> Method:
    """CMCR (imported here: cmcr_core.methods.cmcr builds its student and teacher with this module)."""
    from cmcr_core.methods.cmcr import build_cmcr

    return build_cmcr(recipe)


# method name -> builder; later methods register here.
METHOD_BUILDERS: dict[str, Callable[[PretrainRecipe], Method]] = {
    "ppkt": build_distillation,
    "slidr": build_distillation,
    "relational": build_feature_space_distillation,
    "similarity": build_feature_space_distillation,
    "contrastive": build_feature_space_distillation,
    "cmcr": build_cmcr_method,
}


def build_method(recipe: PretrainRecipe) -> Method:
    """The pretraining method named by `recipe.method`."""
    if recipe.method not in METHOD_BUILDERS:
        raise ValueError(f"unknown method {recipe.method!r} in the recipe; known: {sorted(METHOD_BUILDERS)}")
    return METHOD_BUILDERS[recipe.method](recipe)
