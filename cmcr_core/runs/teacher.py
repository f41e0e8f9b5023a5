"""`cmcr teacher train`: the offline semantic teacher, trained on one synthetic world's camera truth.

The run folder holds `recipe.yaml`, `metrics.jsonl` and `checkpoint.pt` (the engine's, resumable), then,
once the last step is done, `teacher.pt` (a `cmcr-teacher` file every pretraining method loads through
`teacher.weights`) and `metrics.json` (held-out and other-world scores). The teacher file's `meta` holds:

* `class_names` (the 16 coarse classes; row k = coarse id k + 1), `prototypes` (16, C) float32: for each
  class the normalised mean of the L2-normalised encoder feature cells of the whole training images (no
  augmentation) whose pixel has that class; a cell's pixel is where `align_corners=True` upsampling (the
  decoders') puts it (`cell_pixels`); `prototype_present` (a class no cell saw has a zero row and False),
  `prototype_cells` (cells per class);
* `classifier` (`weight` (16, C, 1, 1), `bias` (16,)): the trained 1×1 head, so the file alone segments;
* `world`: root, fingerprint (SHA-256 of `truth/index.json`), image size, training and held-out scenes
  and the training scene tokens (a student world that shares none of them never saw its labels);
* `metrics`: `holdout` (the held-out scenes of the same world) and `eval_worlds` (whole other worlds):
  pixel accuracy, mIoU over the classes present in the truth, per-class IoU, and the same two scores for
  nearest-prototype classification; `training`: steps, seconds, seed and the resolved recipe.

Teacher training runs in one process (CPU or one GPU); it is small.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from cmcr_core import config
from cmcr_core.config import TeacherTrainRecipe
from cmcr_core.data.labels import EVALUATED_CLASS_NAMES, NUM_COARSE_CLASSES
from cmcr_core.data.truth_images import (
    TruthFrame,
    TruthImageDataset,
    TruthWorld,
    coarse_pixel_counts,
    collate_truth,
    read_truth_world,
    split_holdout,
)
from cmcr_core.engine.loop import TrainResult
from cmcr_core.engine.runner import open_run, resolve_device
from cmcr_core.eval.segmentation import confusion_counts, pixel_scores
from cmcr_core.methods.semantic_teacher import SemanticTeacherTraining, upsample_to
from cmcr_core.models.semantic_teacher import SEMANTIC_TEACHER_ARCH, CompactSemanticNet
from cmcr_core.models.teacher import TEACHER_FILE_FORMAT, load_teacher, save_teacher
from cmcr_core.ops.files import load_torch_file
from cmcr_core.runs.pretrain import train_settings
from cmcr_core.runs.run_folder import METRICS_JSON, TEACHER_FILE, check_run_folder, recipe_file, write_json

__all__ = [
    "TeacherRun",
    "accumulate_confusion",
    "cell_pixels",
    "cell_targets",
    "class_feature_sums",
    "evaluate_frames",
    "evaluate_teacher_file",
    "inverse_sqrt_class_weights",
    "normalised_prototypes",
    "read_teacher_file",
    "run_teacher_training",
]

logger = logging.getLogger(__name__)

_EVAL_BATCH = 4


@dataclass(frozen=True)
class TeacherRun:
    """What a teacher-training invocation left: ``teacher`` is None when it stopped before the last step."""

    out_dir: Path
    result: TrainResult
    teacher: Path | None
    metrics: dict[str, Any] | None


def accumulate_confusion(confusion: Tensor, logits: Tensor, coarse_targets: Tensor) -> Tensor:
    """Add a batch to a (K, K) int64 confusion matrix [truth, prediction] in place.

    logits: (B, K, H, W); coarse_targets: (B, H, W) coarse ids (0 = ignore, skipped; k + 1 = class k).
    """
    valid = coarse_targets > 0
    truth = coarse_targets[valid] - 1
    predicted = logits.max(dim=1).indices[valid]  # max: several times faster than argmax here
    confusion += confusion_counts(truth, predicted, logits.shape[1]).to(confusion)
    return confusion


def _batches_of(frames: Sequence[TruthFrame]) -> DataLoader:
    dataset = TruthImageDataset(frames, train=False)
    return DataLoader(dataset, batch_size=_EVAL_BATCH, collate_fn=collate_truth)


def cell_pixels(feature_size: tuple[int, int], image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(rows (h,), cols (w,)) int64: the image pixel of each feature cell.

    With ``align_corners=True`` upsampling (the decoders'), cell i of h lands exactly on image coordinate
    i·(H − 1)/(h − 1); the pixel is that coordinate rounded (0 when h = 1).
    """
    def axis(cells: int, pixels: int) -> Tensor:
        if cells == 1:
            return torch.zeros(1, dtype=torch.int64)
        return torch.round(torch.arange(cells, dtype=torch.float64) * (pixels - 1) / (cells - 1)).long()

    return axis(feature_size[0], image_size[0]), axis(feature_size[1], image_size[1])


