"""Value checks of every recipe section: a recipe that cannot run fails at load, before anything runs (so
`--dry-run` and `cmcr recipe show` catch it), naming the key, where it came from and the rule.

Types are checked by `cmcr_core.config.loading`; this module checks values: rates and sizes that must be
positive, probabilities in [0, 1), weights that must not be negative, label fractions of the published
table, crop sizes a network can take (`CHECKS`, applied to every resolved recipe), and the teacher files a
recipe names (`FILE_CHECKS`, applied by the commands that run a recipe, `--dry-run` included, but not by
`cmcr recipe show`: a published recipe names files that exist only where it runs). A rule returns what
is wrong, or None.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cmcr_core.config import objects as o
from cmcr_core.config import schema as s

__all__ = ["CHECKS", "FILE_CHECKS", "LABEL_FRACTIONS", "MIN_CROP_SIDE", "problems"]

Rule = Callable[[Any], "str | None"]

LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 1.0)
"""The published label fractions (nuScenes and SemanticKITTI), in the order of `data.fraction_skips`."""

MIN_CROP_SIDE = 32  # the image encoders downsample by up to 32: a smaller crop does not fill one feature cell
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _each(values: Any) -> tuple[Any, ...]:
    return tuple(values) if isinstance(values, (tuple, list)) else (values,)


def positive(value: Any) -> str | None:
    return None if all(v > 0 for v in _each(value)) else "must be > 0"


def non_negative(value: Any) -> str | None:
    return None if all(v >= 0 for v in _each(value)) else "must be >= 0"


def at_least_one(value: Any) -> str | None:
    return None if all(v >= 1 for v in _each(value)) else "must be >= 1"


def unit_interval(value: Any) -> str | None:
    """A momentum, decay or rate in [0, 1)."""
    return None if all(0 <= v < 1 for v in _each(value)) else "must be in [0, 1)"


def closed_unit(value: Any) -> str | None:
    return None if all(0 <= v <= 1 for v in _each(value)) else "must be in [0, 1]"


def optional_positive(value: Any) -> str | None:
    return None if value is None else positive(value)


def label_fraction(value: float) -> str | None:
    if any(abs(value - known) < 1e-9 for known in LABEL_FRACTIONS):
        return None
    return f"must be one of the published label fractions {', '.join(map(str, LABEL_FRACTIONS))}"


def crop_size(value: tuple[int, int]) -> str | None:
    if min(value) >= MIN_CROP_SIDE:
        return None
    return f"is (height, width) in pixels; each side must be >= {MIN_CROP_SIDE}"


def increasing_range(value: tuple[float, float]) -> str | None:
    low, high = value
    return None if 0 < low <= high else "must be [low, high] with 0 < low <= high"


def area_range(value: tuple[float, float]) -> str | None:
    low, high = value
    return None if 0 < low <= high <= 1 else "must be [low, high] with 0 < low <= high <= 1"


def device(value: str) -> str | None:
    return None if DEVICE.match(value) else "must be auto, cpu, cuda or cuda:N"


def existing_file(value: str) -> str | None:
    """A teacher file named by the recipe must be there (empty = none; `hf_*` teachers name a folder)."""
    if not value or Path(value).exists():
        return None
    return ("names no existing file or folder (weights are never downloaded: place the file there or fix "
            "the path)")


_LOSS_WEIGHTS = ("point_nce", "superpixel_nce", "orthogonality", "commitment", "code_matching", "mim",
                 "occupancy", "intensity", "relational", "similarity", "contrastive", "lambda_cross",
                 "lambda_intra", "commitment_beta")

CHECKS: dict[type, Mapping[str, Rule]] = {
    s.DataConfig: {"voxel_size": positive, "intensity_scale": positive, "crop_size": crop_size,
                   "crop_scale": area_range, "crop_ratio": increasing_range, "min_pairs": non_negative,
                   "batch_size": at_least_one, "num_workers": non_negative},
    s.StudentConfig: {"planes": at_least_one, "layers": at_least_one, "init_dim": at_least_one,
                      "in_channels": at_least_one, "out_channels": at_least_one, "bn_momentum": closed_unit,
                      "block_bn_momentum": closed_unit, "recalibrate_bn_batches": non_negative},
    s.TeacherConfig: {"out_channels": at_least_one},
    s.LossConfig: {**dict.fromkeys(_LOSS_WEIGHTS, non_negative), "temperature": positive,
                   "num_matches": at_least_one, "mim_images": non_negative, "codebook_size": at_least_one,
                   "codebook_decay": unit_interval, "codebook_eps": positive,
                   "code_matching_temperature": positive, "dead_code_steps": at_least_one,
                   "occupancy_queries": at_least_one, "occupancy_delta": positive,
                   "occupancy_radius": positive, "occupancy_max_neighbours": at_least_one,
                   "relational_block_size": non_negative},
    s.OptimConfig: {"lr": positive, "momentum": unit_interval, "dampening": closed_unit,
                    "weight_decay": non_negative, "betas": unit_interval, "eps": positive,
                    "warmup_steps": non_negative, "grad_clip": non_negative},
    s.TrainConfig: {"epochs": at_least_one, "max_steps": non_negative, "checkpoint_every": non_negative,
                    "log_every": at_least_one, "device": device},
    s.TruthDataConfig: {"holdout_scenes": non_negative, "crop_size": crop_size, "batch_size": at_least_one,
                        "num_workers": non_negative},
    s.SemanticNetConfig: {"widths": at_least_one, "context_dilations": at_least_one},
    s.TeacherLossConfig: {"cross_entropy": non_negative, "label_smoothing": unit_interval},
    s.FinetuneDataConfig: {"label_fraction": label_fraction, "fraction_skips": at_least_one,
                           "voxel_size": positive, "intensity_scale": optional_positive,
                           "batch_size": at_least_one, "eval_batch_size": at_least_one,
                           "num_workers": non_negative},
    s.FinetuneModelConfig: {"planes": at_least_one, "layers": at_least_one, "init_dim": at_least_one,
                            "in_channels": at_least_one, "bn_momentum": closed_unit,
                            "block_bn_momentum": closed_unit},
    s.FinetuneLossConfig: {"cross_entropy": non_negative, "lovasz": non_negative},
    s.FinetuneOptimConfig: {"lr": positive, "lr_head": optional_positive, "lr_scratch": positive,
                            "lr_head_scratch": optional_positive, "momentum": unit_interval,
                            "dampening": closed_unit, "weight_decay": non_negative},
    s.FinetuneTrainConfig: {"epochs": at_least_one, "max_steps": non_negative,
                            "checkpoint_every": non_negative, "log_every": at_least_one, "device": device,
                            "recalibrate_bn_batches": non_negative},
    o.ObjectDataConfig: {"num_points": at_least_one, "fps_pool": non_negative,
                         "batch_size": at_least_one, "eval_batch_size": at_least_one,
                         "num_workers": non_negative},
    o.ReconModelConfig: {"num_groups": non_negative, "group_size": non_negative,
                         "drop_path_rate": unit_interval, "mask_ratio": unit_interval,
                         "img_dim": at_least_one, "text_dim": at_least_one},
    o.ReconLossConfig: {"rec": non_negative, "img": non_negative, "text": non_negative, "smc": non_negative,
                        "smc_temperature": positive, "label_smoothing": unit_interval},
    o.ReconOptimConfig: {"lr": positive, "weight_decay": non_negative, "betas": unit_interval,
                         "warmup_epochs": non_negative, "warmup_start_lr": non_negative,
                         "min_lr": non_negative, "grad_clip": non_negative, "cls_lr_scale": positive},
    o.ObjectEvalConfig: {"num_votes": at_least_one, "num_subsets": at_least_one,
                         "recalibrate_bn": non_negative, "probe_c": positive, "probe_epochs": at_least_one,
                         "probe_lr": positive, "probe_weight_decay": non_negative},
}


FILE_CHECKS: dict[type, Mapping[str, Rule]] = {
    s.TeacherConfig: {"weights": existing_file},
    o.ObjectDataConfig: {"targets": existing_file},
}


def problems(recipe: Any, table: Mapping[type, Mapping[str, Rule]],
             prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, value, what is wrong) for each field of `recipe` and its sections that breaks a rule."""
    found = []
    for name, rule in table.get(type(recipe), {}).items():
        value = getattr(recipe, name)
        problem = rule(value)
        if problem is not None:
            found.append((f"{prefix}{name}", value, problem))
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if dataclasses.is_dataclass(value):
            found += problems(value, table, f"{prefix}{f.name}.")
    return found
