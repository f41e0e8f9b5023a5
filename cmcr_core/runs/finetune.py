"""`cmcr finetune` / `cmcr probe`: LiDAR semantic segmentation from a pretrained (or random) student.

Run folder: `recipe.yaml`, `init.json` (initialisation and load report), `checkpoint.pt` (resumable),
`last.pt` (the finished network), `best.pt` (with `train.eval_every`: the best validated network,
`cmcr_core.runs.validation`), `metrics.jsonl` (training, and the validation curve), `metrics.json`
(evaluation of the finished network on the whole validation split). With several seeds each seed has
its own folder `seed<S>/` and the top-level `metrics.json` holds mean ± std (docs/finetune.md).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cmcr_core import config
from cmcr_core.config import FinetuneRecipe
from cmcr_core.data.integrity import tolerate_damage
from cmcr_core.data.label_fractions import (
    epochs_for_fraction,
    kitti_label_scans,
    nuscenes_label_scenes,
    skip_for_fraction,
)
from cmcr_core.data.segmentation_dataset import (
    SegmentationDataset,
    SegmentationSettings,
    Subset,
    collate_segmentation,
)
from cmcr_core.engine import distributed
from cmcr_core.engine.batch_norm import recalibrate_at_last_step, recalibrate_from_batches
from cmcr_core.engine.checkpoint import save_handoff_checkpoint
from cmcr_core.engine.loop import TrainResult, TrainSettings
from cmcr_core.engine.runner import open_run
from cmcr_core.engine.schedules import OptimizerSettings, ScheduleSettings
from cmcr_core.eval import segmentation as seg
from cmcr_core.eval.segmentation import evaluate
from cmcr_core.methods.registry import build_segmentation_model
from cmcr_core.methods.segmentation import HEAD_PREFIX, SegmentationMethod
from cmcr_core.models.checkpoints import load_pretrained_student, read_pretrained_student
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.runs.pretrain import voxel_forward
from cmcr_core.runs.report import Line, Report, Table
from cmcr_core.runs.run_folder import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    INIT_JSON,
    LAST_CHECKPOINT,
    METRICS_JSON,
    check_run_folder,
    read_json,
    recipe_file,
    seed_folder,
    write_json,
)
from cmcr_core.runs.validation import Validator, even_subset, read_best_score

logger = logging.getLogger(__name__)

def segmentation_settings(recipe: FinetuneRecipe) -> SegmentationSettings:
    d = recipe.data
    return SegmentationSettings(
        voxel_size=d.voxel_size, cylindrical=d.cylindrical, intensity_scale=d.intensity_scale,
        intensity_offset=d.intensity_offset, cloud_transforms=d.cloud_transforms,
    )


def open_split(recipe: FinetuneRecipe, split: str) -> tuple[Sequence[Any], tuple[str, ...]]:
    """(prepared scans of `split`, class names with 0 = ignore) for the recipe's dataset."""
    if not recipe.data.path:
        raise ValueError("no prepared data: set data.path in the recipe or pass --data PREPARED")
    if recipe.data.dataset == "semantickitti":
        from cmcr_core.data.semantickitti import KITTI_CLASS_NAMES, PreparedKitti

        return PreparedKitti(recipe.data.path, split), KITTI_CLASS_NAMES
    from cmcr_core.data.labels import COARSE_CLASS_NAMES
    from cmcr_core.data.prepared import PreparedDataset

    return PreparedDataset(recipe.data.path, split), COARSE_CLASS_NAMES


def label_subset(recipe: FinetuneRecipe, source: Any) -> tuple[Subset, dict[str, Any]]:
    """The labelled training scans of the recipe's label fraction, and a description of the subset."""
    skip = skip_for_fraction(recipe.data.label_fraction, recipe.data.fraction_skips)
    tokens = list(source.tokens)
    info: dict[str, Any] = {"label_fraction": recipe.data.label_fraction, "skip": skip}
    if recipe.data.dataset == "semantickitti":
        kept = set(kitti_label_scans(tokens, skip))
        indices = [i for i, t in enumerate(tokens) if t in kept]
    else:
        index = source.index
        order = [scene["name"] for scene in index.header["scenes"]]
        scenes = nuscenes_label_scenes(order, index.split_scenes(recipe.data.train_split), skip)
        scene_of = {t: s for shard in index.shards.values()
                    for t, s in zip(shard["sample_tokens"], shard["scenes"], strict=True)}
        indices = [i for i, t in enumerate(tokens) if scene_of[t] in set(scenes)]
        info["scenes"] = scenes
    info["scans"] = len(indices)
    return Subset(source, indices), info