def cell_targets(coarse_targets: Tensor, feature_size: tuple[int, int]) -> Tensor:
    """(B, H, W) coarse truth → (B, h, w): the truth of the pixel under each feature cell."""
    rows, cols = cell_pixels(feature_size, tuple(coarse_targets.shape[-2:]))
    rows, cols = rows.to(coarse_targets.device), cols.to(coarse_targets.device)
    return coarse_targets[:, rows][:, :, cols]


def _prototype_cosines(features: Tensor, prototypes: Tensor) -> Tensor:
    """(B, C, h, w) features, (K, C) unit prototypes → (B, K, h, w) cosines; absent (zero) rows → −2."""
    cosine = torch.einsum("bchw,kc->bkhw", F.normalize(features, dim=1), prototypes.to(features))
    absent = (prototypes.norm(dim=1) == 0).to(features.device)
    return cosine.masked_fill(absent[None, :, None, None], -2.0)  # below any cosine: never predicted


@torch.no_grad()
def evaluate_frames(
    encoder: nn.Module, classifier: nn.Module, frames: Sequence[TruthFrame], device: torch.device,
    prototypes: Tensor | None = None,
) -> dict[str, Any]:
    """Segmentation scores of encoder + 1×1 classifier on whole frames, at full image resolution.

    prototypes: optional (16, C) unit rows; then ``prototype_pixel_accuracy`` / ``prototype_miou`` score
    nearest-prototype labels (cosines at feature resolution, upsampled like the logits).
    """
    encoder.eval()
    classifier.eval()
    confusion = torch.zeros(NUM_COARSE_CLASSES, NUM_COARSE_CLASSES, dtype=torch.int64)
    proto_confusion = confusion.clone()
    for batch in _batches_of(frames):
        batch = batch.to(device)
        features = encoder(SemanticTeacherTraining.to_unit_range(batch.images))
        # Counted where the logits are: only the (K, K) counts travel, not (B, K, H, W) full-size logits.
        size, targets = tuple(batch.images.shape[-2:]), batch.targets
        accumulate_confusion(confusion, upsample_to(classifier(features), size), targets)
        if prototypes is not None:
            cosines = upsample_to(_prototype_cosines(features, prototypes), size)
            accumulate_confusion(proto_confusion, cosines, targets)
    scores = pixel_scores(confusion, EVALUATED_CLASS_NAMES)
    if prototypes is not None:
        proto = pixel_scores(proto_confusion, EVALUATED_CLASS_NAMES)
        scores["prototype_pixel_accuracy"], scores["prototype_miou"] = proto["pixel_accuracy"], proto["miou"]
    return scores


