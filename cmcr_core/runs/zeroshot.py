"""`cmcr zeroshot`: annotation-free segmentation of every validation point (docs/analysis.md).

Each point's feature is the pretrained student's L2-normalised output at its voxel (the run's
voxelisation, no augmentation); its logits are the cosines with the class embeddings
(``cmcr_core.eval.zeroshot``: templates normalised, averaged and renormalised per class); the prediction
is the argmax. Scoring uses the fine-tuning evaluator itself (``cmcr_core.eval.segmentation.evaluate``):
all points of every scan of the split, including points no camera sees,
16 classes, ignore label 0, mIoU over the present classes.

Class embeddings, one of:

* ``text_embeddings``: a file with one row per class in the 16-class order (``.npy``; ``.npz`` with an
  ``embeddings`` array; ``.pt`` tensor), (16, D) or (16, P, D) per template; an all-zero row marks a
  class that is never predicted;
* ``clip``: a local CLIP directory — the text tower encodes ``templates`` × ``class_names``
  (CLIP2Scene's 85 templates and class strings by default);
* ``prototypes="teacher"``: the per-class prototype features stored in the teacher file's meta (the
  offline semantic teacher, ``cmcr teacher train``) — the offline stand-in for text embeddings;
* ``prototypes="data"``: normalised class means of the teacher's paired pixel features over labelled
  points of ``prototype_split`` (an oracle classifier that uses labels; for teachers without prototypes).

With none given, the teacher file's prototypes are used when it has them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from cmcr_core import config
from cmcr_core.config import PretrainRecipe
from cmcr_core.data.labels import COARSE_CLASS_NAMES
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.data.segmentation_dataset import SegmentationSettings
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.eval import zeroshot as zs
from cmcr_core.eval.features import extract_features, select_points
from cmcr_core.eval.segmentation import CLASS_TABLE_COLUMNS, SegmentationMetrics, class_table_rows, evaluate
from cmcr_core.methods.registry import build_student
from cmcr_core.ops.files import load_torch_file
from cmcr_core.runs.pretrain import load_pretraining_run
from cmcr_core.runs.report import Line, Report, Table
from cmcr_core.runs.run_folder import CLASS_EMBEDDINGS, METRICS_JSON, write_json
from cmcr_core.sparse import SparseTensor

__all__ = [
    "CLASS_NAME_SETS",
    "TEMPLATE_SETS",
    "ClassEmbeddings",
    "ClassSource",
    "CosineClassifierHead",
    "ZeroShotRun",
    "clip_class_embeddings",
    "data_prototypes",
    "load_text_embeddings",
    "run_zeroshot",
    "teacher_file_prototypes",
]

logger = logging.getLogger(__name__)

NUM_CLASSES = len(COARSE_CLASS_NAMES) - 1
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "clip2scene": zs.CLIP2SCENE_TEMPLATES, "openscene": zs.OPENSCENE_TEMPLATES,
    "imagenet": zs.CLIP_IMAGENET_TEMPLATES,
}
CLASS_NAME_SETS: dict[str, tuple[str, ...]] = {
    "clip2scene": zs.CLIP2SCENE_CLASS_NAMES, "openscene": zs.OPENSCENE_CLASS_NAMES,
    "nuscenes": zs.NUSCENES_CLASSES,
}


@dataclass(frozen=True)
class ClassEmbeddings:
    """Class embeddings (16, D) or (16, P, D), which classes may be predicted, and where they came from."""

    embeddings: Tensor
    valid: Tensor  # (16,) bool
    source: dict[str, Any]


def _checked(embeddings: Tensor, valid: Tensor | None, source: dict[str, Any], where: str) -> ClassEmbeddings:
    embeddings = torch.as_tensor(embeddings).float()
    if embeddings.dim() not in (2, 3) or embeddings.shape[0] != NUM_CLASSES:
        raise ValueError(f"{where}: class embeddings must be ({NUM_CLASSES}, D) or ({NUM_CLASSES}, P, D) in "
                         f"the order {list(zs.NUSCENES_CLASSES)}; got shape {tuple(embeddings.shape)}")
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(f"{where}: class embeddings hold NaN or inf")
    nonzero = embeddings.flatten(1).norm(dim=1) > 0
    valid = nonzero if valid is None else torch.as_tensor(valid, dtype=torch.bool) & nonzero
    if not bool(valid.any()):
        raise ValueError(f"{where}: no class has a usable (non-zero) embedding")
    if not bool(valid.all()):
        missing = [zs.NUSCENES_CLASSES[c] for c in torch.nonzero(~valid).squeeze(1).tolist()]
        logger.warning("%s: no embedding for %s: never predicted", where, ", ".join(missing))
    return ClassEmbeddings(embeddings, valid, {**source, "never_predicted": [
        zs.NUSCENES_CLASSES[c] for c in torch.nonzero(~valid).squeeze(1).tolist()]})


def load_text_embeddings(path: str | Path) -> ClassEmbeddings:
    """Precomputed class embeddings from ``.npy`` / ``.npz`` (array ``embeddings``) / ``.pt`` (a tensor)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--text-embeddings: file not found: {path}")
    if path.suffix == ".npy":
        array = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "embeddings" not in archive.files:
                raise ValueError(f"--text-embeddings {path}: no 'embeddings' array (has {archive.files})")
            array = torch.from_numpy(archive["embeddings"])
    elif path.suffix == ".pt":
        array = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(array, Tensor):
            raise ValueError(f"--text-embeddings {path}: expected a tensor, got {type(array).__name__}")
    else:
        raise ValueError(f"--text-embeddings {path}: unsupported suffix {path.suffix!r} (.npy, .npz or .pt)")
    return _checked(array, None, {"kind": "text_embeddings", "path": str(path)}, f"--text-embeddings {path}")


