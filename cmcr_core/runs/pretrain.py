"""`cmcr pretrain`: prepared data + recipe -> a trained student in a run folder; and a finished run rebuilt.

The run folder holds `recipe.yaml` (the fully resolved recipe), `metrics.jsonl` and `checkpoint.pt`
(docs/checkpoints.md). Under torchrun every rank runs this function; rank 0 alone writes files.
`load_pretraining_run` rebuilds the method of a checkpoint for analysis and zero-shot evaluation.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cmcr_core import config
from cmcr_core.config import PretrainRecipe
from cmcr_core.data.batch import collate
from cmcr_core.data.integrity import tolerate_damage
from cmcr_core.data.pretrain_dataset import ExtrasHook, PairedSource, PipelineSettings, PretrainDataset
from cmcr_core.engine import distributed
from cmcr_core.engine.batch_norm import recalibrate_at_last_step
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.engine.loop import TrainResult, TrainSettings
from cmcr_core.engine.method import Method, load_trainable_state_dict
from cmcr_core.engine.runner import open_run
from cmcr_core.engine.schedules import OptimizerSettings, ScheduleSettings
from cmcr_core.eval.features import LoadedRun
from cmcr_core.methods.registry import build_method
from cmcr_core.runs.run_folder import check_run_folder, recipe_file
from cmcr_core.sparse import SparseTensor

logger = logging.getLogger(__name__)


def pipeline_settings(recipe: PretrainRecipe) -> PipelineSettings:
    """The data pipeline of a recipe (superpixels only when a loss uses them, D16 of docs/differences.md)."""
    d = recipe.data
    return PipelineSettings(
        voxel_size=d.voxel_size,
        cylindrical=d.cylindrical,
        intensity_scale=d.intensity_scale,
        crop_size=d.crop_size,
        crop_scale=d.crop_scale,
        crop_ratio=d.crop_ratio,
        cloud_transforms=d.cloud_transforms,
        mixed_transforms=d.mixed_transforms,
        min_pairs=d.min_pairs,
        superpixels=recipe.loss.superpixel_nce > 0,
        mim_mask=d.mim_mask,
    )


def extras_hook(recipe: PretrainRecipe) -> ExtrasHook | None:
    """Method-specific dataset extras: CMCR's occupancy queries when an occupancy/intensity loss is on."""
    loss = recipe.loss
    if loss.occupancy > 0 or loss.intensity > 0:
        from cmcr_core.data.occupancy import OccupancyQueries

        return OccupancyQueries(num_queries=loss.occupancy_queries, delta=loss.occupancy_delta)
    return None


def train_settings(recipe: PretrainRecipe, steps_per_epoch: int, device: torch.device) -> TrainSettings:
    """Map the recipe's optim/train sections onto the engine's settings."""
    o, t = recipe.optim, recipe.train
    total = t.max_steps if t.max_steps > 0 else t.epochs * steps_per_epoch
    return TrainSettings(
        total_steps=total,
        optimizer=OptimizerSettings(
            name=o.name,
            lr=o.lr,
            weight_decay=o.weight_decay,
            betas=o.betas,
            eps=o.eps,
            momentum=o.momentum,
            dampening=o.dampening,
        ),
        schedule=ScheduleSettings(kind=o.schedule, warmup_steps=o.warmup_steps, per_epoch=o.per_epoch),
        steps_per_epoch=steps_per_epoch,
        precision="bf16" if t.amp and device.type == "cuda" else "fp32",
        grad_clip_norm=o.grad_clip if o.grad_clip > 0 else None,
        checkpoint_every=t.checkpoint_every,
        keep_checkpoints=t.keep_checkpoints,
        log_every=t.log_every,
        tensorboard=t.tensorboard,
    )


def voxel_forward(device: torch.device) -> Callable[[torch.nn.Module, Any], Any]:
    """``forward(network, batch)``: a MinkUNet on a batch's voxel features (batch-norm re-estimation)."""
    return lambda network, batch: network(SparseTensor(batch.feats.to(device), batch.coords.to(device)))


