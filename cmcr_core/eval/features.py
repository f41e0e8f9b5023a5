"""Paired 3D/2D features of pretrained runs on prepared data, for `cmcr analyze` and `cmcr zeroshot`.

Sampling [paper: 5,000 features per class × 16 (the relational distillation paper); the rest assumed]:

1. **Selection** (depends on the data and the seed only, so every model is measured on the same points):
   the candidates are the labelled points (coarse id 1..16) of the split that at least one camera sees;
   a point seen by several cameras keeps its first pairing. Each candidate gets a uniform random key
   (``np.random.default_rng(seed)``, drawn scan by scan), and each class keeps its ``per_class`` smallest
   keys — a uniform sample without replacement, streamed with O(classes × per_class) memory. A class
   with fewer candidates keeps them all and is reported (``below_quota``, and a warning).
2. **Features**: each checkpoint's pretraining method is rebuilt from its stored recipe
   (``cmcr_core.runs.pretrain.load_pretraining_run``; random teachers are rebuilt under the run's seed,
   exactly as ``cmcr pretrain`` built them) and set to eval mode. The 3D
   feature of a point is the student's L2-normalised output at its voxel (the run's voxelisation, no
   augmentation); its 2D feature is what the method distils into at the paired pixel — the teacher's map
   read bilinearly (relational/similarity/contrastive) or the trained decoder's output (PPKT/SLidR/CMCR). By
   default every camera image is resized whole to the run's crop size first (``teacher_input_size``),
   the scale at which the teacher saw whole images during pretraining; ``None`` keeps the original size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cmcr_core.config import PretrainRecipe
from cmcr_core.data.labels import EVALUATED_CLASS_NAMES
from cmcr_core.data.transforms import crop_pairings, resize_crop_image
from cmcr_core.engine.method import Method
from cmcr_core.sparse import SparseTensor
from cmcr_core.sparse.voxelize import voxelize

__all__ = ["LoadedRun", "PointSelection", "extract_features", "select_points"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class LoadedRun:
    """A pretraining checkpoint rebuilt for evaluation: its method (eval mode) and resolved recipe."""

    path: Path
    name: str
    method: Method
    recipe: PretrainRecipe
    step: int
    teacher: dict[str, Any]


@dataclass(frozen=True)
class PointSelection:
    """Sampled points, sorted by (scan, point).

    scan:      (N,) int64 index of the scan in the split.
    point:     (N,) int64 index of the point in its scan.
    pairing:   (N, 3) int64 [camera, row, col] of the point's pairing (original image pixels).
    label:     (N,) int64 class 0..15 (coarse id − 1).
    available: (16,) int64 candidates per class in the split.
    """

    scan: np.ndarray
    point: np.ndarray
    pairing: np.ndarray
    label: np.ndarray
    available: np.ndarray
    per_class: int
    seed: int
    split: str = ""
    class_names: tuple[str, ...] = EVALUATED_CLASS_NAMES
    below_quota: tuple[str, ...] = field(default=())

    @property
    def counts(self) -> np.ndarray:
        """(16,) sampled points per class."""
        return np.bincount(self.label, minlength=len(self.class_names))

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per-class sampled and available counts, the policy and the seed."""
        counts = self.counts
        return {
            "split": self.split, "seed": self.seed, "per_class": self.per_class,
            "num_features": int(len(self.label)), "num_scans": int(len(np.unique(self.scan))),
            "sampled": {n: int(counts[k]) for k, n in enumerate(self.class_names)},
            "available": {n: int(self.available[k]) for k, n in enumerate(self.class_names)},
            "below_quota": list(self.below_quota),
            "policy": "uniform without replacement per class over camera-seen labelled points; "
                      "classes below quota keep all their points",
        }


def select_points(source: Sequence[Any], per_class: int = 5000, seed: int = 0, split: str = "",
                  num_classes: int = len(EVALUATED_CLASS_NAMES)) -> PointSelection:
    """Choose up to ``per_class`` camera-seen labelled points per class (see the module docstring).

    Args:
        source: prepared scans with ``labels`` (N,) coarse ids and ``pairings`` (P, 4).
        per_class: quota per class.
        seed: seed of the random keys.
        split: name recorded in the result.
        num_classes: classes 1..num_classes of the coarse ids are sampled.

    Returns:
        PointSelection.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    empty = np.zeros((0, 6))
    best = [empty] * num_classes  # per class: rows [key, scan, point, camera, row, col]
    available = np.zeros(num_classes, dtype=np.int64)
    for s in range(len(source)):
        item = source[s]
        labels = item.labels
        if labels is None:
            raise ValueError(f"scan {item.token} (split {split!r}) has no labels: prepared without lidarseg")
        pairings = np.asarray(item.pairings, dtype=np.int64)
        seen, first = np.unique(pairings[:, 0], return_index=True)
        keys = rng.random(len(seen))  # drawn for every seen point, so the stream does not depend on labels
        cls = np.asarray(labels, dtype=np.int64)[seen] - 1
        keep = (cls >= 0) & (cls < num_classes)
        rows = np.column_stack([keys, np.full(len(seen), s), seen, pairings[first, 1:]])[keep]
        cls = cls[keep]
        available += np.bincount(cls, minlength=num_classes)
        for c in np.unique(cls):
            merged = np.concatenate([best[c], rows[cls == c]])
            if len(merged) > per_class:
                merged = merged[np.argpartition(merged[:, 0], per_class - 1)[:per_class]]
            best[c] = merged
    labels_out = np.concatenate([np.full(len(b), c, dtype=np.int64) for c, b in enumerate(best)])
    rows = np.concatenate(best)
    if len(rows) == 0:
        raise ValueError(f"split {split!r}: no labelled point is seen by a camera; nothing to sample")
    order = np.lexsort((rows[:, 2], rows[:, 1]))
    rows, labels_out = rows[order].astype(np.int64), labels_out[order]
    short = tuple(EVALUATED_CLASS_NAMES[c] if num_classes == len(EVALUATED_CLASS_NAMES) else str(c)
                  for c in range(num_classes) if available[c] < per_class)
    if short:
        logger.warning("split %r: %d class(es) have fewer than %d camera-seen points and keep all they have: "
                       "%s", split, len(short), per_class, ", ".join(short))
    return PointSelection(rows[:, 1], rows[:, 2], rows[:, 3:6], labels_out, available, per_class, seed, split,
                          below_quota=short)


@dataclass(frozen=True)
class _ImagesOnly:
    """The part of a pretraining batch that a method's ``teacher_features`` reads."""

    images: Tensor