def clip_class_embeddings(
    clip_dir: str | Path, templates: str = "clip2scene", class_names: str = "clip2scene",
    device: str | torch.device = "cpu",
) -> ClassEmbeddings:
    """(16, P, D) CLIP text embeddings of ``TEMPLATE_SETS[templates]`` × ``CLASS_NAME_SETS[class_names]``."""

    if templates not in TEMPLATE_SETS or class_names not in CLASS_NAME_SETS:
        raise ValueError(f"templates must be one of {sorted(TEMPLATE_SETS)} and class names one of "
                         f"{sorted(CLASS_NAME_SETS)}; got {templates!r}, {class_names!r}")
    names, prompts = CLASS_NAME_SETS[class_names], TEMPLATE_SETS[templates]
    text = zs.clip_text_embeddings(clip_dir, names, prompts, device=device)
    source = {"kind": "clip_text", "path": str(clip_dir), "templates": templates,
              "num_templates": len(TEMPLATE_SETS[templates]), "class_names": class_names}
    return _checked(text, None, source, f"CLIP text encoder {clip_dir}")


def teacher_file_prototypes(path: str | Path) -> ClassEmbeddings:
    """Class prototypes from a ``cmcr-teacher`` file's meta (``prototypes``, ``prototype_present``)."""
    path = Path(path)
    payload = load_torch_file(path, "teacher file not found: {path} (pass --teacher-file)")
    meta = payload.get("meta", {}) if isinstance(payload, dict) else {}
    if "prototypes" not in meta:
        raise ValueError(f"{path} holds no class prototypes in its meta (only `cmcr teacher train` files "
                         "do): pass --text-embeddings, --clip or --prototypes data")
    present = torch.as_tensor(meta.get("prototype_present", [True] * NUM_CLASSES), dtype=torch.bool)
    return _checked(meta["prototypes"], present, {"kind": "teacher_prototypes", "path": str(path)},
                    f"prototypes of {path}")


def data_prototypes(weights: str | Path, data: str | Path, split: str = "train", per_class: int = 5000,
                    seed: int = 0, device: str | torch.device = "cpu") -> ClassEmbeddings:
    """Normalised class means of the run's teacher features at up to ``per_class`` points per class."""
    source = PreparedDataset(data, split)
    selection = select_points(source, per_class, seed, split)
    run = load_pretraining_run(weights, device=device)
    _, teacher = extract_features(run, source, selection, "crop", device)
    protos = zs.class_prototypes(teacher, selection.label, NUM_CLASSES)
    return _checked(protos.embeddings, protos.present, {
        "kind": "data_prototypes", "data": str(data), "split": split, "per_class": per_class, "seed": seed,
        "points": selection.summary()["sampled"]}, f"class means of the teacher on split {split!r}")


class _Logits(NamedTuple):
    features: Tensor


class CosineClassifierHead(nn.Module):
    """Student + cosine classifier: (V, 1 + C) logits, column 0 (ignore) and invalid classes at −inf.

    Args:
        student: network giving (V, D) features.
        embeddings: (C, D) or (C, P, D) class embeddings (ensembled here by ``text_classifier``).
        valid: (C,) bool; False columns are never predicted.
    """

    def __init__(self, student: nn.Module, embeddings: Tensor, valid: Tensor) -> None:
        super().__init__()
        self.student = student
        self.register_buffer("classifier", zs.text_classifier(embeddings))
        self.register_buffer("valid", torch.as_tensor(valid, dtype=torch.bool))

    def forward(self, x: SparseTensor) -> _Logits:
        """Sparse input → logits whose ``features`` are (V, 1 + C)."""
        cosine = zs.zero_shot_logits(self.student(x).features, self.classifier, self.valid)
        return _Logits(torch.cat([torch.full_like(cosine[:, :1], -float("inf")), cosine], dim=1))


@dataclass(frozen=True)
class ZeroShotRun:
    """Folder, metrics and class embeddings of one zero-shot evaluation."""

    out_dir: Path
    metrics: SegmentationMetrics
    classes: ClassEmbeddings

    def report(self) -> Report:
        """The per-class table, the mIoU and what the classifier could not predict."""
        m, source = self.metrics, self.classes.source
        blocks: list[Table | Line] = [
            Table(f"zero-shot, {m.split}: {m.num_scans} scans, classifier {source['kind']}",
                  CLASS_TABLE_COLUMNS, tuple(class_table_rows(m))),
            Line(f"[bold]mIoU {100 * m.miou:.2f}[/] over {len(m.present)} present classes")]
        if m.absent:
            blocks.append(Line(f"absent classes (not in the mean): {', '.join(m.absent)}"))
        if source.get("never_predicted"):
            blocks.append(Line(f"never predicted (no embedding): {', '.join(source['never_predicted'])}"))
        blocks.append(Line(f"results in {self.out_dir}/metrics.json, classifier in "
                           f"{self.out_dir}/class_embeddings.npy", highlight=False))
        return Report(tuple(blocks))