@torch.no_grad()
def class_feature_sums(
    encoder: nn.Module, frames: Sequence[TruthFrame], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Per class, the sum of the L2-normalised feature cells whose pixel (``cell_pixels``) has that truth.

    Returns (sums (16, C) float64, cell counts (16,) int64). Cells over "ignore" pixels are skipped.
    """
    encoder.eval()
    sums = torch.zeros(NUM_COARSE_CLASSES, int(encoder.out_channels), dtype=torch.float64)
    counts = torch.zeros(NUM_COARSE_CLASSES, dtype=torch.int64)
    for batch in _batches_of(frames):
        batch = batch.to(device)
        features = F.normalize(encoder(SemanticTeacherTraining.to_unit_range(batch.images)), dim=1)
        labels = cell_targets(batch.targets, tuple(features.shape[-2:])).flatten()
        cells = features.permute(0, 2, 3, 1).reshape(labels.numel(), -1)
        onehot = F.one_hot(labels, NUM_COARSE_CLASSES + 1)[:, 1:].to(cells.dtype)
        sums += (onehot.T @ cells).double().cpu()
        counts += onehot.sum(dim=0).long().cpu()
    return sums, counts


def normalised_prototypes(sums: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """(16, C) sums, (16,) counts → ((16, C) float32 unit rows, (16,) bool present); absent rows are 0."""
    norms = sums.norm(dim=1, keepdim=True)
    present = (counts > 0) & (norms[:, 0] > 0)
    prototypes = torch.where(present[:, None], sums / norms.clamp_min(1e-300), torch.zeros_like(sums))
    return prototypes.float(), present


def inverse_sqrt_class_weights(coarse_counts: Sequence[int] | Tensor) -> Tensor:
    """(16,) CE weights from (17,) coarse pixel counts: frequency^-1/2, mean weight per labelled pixel 1.

    A class without pixels gets weight 0 (it never appears as a target, so the value is irrelevant).
    """
    counts = torch.as_tensor(coarse_counts, dtype=torch.float64)[1:]
    frequency = counts / counts.sum().clamp_min(1.0)
    weights = torch.where(frequency > 0, frequency.clamp_min(1e-12).rsqrt(), torch.zeros_like(frequency))
    return (weights / (frequency * weights).sum().clamp_min(1e-12)).float()


def _world_meta(world: TruthWorld, train_scenes: Sequence[str], holdout: Sequence[str]) -> dict[str, Any]:
    tokens = dict(zip(world.scenes, world.scene_tokens, strict=True))
    return {
        "root": str(world.root.resolve()), "fingerprint": world.fingerprint,
        "image_size": list(world.image_size), "train_scenes": list(train_scenes),
        "train_scene_tokens": [tokens[name] for name in train_scenes], "holdout_scenes": list(holdout),
        "train_frames": len(world.frames_of(train_scenes)),
    }


def _finish(method: SemanticTeacherTraining, recipe: TeacherTrainRecipe, world: TruthWorld,
            split: tuple[Sequence[str], Sequence[str]], result: TrainResult, device: torch.device,
            out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Prototypes, held-out and other-world scores, then `teacher.pt` and `metrics.json`."""
    train_scenes, holdout = split
    sums, counts = class_feature_sums(method.encoder, world.frames_of(train_scenes), device)
    prototypes, present = normalised_prototypes(sums, counts)
    metrics: dict[str, Any] = {"holdout": None, "eval_worlds": []}
    if holdout:
        metrics["holdout"] = {"world": str(world.root), "scenes": list(holdout), **evaluate_frames(
            method.encoder, method.classifier, world.frames_of(holdout), device, prototypes)}
    for root in recipe.data.eval_worlds:
        other = read_truth_world(root)
        metrics["eval_worlds"].append({"world": str(other.root), "fingerprint": other.fingerprint,
                                       "same_world": other.fingerprint == world.fingerprint,
                                       **evaluate_frames(method.encoder, method.classifier, other.frames,
                                                         device, prototypes)})
    last = result.records[-1] if result.records else {}
    meta = {
        "kind": "synthetic-semantic-teacher",
        "class_names": list(EVALUATED_CLASS_NAMES),
        "prototypes": prototypes,
        "prototype_present": present.tolist(),
        "prototype_cells": counts.tolist(),
        "classifier": {k: v.detach().cpu() for k, v in method.classifier.state_dict().items()},
        "world": _world_meta(world, train_scenes, holdout),
        "metrics": metrics,
        "training": {"steps": result.position.step, "seconds": last.get("time"), "seed": recipe.train.seed,
                     "recipe": config.to_dict(recipe)},
    }
    encoder = method.encoder
    kwargs = {"widths": list(encoder.widths), "context_dilations": list(encoder.context_dilations)}
    path = save_teacher(out_dir / TEACHER_FILE, encoder, SEMANTIC_TEACHER_ARCH, kwargs, meta)
    summary = {"teacher": str(path), "steps": result.position.step, "train_seconds": last.get("time"),
               "prototypes_present": int(present.sum()), **metrics}
    write_json(out_dir / METRICS_JSON, summary)
    return path, summary


def run_teacher_training(
    recipe: TeacherTrainRecipe, out_dir: str | Path, resume: bool = False, stop_at: int | None = None,
) -> TeacherRun:
    """Train the compact semantic network on `recipe.data.world` into `out_dir`, then write `teacher.pt`."""
    out_dir = Path(out_dir)
    if not recipe.data.world:
        raise ValueError("no world: set data.world in the recipe or pass --world DIR")
    check_run_folder(recipe, out_dir, resume)
    world = read_truth_world(recipe.data.world)
    split = split_holdout(world, recipe.data.holdout_scenes)
    for root in recipe.data.eval_worlds:  # fail before training, not after it
        read_truth_world(root)
    d = recipe.data
    with open_run(out_dir, recipe.train.device, recipe.train.seed, distributed_run=False) as run:
        dataset = TruthImageDataset(world.frames_of(split[0]), d.crop_size, d.flip, seed=recipe.train.seed)
        too_small = (f"the training scenes of {world.root} hold {len(dataset)} images: fewer than one "
                     f"batch of data.batch_size={d.batch_size}")
        loader = run.loader(dataset, collate_truth, d.batch_size, d.num_workers, seed=recipe.train.seed,
                            too_small=too_small)
        weights = None
        if recipe.loss.class_weighting == "inverse_sqrt":
            weights = inverse_sqrt_class_weights(coarse_pixel_counts(dataset.frames))
            named = zip(EVALUATED_CLASS_NAMES, weights.tolist(), strict=True)
            logger.info("class weights: %s", ", ".join(f"{name} {w:.2f}" for name, w in named))
        encoder = CompactSemanticNet(widths=recipe.model.widths,
                                     context_dilations=recipe.model.context_dilations)
        method = SemanticTeacherTraining(encoder, cross_entropy_weight=recipe.loss.cross_entropy,
                                         label_smoothing=recipe.loss.label_smoothing, class_weights=weights)
        settings = train_settings(recipe, loader.steps_per_epoch, run.device)  # type: ignore[arg-type]
        run.write(recipe_file(recipe))
        result = run.train(method, loader, settings, recipe=config.to_dict(recipe), resume=resume,
                           stop_at=stop_at)
        if result.position.step < settings.total_steps:
            return TeacherRun(out_dir, result, None, None)
        path, metrics = _finish(method, recipe, world, split, result, run.device, out_dir)
        return TeacherRun(out_dir, result, path, metrics)


def read_teacher_file(path: str | Path) -> dict[str, Any]:
    """The raw content of a `cmcr-teacher` file (tensors on CPU; no code runs)."""
    path = Path(path)
    payload = load_torch_file(path, "teacher file not found: {path}")
    if not isinstance(payload, dict) or payload.get("format") != TEACHER_FILE_FORMAT:
        raise ValueError(f"{path} is not a {TEACHER_FILE_FORMAT} file (third-party weights carry no meta)")
    return payload


def evaluate_teacher_file(
    path: str | Path, world: str | Path, scenes: Sequence[str] = (), device: str = "auto",
) -> dict[str, Any]:
    """Scores of a trained semantic teacher file (its stored classifier and prototypes) on a world.

    scenes: the scenes to evaluate (default: every scene of the world).
    """
    meta = read_teacher_file(path).get("meta", {})
    if "classifier" not in meta:
        raise ValueError(f"{path} has no trained classifier in its meta (not from `cmcr teacher train`)")
    truth = read_truth_world(world)
    unknown = sorted(set(scenes) - set(truth.scenes))
    if unknown:
        raise ValueError(f"scenes {unknown} are not in {truth.root} (scenes: {', '.join(truth.scenes)})")
    target = torch.device(resolve_device(device))
    teacher = load_teacher(path).to(target)
    weight = meta["classifier"]["weight"]
    classifier = nn.Conv2d(weight.shape[1], weight.shape[0], 1).to(target)
    classifier.load_state_dict(meta["classifier"])
    frames = truth.frames_of(scenes) if scenes else truth.frames
    scores = evaluate_frames(teacher.encoder, classifier, frames, target, meta.get("prototypes"))
    trained_on = meta.get("world", {}).get("fingerprint")
    return {"world": str(truth.root), "same_world": trained_on == truth.fingerprint,
            "scenes": list(scenes) or list(truth.scenes), **scores}