def open_source(recipe: PretrainRecipe) -> Sequence[PairedSource]:
    """The prepared split named by the recipe."""
    from cmcr_core.data.prepared import PreparedDataset

    if not recipe.data.path:
        raise ValueError("no prepared data: set data.path in the recipe or pass --data PREPARED")
    return PreparedDataset(recipe.data.path, recipe.data.split)


@dataclass(frozen=True)
class PretrainRun:
    """What a finished (or stopped) pretraining invocation left behind."""

    out_dir: Path
    result: TrainResult
    steps_per_epoch: int


def run_pretraining(
    recipe: PretrainRecipe,
    out_dir: str | Path,
    resume: bool = False,
    stop_at: int | None = None,
    source: Sequence[PairedSource] | None = None,
    step_callback: Callable[[int, Method], None] | None = None,
) -> PretrainRun:
    """Pretrain `recipe.method` on `recipe.data` into `out_dir` (single process or one torchrun rank).

    `source` replaces the prepared split (tests); `step_callback(step, method)` runs after every step.
    """
    out_dir, d = Path(out_dir), recipe.data
    check_run_folder(recipe, out_dir, resume)
    with open_run(out_dir, recipe.train.device, recipe.train.seed) as run:
        source = open_source(recipe) if source is None else source
        dataset, collate_fn = tolerate_damage(PretrainDataset(
            source, pipeline_settings(recipe), seed=recipe.train.seed, extras_hook=extras_hook(recipe)
        ), collate, d.skip_damaged)
        too_small = (f"split {d.split!r} has {len(dataset)} samples: fewer than one batch of {d.batch_size} "
                     "per process (lower data.batch_size)")
        loader = run.loader(dataset, collate_fn, d.batch_size, d.num_workers, seed=recipe.train.seed,
                            too_small=too_small)
        method = build_method(recipe)
        method.student = distributed.convert_sync_batchnorm(method.student, run.context)
        # On the device before its generators are handed over: moving a method re-creates its generators
        # there (new objects), and the checkpoint must hold the states of the ones that draw.
        method.to(run.device)
        settings = train_settings(recipe, loader.steps_per_epoch, run.device)
        run.write(recipe_file(recipe))
        result = run.train(
            method,
            loader,
            settings,
            recipe=config.to_dict(recipe),
            generators=method.generators() if hasattr(method, "generators") else None,
            resume=resume,
            stop_at=stop_at,
            step_callback=recalibrate_at_last_step(
                settings.total_steps, recipe.student.recalibrate_bn_batches, loader.batches,
                lambda trained: trained.student, voxel_forward(run.device), then=step_callback),
        )
        return PretrainRun(out_dir, result, loader.steps_per_epoch)


def load_pretraining_run(
    path: str | Path,
    name: str | None = None,
    teacher_weights: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedRun:
    """Rebuild the pretraining method of a ``cmcr-train`` checkpoint and load its trained weights.

    Args:
        path: checkpoint file (``<run>/checkpoint.pt``).
        name: display name (default: the run folder's name).
        teacher_weights: replaces the recipe's ``teacher.weights`` (a teacher file moved since training).
        device: where the method runs.

    Returns:
        LoadedRun with the method in eval mode on ``device``.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    try:
        recipe = config.build(PretrainRecipe, ckpt.get("recipe") or {}, source=str(path))
    except config.RecipeError as error:
        raise ValueError(f"{path}: its stored recipe does not fit this version of cmcr ({error})") from error
    if teacher_weights is not None:
        teacher = config.replace(recipe.teacher, weights=str(teacher_weights))
        recipe = config.replace(recipe, teacher=teacher)
    if not recipe.teacher.weights:
        logger.warning("%s: the teacher had random weights; it is rebuilt under the run's seed %d exactly as "
                       "`cmcr pretrain` built it", path, recipe.train.seed)
    # Same global-RNG state as run_pretraining had when it built the method, so a randomly initialised
    # teacher comes back identical; the caller's torch and Python RNG states are restored afterwards.
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        distributed.seed_process(recipe.train.seed, 0)
        method = build_method(recipe)
    random.setstate(python_state)
    load_trainable_state_dict(method, ckpt["model"], source=str(path))
    method.to(device).eval()
    return LoadedRun(path, name or path.parent.name, method, recipe, int(ckpt.get("step", 0)),
                     dict(ckpt.get("teacher") or {}))