@dataclass(frozen=True)
class ClassSource:
    """Where the class embeddings come from (the module docstring): at most one of ``text_embeddings``,
    ``clip`` and ``prototypes`` ("teacher" | "data"); none = the teacher file's prototypes.

    ``templates`` / ``class_names``: the prompt sets of ``clip``; ``teacher_file``: the file holding the
    prototypes (default: the run's teacher); ``prototype_split``, ``per_class``, ``seed``: the points of
    ``prototypes="data"``.
    """

    text_embeddings: str | Path | None = None
    clip: str | Path | None = None
    templates: str = "clip2scene"
    class_names: str = "clip2scene"
    prototypes: str | None = None
    teacher_file: str | Path | None = None
    prototype_split: str = "train"
    per_class: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        given = (self.text_embeddings is not None) + (self.clip is not None) + (self.prototypes is not None)
        if given > 1:
            raise ValueError("choose one of --text-embeddings, --clip and --prototypes")


def _resolve_classes(weights: Path, ckpt: dict[str, Any], data: str | Path, source: ClassSource,
                     device: str | torch.device) -> ClassEmbeddings:
    if source.text_embeddings:
        return load_text_embeddings(source.text_embeddings)
    if source.clip:
        return clip_class_embeddings(source.clip, source.templates, source.class_names, device)
    mode = source.prototypes
    if mode == "data":
        return data_prototypes(weights, data, source.prototype_split, source.per_class, source.seed, device)
    teacher_file = source.teacher_file or (ckpt.get("teacher") or {}).get("source")
    if mode not in (None, "teacher"):
        raise ValueError(f"--prototypes must be 'teacher' or 'data', got {mode!r}")
    if not teacher_file:
        raise ValueError(f"{weights}: its teacher has no file (random weights), so no prototypes: pass "
                         "--text-embeddings FILE, --clip DIR or --prototypes data")
    return teacher_file_prototypes(teacher_file)


def run_zeroshot(weights: str | Path, data: str | Path, out_dir: str | Path, split: str = "val",
                 batch_size: int = 4, device: str | torch.device = "cpu",
                 classes: ClassSource | None = None) -> ZeroShotRun:
    """Zero-shot segmentation of ``split`` with a pretrained student; writes metrics.json and the classifier.

    Args:
        weights: ``cmcr-train`` checkpoint.
        data: prepared folder.
        out_dir: output folder (``metrics.json``, ``class_embeddings.npy`` (16, D) ensembled classifier).
        split: evaluated split (whole).
        batch_size: scans per forward pass.
        device: where to run.
        classes: where the class embeddings come from (default ``ClassSource()``: the teacher file's
            prototypes).

    Returns:
        ZeroShotRun.
    """
    t0, weights, out = time.perf_counter(), Path(weights), Path(out_dir)
    ckpt = load_checkpoint(weights)
    recipe = config.build(PretrainRecipe, ckpt.get("recipe") or {}, source=str(weights))
    if not isinstance(ckpt.get("student"), dict):
        raise ValueError(f"{weights}: no 'student' hand-off entry (written by a method without a student)")
    classes = _resolve_classes(weights, ckpt, data, classes or ClassSource(), device)
    dim = classes.embeddings.shape[-1]
    if dim != recipe.student.out_channels:
        raise ValueError(f"class embeddings have D = {dim} but the student of {weights} outputs "
                         f"{recipe.student.out_channels}-d features ({recipe.method}): zero-shot needs a "
                         "student distilled into the embeddings' space (e.g. method relational, no decoder)")
    student = build_student(recipe.student)
    student.load_state_dict(ckpt["student"])
    head = CosineClassifierHead(student, classes.embeddings, classes.valid)
    t1 = time.perf_counter()
    d = recipe.data
    settings = SegmentationSettings(voxel_size=d.voxel_size, cylindrical=d.cylindrical,
                                    intensity_scale=d.intensity_scale, cloud_transforms=())
    metrics = evaluate(head, PreparedDataset(data, split), settings, COARSE_CLASS_NAMES, split, "nuscenes",
                       batch_size, device=device)
    wall = {"setup_s": t1 - t0, "eval_s": time.perf_counter() - t1}
    extra = {"protocol": "zeroshot", "weights": str(weights), "pretrained_method": recipe.method,
             "step": ckpt.get("step"), "classifier": classes.source, "wall_time_s": wall}
    metrics = replace(metrics, extra=extra)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / CLASS_EMBEDDINGS, head.classifier.cpu().numpy())
    write_json(out / METRICS_JSON, metrics.to_dict())
    return ZeroShotRun(out, metrics, classes)