@dataclass(frozen=True)
class FinetuneRun:
    """One finished downstream run: its folder, evaluation, training result and initialisation."""

    out_dir: Path
    metrics: seg.SegmentationMetrics
    result: TrainResult
    init: dict[str, Any]
    subset: dict[str, Any]
    wall_s: dict[str, float]


def learning_rates(recipe: FinetuneRecipe, pretrained: bool) -> tuple[float, float]:
    """(backbone lr, head lr): `lr_scratch` ones when fine-tuning from random weights (SLidR issue #11)."""
    o = recipe.optim
    if recipe.train.mode == "finetune" and not pretrained:
        return o.lr_scratch, o.lr_scratch if o.lr_head_scratch is None else o.lr_head_scratch
    return o.lr, o.lr if o.lr_head is None else o.lr_head


def _initialise(recipe: FinetuneRecipe, model: MinkUNet34C, out_dir: Path, weights: str | Path | None,
                resume: bool, allow_voxel_mismatch: bool) -> dict[str, Any]:
    init_path = out_dir / INIT_JSON
    if resume and init_path.is_file():
        init = read_json(init_path)
        if weights is not None and str(weights) != init["weights"]:
            raise ValueError(
                f"--resume with --weights {weights}, but {out_dir} was started from {init['weights']}"
            )
        return init  # the checkpoint restores the whole network
    if weights is None:
        return {"weights": None, "pretrained": None}
    d = recipe.data
    loaded = load_pretrained_student(model, weights, d.voxel_size, d.cylindrical, allow_voxel_mismatch,
                                     intensity_scale=d.intensity_scale)
    return {"weights": str(weights), "pretrained": loaded.to_dict()}


def resolve_input_scale(recipe: FinetuneRecipe, weights: str | Path | None, out_dir: Path,
                        resume: bool) -> FinetuneRecipe:
    """The recipe with a concrete `data.intensity_scale`: as set, else the pretraining checkpoint's.

    A network must see its inputs at the scale it was pretrained on (its first batch norm's running
    statistics were gathered at that scale), so by default the scale comes from the checkpoint: 1/255
    for the published CMCR recipe, 1 for PPKT/SLidR. Random initialisation, and checkpoints that do not
    record it, use 1 (raw intensity). A resumed run without `weights` reads them from its `init.json`.
    """
    if recipe.data.intensity_scale is not None:
        return recipe
    init_path = out_dir / INIT_JSON
    if weights is None and resume and init_path.is_file():
        weights = read_json(init_path).get("weights")
    scale = None
    if weights is not None:
        scale = read_pretrained_student(weights)[1].get("intensity_scale")
        logger.info("input scaling from %s: intensity x %s", weights, 1.0 if scale is None else scale)
    return replace(recipe, data=replace(recipe.data, intensity_scale=1.0 if scale is None else float(scale)))


def resolve_epochs(recipe: FinetuneRecipe) -> FinetuneRecipe:
    """The recipe with a concrete `train.epochs`: as set, else the protocol's for its label fraction
    (`train.fraction_epochs`: 100 at 1 %, 50 from 5 % on)."""
    if recipe.train.epochs is not None:
        return recipe
    epochs = epochs_for_fraction(recipe.data.label_fraction, recipe.train.fraction_epochs)
    logger.info("train.epochs: %d, the protocol's for label fraction %s", epochs, recipe.data.label_fraction)
    return replace(recipe, train=replace(recipe.train, epochs=epochs))