def _teacher_at(method: Method, images: Tensor, pairing_images: Tensor) -> Tensor:
    """(P, D) features the method distils into, at [image, row, col] of uint8 ``images``."""
    if hasattr(method, "paired_teacher_features"):
        return method.paired_teacher_features(images, pairing_images)
    if hasattr(method, "teacher_features"):
        maps = method.teacher_features(_ImagesOnly(images))
    elif hasattr(method, "teacher") and hasattr(method, "decoder"):
        # CMCR-style methods: the shared 2D features are decoder(teacher(image)) at image resolution.
        maps = method.decoder(method.teacher(images.float() / 255.0), output_size=tuple(images.shape[-2:]))
    else:
        raise ValueError(f"method {type(method).__name__} exposes no teacher_features(batch) nor a "
                         "teacher + decoder: cannot pair its points with 2D features")
    image, row, col = pairing_images.unbind(1)
    return maps[image, :, row, col]


def _camera_images(item: Any) -> np.ndarray:
    images = item.images
    return np.stack(images) if isinstance(images, list) else np.asarray(images)


@torch.no_grad()
def extract_features(
    run: LoadedRun,
    source: Sequence[Any],
    selection: PointSelection,
    teacher_input_size: tuple[int, int] | None | str = "crop",
    device: str | torch.device = "cpu",
    students_only: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Student and teacher features of the selected points.

    Args:
        run: a loaded pretraining run (method in eval mode on ``device``).
        source: the split the selection was drawn from.
        selection: the points.
        teacher_input_size: (H, W) each whole camera image is resized to; "crop" = the run's
            ``data.crop_size``; None = original images.
        device: where to compute.
        students_only: skip the teacher (returns None for it).

    Returns:
        (student (N, D) float32, teacher (N, D) float32 or None), rows in selection order.
    """
    d = run.recipe.data
    size = tuple(d.crop_size) if teacher_input_size == "crop" else teacher_input_size
    method = run.method
    student_rows: list[np.ndarray] = []
    teacher_rows: list[np.ndarray] = []
    starts = np.flatnonzero(np.r_[True, selection.scan[1:] != selection.scan[:-1]])
    bounds = np.r_[starts, len(selection.scan)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        item = source[int(selection.scan[lo])]
        points = torch.from_numpy(np.ascontiguousarray(item.points, dtype=np.float32))
        vox = voxelize(points, d.voxel_size, d.cylindrical)
        feats = points[vox.representative, 3:4] * d.intensity_scale
        coords = torch.cat([torch.zeros(len(vox.coords), 1, dtype=torch.int32), vox.coords.int()], dim=1)
        out = method.student(SparseTensor(feats.to(device), coords.to(device))).features
        rows = torch.from_numpy(selection.point[lo:hi])
        student_rows.append(out[vox.inverse[rows].to(device)].float().cpu().numpy())
        if students_only:
            continue
        images = _camera_images(item)
        pairs = np.column_stack([selection.point[lo:hi], selection.pairing[lo:hi]])
        cameras = np.unique(pairs[:, 1])
        crops, mapped = [], np.empty((len(pairs), 3), dtype=np.int64)
        for i, camera in enumerate(cameras):
            mine = pairs[:, 1] == camera
            height, width = images[camera].shape[:2]
            box, out_size = (0, 0, height, width), size or (height, width)
            crops.append(resize_crop_image(images[camera], box, out_size))
            _, moved = crop_pairings(pairs[mine], box, out_size)
            mapped[mine] = np.column_stack([np.full(int(mine.sum()), i), moved[:, 2:]])
        batch_images = torch.stack(crops).to(device)
        teacher = _teacher_at(method, batch_images, torch.from_numpy(mapped).to(device))
        teacher_rows.append(teacher.float().cpu().numpy())
    student = np.concatenate(student_rows)
    return student, (None if students_only else np.concatenate(teacher_rows))

