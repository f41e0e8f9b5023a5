"""ReCon runs on object point clouds: pretraining through the shared engine, fine-tuning and linear probing.

* ``run_recon_pretraining``: ``ReConMethod`` + ``recon_param_groups`` trained by ``cmcr_core.engine.train``
  through ``train_on_objects`` (the one runner; same run folder as LiDAR pretraining: ``recipe.yaml``,
  ``metrics.jsonl``, ``checkpoint.pt`` whose ``student`` entry is the encoder state dict).

Fine-tuning and linear probing of the encoder are in ``cmcr_core.runs.object_classification``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cmcr_core import config
from cmcr_core.config import ObjectClassifyRecipe, ObjectDataConfig, ReconRecipe
from cmcr_core.data.objects import (
    ObjectPointDataset,
    ObjectSet,
    collate_objects,
    load_teacher_targets,
    read_modelnet_h5,
    read_modelnet_resampled,
    read_scanobjectnn,
    read_shapenet55,
)
from cmcr_core.engine import distributed
from cmcr_core.engine.loop import TrainSettings
from cmcr_core.engine.method import Method
from cmcr_core.engine.runner import open_run
from cmcr_core.engine.schedules import OptimizerSettings, ScheduleSettings
from cmcr_core.methods.recon import recon_param_groups
from cmcr_core.methods.registry import build_recon_method
from cmcr_core.runs.pretrain import PretrainRun
from cmcr_core.runs.run_folder import check_run_folder, recipe_file

logger = logging.getLogger(__name__)


def read_objects(data: ObjectDataConfig, split: str) -> ObjectSet:
    """The objects of ``split`` in the layout named by ``data.dataset`` under ``data.path``."""
    if not data.path:
        raise ValueError("no object data: set data.path in the recipe or pass --data ROOT")
    root = Path(data.path)
    if not root.is_dir():
        raise FileNotFoundError(f"data.path {root} is not a folder")
    if data.dataset == "shapenet55":
        return read_shapenet55(root, split)
    if split not in ("train", "test"):
        raise ValueError(f"data.dataset {data.dataset!r} has splits train and test, got {split!r}")
    if data.dataset == "scanobjectnn":
        return read_scanobjectnn(root, split, data.variant)
    if data.dataset == "modelnet_resampled":
        return read_modelnet_resampled(root, split)
    return read_modelnet_h5(root, split)


def object_train_settings(
    recipe: ReconRecipe | ObjectClassifyRecipe, steps_per_epoch: int, device: torch.device
) -> TrainSettings:
    """Engine settings: AdamW, per-step cosine with warmup counted in epochs (as qizekun/ReCon)."""
    o, t = recipe.optim, recipe.train
    total = t.max_steps if t.max_steps > 0 else t.epochs * steps_per_epoch
    warmup = min(o.warmup_epochs * steps_per_epoch, total - 1)
    return TrainSettings(
        total_steps=total,
        optimizer=OptimizerSettings(name="adamw", lr=o.lr, weight_decay=o.weight_decay, betas=o.betas),
        schedule=ScheduleSettings(
            kind=o.schedule,
            warmup_steps=warmup,
            warmup_start_factor=o.warmup_start_lr / o.lr,
            final_factor=o.min_lr / o.lr if o.schedule == "cosine" else 0.0,
        ),
        steps_per_epoch=steps_per_epoch,
        precision="bf16" if t.amp and device.type == "cuda" else "fp32",
        grad_clip_norm=o.grad_clip if o.grad_clip > 0 else None,
        checkpoint_every=t.checkpoint_every,
        keep_checkpoints=t.keep_checkpoints,
        log_every=t.log_every,
        tensorboard=t.tensorboard,
    )


def fps_pool_size(data: ObjectDataConfig) -> int | None:
    if data.fps_pool > 0:
        return data.fps_pool
    return {1024: 1200, 2048: 2400}.get(data.num_points, math.ceil(1.2 * data.num_points))


def train_dataset(
    recipe: ReconRecipe | ObjectClassifyRecipe, objects: ObjectSet, needs_targets: bool
) -> ObjectPointDataset:
    d = recipe.data
    targets = None
    if needs_targets:
        if not d.targets:
            raise ValueError("an img/text loss is on but data.targets is empty: run `cmcr prepare objects`")
        targets = load_teacher_targets(d.targets)
    pool = fps_pool_size(d) if d.sampling == "fps_random" else None
    return ObjectPointDataset(
        objects, d.num_points, d.sampling, d.normalize, d.augmentation, targets, pool, seed=recipe.train.seed
    )


def train_on_objects(
    recipe: ReconRecipe | ObjectClassifyRecipe,
    method: Method,
    dataset: ObjectPointDataset,
    out_dir: Path,
    *,
    param_groups: list[dict[str, Any]],
    resume: bool = False,
    generators: dict[str, torch.Generator] | None = None,
    stop_at: int | None = None,
    step_callback: Callable[[int, Method], None] | None = None,
) -> PretrainRun:
    """Train ``method`` on an object dataset into ``out_dir`` with the one runner (``engine.runner``).

    The caller seeded the process and built ``method`` and ``dataset`` before, so every rank holds the
    same initial model.
    """
    check_run_folder(recipe, out_dir, resume)
    with open_run(out_dir, recipe.train.device, None) as run:
        d = recipe.data
        loader = run.loader(dataset, collate_objects, d.batch_size, d.num_workers, seed=recipe.train.seed,
                            too_small=f"{len(dataset)} objects: fewer than one batch of {d.batch_size} per "
                                      "process (lower data.batch_size)")
        settings = object_train_settings(recipe, loader.steps_per_epoch, run.device)
        run.write(recipe_file(recipe))
        result = run.train(method, loader, settings, recipe=config.to_dict(recipe),
                           generators=generators or {}, resume=resume, stop_at=stop_at,
                           step_callback=step_callback, param_groups=param_groups)
        return PretrainRun(out_dir, result, loader.steps_per_epoch)


def run_recon_pretraining(
    recipe: ReconRecipe,
    out_dir: str | Path,
    resume: bool = False,
    stop_at: int | None = None,
    step_callback: Callable[[int, Method], None] | None = None,
) -> PretrainRun:
    """Pretrain ReCon on ``recipe.data.train_split`` into ``out_dir`` with the shared engine."""
    distributed.seed_process(recipe.train.seed)
    objects = read_objects(recipe.data, recipe.data.train_split)
    dataset = train_dataset(recipe, objects, recipe.loss.img > 0 or recipe.loss.text > 0)
    mask_generator = torch.Generator().manual_seed(recipe.train.seed)
    method = build_recon_method(recipe, mask_generator)
    groups = recon_param_groups(method, recipe.optim.lr, recipe.optim.weight_decay, recipe.optim.cls_lr_scale)
    return train_on_objects(recipe, method, dataset, Path(out_dir), param_groups=groups, resume=resume,
                            generators={"mask": mask_generator}, stop_at=stop_at, step_callback=step_callback)