def _validator(recipe: FinetuneRecipe, run: Any, loader: Any, steps: tuple[int, int], class_names: Any,
               out_dir: Path, resume: bool) -> Validator:
    """The step callback validating every `train.eval_every` epochs (`cmcr_core.runs.validation`)."""
    t, (steps_per_epoch, total) = recipe.train, steps
    split = t.eval_split or recipe.data.val_split
    source = even_subset(open_split(recipe, split)[0], t.eval_max_scans)
    if source[0].labels is None:
        raise ValueError(f"train.eval_every: split {split!r} of {recipe.data.path} has no labels to validate "
                         "with; set train.eval_split to a labelled split")
    recalibrate = None
    if t.recalibrate_bn_batches > 0:
        forward = voxel_forward(run.device)
        recalibrate = lambda net: recalibrate_from_batches(  # noqa: E731
            net, loader.batches, t.recalibrate_bn_batches, lambda batch: forward(net, batch))
    best = out_dir / BEST_CHECKPOINT
    return Validator(lambda trained: trained.model, source, segmentation_settings(recipe), tuple(class_names),
                     split, recipe.data.dataset, recipe.data.eval_batch_size, t.eval_every * steps_per_epoch,
                     steps_per_epoch, total, best, config.to_dict(recipe), run.context, recalibrate,
                     read_best_score(best) if resume else float("-inf"))


