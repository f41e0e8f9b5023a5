"""`cmcr pretrain`: prepared data + recipe -> a trained student in a run folder.

The run folder holds `recipe.yaml` (the fully resolved recipe), `metrics.jsonl` and `checkpoint.pt`
(docs/checkpoints.md). Under torchrun every rank runs this function; rank 0 alone writes files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cmcr_core import config
from cmcr_core.config import PretrainRecipe
from cmcr_core.data.batch import collate
from cmcr_core.data.pretrain_dataset import ExtrasHook, PairedSource, PipelineSettings, PretrainDataset
from cmcr_core.engine import distributed
from cmcr_core.engine.loop import TrainResult, TrainSettings, train
from cmcr_core.engine.method import Method
from cmcr_core.engine.schedules import OptimizerSettings, ScheduleSettings
from cmcr_core.methods.registry import build_method

logger = logging.getLogger(__name__)

RECIPE_NAME = "recipe.yaml"


def pipeline_settings(recipe: PretrainRecipe) -> PipelineSettings:
    """The data pipeline of a recipe (superpixels only when a loss uses them, defect D16)."""
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
        log_every=t.log_every,
    )


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


def check_run_folder(recipe: PretrainRecipe, out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a finished or interrupted run, and to resume with a different recipe."""
    checkpoint, saved = out_dir / "checkpoint.pt", out_dir / RECIPE_NAME
    if not resume and checkpoint.exists():
        raise FileExistsError(f"{checkpoint} exists: pass --resume to continue it, or choose another --out")
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
        if saved.exists():
            before = config.to_dict(config.load(type(recipe), saved))
            now = config.to_dict(recipe)
            changed = sorted(
                f"{section}.{key}"
                for section, values in now.items()
                if isinstance(values, dict)
                for key in values
                if before.get(section, {}).get(key) != values[key]
            )
            if changed:
                raise ValueError(f"--resume with a recipe that differs from {saved} in: {', '.join(changed)}")


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


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
    out_dir = Path(out_dir)
    check_run_folder(recipe, out_dir, resume)
    ctx = distributed.init_distributed(resolve_device(recipe.train.device))
    try:
        distributed.seed_process(recipe.train.seed, ctx.rank)
        source = open_source(recipe) if source is None else source
        dataset = PretrainDataset(
            source, pipeline_settings(recipe), seed=recipe.train.seed, extras_hook=extras_hook(recipe)
        )
        batch_size = recipe.data.batch_size
        sampler = distributed.ShardedSampler(
            len(dataset), ctx.rank, ctx.world_size, seed=recipe.train.seed, shuffle=True
        )
        steps_per_epoch = sampler.shard_size // batch_size
        if steps_per_epoch < 1:
            raise ValueError(
                f"split {recipe.data.split!r} has {len(dataset)} samples: fewer than one batch of "
                f"{batch_size} per process (lower data.batch_size)"
            )

        batches = distributed.epoch_batches(dataset, sampler, batch_size, collate, recipe.data.num_workers,
                                            ctx.device)

        method = build_method(recipe)
        method.student = distributed.convert_sync_batchnorm(method.student, ctx)
        settings = train_settings(recipe, steps_per_epoch, ctx.device)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            config.save(recipe, out_dir / RECIPE_NAME)
        result = train(
            method,
            batches,
            out_dir,
            settings,
            recipe=config.to_dict(recipe),
            generators=method.generators() if hasattr(method, "generators") else None,
            resume=resume,
            stop_at=stop_at,
            context=ctx,
            step_callback=step_callback,
        )
        return PretrainRun(out_dir, result, steps_per_epoch)
    finally:
        distributed.cleanup_distributed()