def _chain(*callbacks: Any) -> Any:
    """One step callback running `callbacks` in order (None ones left out); the values they return join."""
    chosen = [c for c in callbacks if c is not None]

    def callback(step: int, method: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for one in chosen:
            values.update(one(step, method) or {})
        return values

    return callback


def run_downstream(recipe: FinetuneRecipe, out_dir: str | Path, weights: str | Path | None = None,
                   resume: bool = False, allow_voxel_mismatch: bool = False,
                   export_predictions: str | Path | None = None, stop_at: int | None = None) -> FinetuneRun:
    """Fine-tune or probe (`recipe.train.mode`) on the label subset, then evaluate the whole val split."""
    out_dir = Path(out_dir)
    if recipe.train.mode == "probe" and recipe.train.recalibrate_bn_batches > 0:
        raise ValueError("train.recalibrate_bn_batches re-estimates a fine-tuned network's batch-norm "
                         "statistics; a probe keeps the frozen pretrained ones: set it to 0")
    recipe = resolve_epochs(resolve_input_scale(recipe, weights, out_dir, resume))
    check_run_folder(recipe, out_dir, resume)
    with open_run(out_dir, recipe.train.device, recipe.train.seed) as run:
        seed, t0 = recipe.train.seed, time.perf_counter()
        train_source, class_names = open_split(recipe, recipe.data.train_split)
        val_source, _ = open_split(recipe, recipe.data.val_split)
        subset, subset_info = label_subset(recipe, train_source)
        model = build_segmentation_model(recipe, len(class_names), seed)
        init = _initialise(recipe, model, out_dir, weights, resume, allow_voxel_mismatch)
        probe = recipe.train.mode == "probe"
        method = SegmentationMethod(model, recipe.loss.cross_entropy, recipe.loss.lovasz, probe=probe)
        method.model = distributed.convert_sync_batchnorm(method.model, run.context)
        lr, lr_head = learning_rates(recipe, init["weights"] is not None)
        scans = SegmentationDataset(subset, segmentation_settings(recipe), seed=seed, train=True)
        dataset, collate = tolerate_damage(scans, collate_segmentation, recipe.data.skip_damaged)
        loader = run.loader(dataset, collate, recipe.data.batch_size, recipe.data.num_workers, seed=seed,
                            drop_last=False)
        steps_per_epoch = loader.steps_per_epoch
        o, t = recipe.optim, recipe.train
        overrides = {HEAD_PREFIX: lr_head} if lr_head != lr and not probe else {}
        settings = TrainSettings(
            total_steps=t.max_steps if t.max_steps > 0 else t.epochs * steps_per_epoch,
            optimizer=OptimizerSettings(name=o.name, lr=lr_head if probe else lr, weight_decay=o.weight_decay,
                                        momentum=o.momentum, dampening=o.dampening, lr_overrides=overrides),
            schedule=ScheduleSettings(kind=o.schedule, per_epoch=o.per_epoch),
            steps_per_epoch=steps_per_epoch, checkpoint_every=t.checkpoint_every, log_every=t.log_every,
            keep_checkpoints=t.keep_checkpoints, tensorboard=t.tensorboard)
        init.update(lr=lr, lr_head=lr_head, mode=recipe.train.mode, total_steps=settings.total_steps,
                    steps_per_epoch=steps_per_epoch)
        run.write({**recipe_file(recipe), INIT_JSON: json.dumps(init, indent=1) + "\n"})
        logger.info("%s: %d labelled scans (fraction %s, skip %d), %d steps, lr %s / head %s, init %s",
                    recipe.train.mode, subset_info["scans"], recipe.data.label_fraction, subset_info["skip"],
                    settings.total_steps, lr, lr_head, init["weights"] or "random")
        recalibrate = recalibrate_at_last_step(settings.total_steps, recipe.train.recalibrate_bn_batches,
                                               loader.batches, lambda trained: trained.model,
                                               voxel_forward(run.device))
        validate = None
        if t.eval_every > 0:
            validate = _validator(recipe, run, loader, (steps_per_epoch, settings.total_steps), class_names,
                                  out_dir, resume)
        if run.context.is_main and not resume:  # left by a run that died before its first checkpoint
            for stale in (BEST_CHECKPOINT, LAST_CHECKPOINT):
                (out_dir / stale).unlink(missing_ok=True)
        result = run.train(method, loader, settings, recipe=config.to_dict(recipe), resume=resume,
                           stop_at=stop_at, step_callback=_chain(recalibrate, validate))
        if result.position.step == settings.total_steps and run.context.is_main:
            save_handoff_checkpoint(out_dir / LAST_CHECKPOINT, method=method, position=result.position,
                                    recipe=config.to_dict(recipe))
        t1 = time.perf_counter()
        metrics = evaluate(method.model, val_source, segmentation_settings(recipe), class_names,
                           recipe.data.val_split, recipe.data.dataset, recipe.data.eval_batch_size,
                           export_dir=export_predictions, context=run.context)
        wall = {"train_s": t1 - t0, "eval_s": time.perf_counter() - t1}
        extra = {"seed": seed, "protocol": {**subset_info, **{k: init[k] for k in (
                 "mode", "lr", "lr_head", "total_steps", "steps_per_epoch")}, "epochs": recipe.train.epochs},
                 "weights": init["weights"], "pretrained_method": (init["pretrained"] or {}).get("method"),
                 "steps_done": result.position.step, "wall_time_s": wall}
        if validate is not None:
            extra["best_val_miou"] = None if validate.best == float("-inf") else validate.best
        metrics = replace(metrics, extra={**metrics.extra, **extra})
        if run.context.is_main:
            write_json(out_dir / METRICS_JSON, metrics.to_dict())
        return FinetuneRun(out_dir, metrics, result, init, subset_info, wall)


def _check_mode(recipe: FinetuneRecipe, mode: str) -> None:
    if recipe.train.mode != mode:
        other = "probe" if mode == "finetune" else "finetune"
        raise ValueError(f"recipe {recipe.name!r} is a {recipe.train.mode} recipe (train.mode); use "
                         f"`cmcr {other}` with it, or a {mode} recipe (recipes/{mode}_*.yaml)")


def run_finetune(recipe: FinetuneRecipe, out_dir: str | Path, **kwargs: Any) -> FinetuneRun:
    """Fine-tune every layer (recipe.train.mode must be "finetune"); kwargs as `run_downstream`."""
    _check_mode(recipe, "finetune")
    return run_downstream(recipe, out_dir, **kwargs)


def run_probe(recipe: FinetuneRecipe, out_dir: str | Path, **kwargs: Any) -> FinetuneRun:
    """Linear probing (recipe.train.mode must be "probe"); kwargs as `run_downstream`."""
    _check_mode(recipe, "probe")
    return run_downstream(recipe, out_dir, **kwargs)


def run_seeds(recipe: FinetuneRecipe, out_dir: str | Path, seeds: int,
              export_predictions: str | Path | None = None, **kwargs: Any
              ) -> tuple[list[FinetuneRun], dict[str, Any]]:
    """Seeds recipe.train.seed .. + seeds − 1, one after the other, in `out_dir/seed<S>`; writes the
    mean ± std summary to `out_dir/metrics.json` and returns (runs, summary). With `resume=True`, seeds
    with a checkpoint continue and the others start."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    runner = run_probe if recipe.train.mode == "probe" else run_finetune
    out_dir, runs = Path(out_dir), []
    for i in range(seeds):
        seed = recipe.train.seed + i
        one = replace(recipe, train=replace(recipe.train, seed=seed))
        export = None if export_predictions is None else seed_folder(export_predictions, seed)
        folder = seed_folder(out_dir, seed)
        options = dict(kwargs)
        # --resume over seeds: a seed that never started begins from scratch.
        options["resume"] = bool(kwargs.get("resume")) and (folder / CHECKPOINT).exists()
        runs.append(runner(one, folder, export_predictions=export, **options))
    summary = seg.seed_summary([r.metrics.to_dict() for r in runs])
    summary.update(seeds=[r.metrics.extra["seed"] for r in runs], runs=[str(r.out_dir) for r in runs],
                   protocol=runs[0].metrics.extra["protocol"], weights=runs[0].init["weights"],
                   split=runs[0].metrics.split, num_scans=runs[0].metrics.num_scans,
                   wall_time_s=sum(sum(r.wall_s.values()) for r in runs))
    write_json(out_dir / METRICS_JSON, summary)
    return runs, summary


@dataclass(frozen=True)
class DownstreamResult:
    """What `cmcr finetune` / `cmcr probe` ran: the seed runs, their summary (None for one seed), folders."""

    runs: list[FinetuneRun]
    summary: dict[str, Any] | None
    out_dir: Path
    export: Path | None

    def report(self) -> Report:
        """The per-class table and the mIoU, subset and initialisation lines the command prints."""
        first, summary = self.runs[0].metrics, self.summary
        title = (f"{first.dataset} {first.split}: {first.num_scans} scans, "
                 f"{first.extra['protocol']['mode']}, {len(self.runs)} seed(s)")
        per_class = summary["iou_per_class"] if summary else None
        blocks: list[Table | Line] = [
            Table(title, seg.CLASS_TABLE_COLUMNS, tuple(seg.class_table_rows(first, per_class)))]
        if summary is not None:
            m = summary["miou"]
            per_seed = ", ".join(f"{100 * v:.2f}" for v in summary["per_seed_miou"])
            blocks.append(Line(f"[bold]mIoU {100 * m['mean']:.2f} ± {100 * m['std']:.2f}[/] over seeds "
                               f"{summary['seeds']} (per seed: {per_seed})"))
        else:
            blocks.append(Line(f"[bold]mIoU {100 * first.miou:.2f}[/] over {len(first.present)} present "
                               "classes"))
        if first.absent:
            blocks.append(Line(f"absent classes (not in the mean): {', '.join(first.absent)}"))
        protocol = first.extra["protocol"]
        blocks.append(Line(
            f"labelled scans {protocol['scans']} (fraction {protocol['label_fraction']}, "
            f"skip {protocol['skip']}), "
            f"{protocol['total_steps']} steps, lr {protocol['lr']} / head {protocol['lr_head']}, "
            f"init {first.extra['weights'] or 'random'}; results in {self.out_dir}/metrics.json"
            + (f"; predictions in {self.export}" if self.export else ""), highlight=False))
        return Report(tuple(blocks))


def run_mode(recipe: FinetuneRecipe, mode: str, out_dir: str | Path, seeds: int = 1,
             export_predictions: str | Path | None = None, **kwargs: Any) -> DownstreamResult:
    """`cmcr finetune` (mode "finetune") or `cmcr probe` ("probe"): one run, or `seeds` runs and their
    mean ± std (`run_seeds`); the recipe's train.mode must be `mode`. kwargs as `run_downstream`."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    out_dir = Path(out_dir)
    export = None if export_predictions is None else Path(export_predictions)
    if seeds == 1:
        runner = run_probe if mode == "probe" else run_finetune
        return DownstreamResult([runner(recipe, out_dir, export_predictions=export, **kwargs)], None,
                                out_dir, export)
    if recipe.train.mode != mode:
        raise ValueError(f"recipe {recipe.name!r} is a {recipe.train.mode} recipe (train.mode); "
                         f"use a {mode} recipe (recipes/{mode}_*.yaml)")
    runs, summary = run_seeds(recipe, out_dir, seeds, export_predictions=export, **kwargs)
    return DownstreamResult(runs, summary, out_dir, export)
