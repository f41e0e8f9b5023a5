"""Semantic-segmentation metrics (as nuscenes-devkit's LidarSegEval) and prediction export in the nuScenes
lidarseg format.

Conventions, identical to nuscenes-devkit's `ConfusionMatrix` / `LidarSegEval`:

* confusion matrix (K, K), rows = ground truth, columns = prediction, K = 17 (nuScenes) or 20 (KITTI);
  the row and the column of the ignore class 0 are zeroed;
* predictions are in 1..K−1 (class 0 is never predicted: its logit is suppressed before the argmax);
* IoU_c = TP_c / (TP_c + FP_c + FN_c); a class whose union is empty is **absent**: its IoU is NaN, it is
  left out of the mean and listed by name (the reference code's IoU = 1 for such classes, D3 of
  docs/differences.md, is not reproduced);
* mIoU = mean of the IoUs of the present classes 1..K−1.

Test-time augmentation (`tta_views`, `evaluate(views=...)`): every scan is also scored rotated by 90°,
180° and 270° about z, each with and without a flip of the y axis (the 8 symmetries of the square, which
keep a cartesian voxel grid a voxel grid); each view is voxelised on its own, the voxel logits are
carried to the points, and the points' logits are averaged over the views before the argmax.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from cmcr_core.data.segmentation_dataset import (
    SegmentationBatch,
    SegmentationDataset,
    SegmentationSettings,
    Subset,
    collate_segmentation,
)
from cmcr_core.engine import distributed
from cmcr_core.ops.progress import track
from cmcr_core.sparse import SparseTensor

__all__ = [
    "CLASS_TABLE_COLUMNS",
    "ConfusionAccumulator",
    "SegmentationMetrics",
    "class_table_rows",
    "compute_metrics",
    "confusion_counts",
    "confusion_matrix",
    "evaluate",
    "pixel_scores",
    "seed_summary",
    "tta_views",
    "write_lidarseg_prediction",
    "write_lidarseg_submission_meta",
    "write_semantickitti_prediction",
]

IGNORE_INDEX = 0
SUPPRESSED_LOGIT = -1e6  # class 0 is never predicted (as SLidR's and CMCR's evaluation)
CLASS_TABLE_COLUMNS: tuple[str, ...] = ("class", "IoU %", "TP", "FP", "FN", "GT points")


def confusion_counts(truth: Tensor, predicted: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts [truth, prediction] of flat int64 ids in 0..K−1 (one ``bincount``): the one
    accumulation of every confusion matrix (points here, teacher pixels in ``cmcr_core.runs.teacher``)."""
    flat = torch.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def confusion_matrix(gt: Tensor | np.ndarray, pred: Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 confusion matrix of one set of points, ignore row and column zeroed.

    Args:
        gt: (N,) ground-truth ids in 0..K−1 (0 = ignore).
        pred: (N,) predicted ids in 1..K−1.
        num_classes: K (including the ignore class).
    """
    acc = ConfusionAccumulator(num_classes)
    acc.update(gt, pred)
    return acc.matrix


class ConfusionAccumulator:
    """Sum of per-scan confusion matrices (rows GT, columns prediction), accumulated with torch."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (ignore + one class), got {num_classes}")
        self.num_classes = num_classes
        self._matrix = torch.zeros(num_classes * num_classes, dtype=torch.int64)
        self.num_scans = 0

    def update(self, gt: Tensor | np.ndarray, pred: Tensor | np.ndarray, scans: int = 1) -> None:
        """Add points: gt (N,) in 0..K−1, pred (N,) in 1..K−1 (a 0 or out-of-range value is an error)."""
        gt_t = torch.as_tensor(gt).reshape(-1).to(torch.int64)
        pred_t = torch.as_tensor(pred).reshape(-1).to(torch.int64)
        if gt_t.shape != pred_t.shape:
            raise ValueError(f"gt has {gt_t.numel()} points but pred has {pred_t.numel()}")
        k = self.num_classes
        if gt_t.numel():
            # One host sync for the four bounds (the tensors may live on a GPU).
            gt_low, gt_high, pred_low, pred_high = torch.stack(
                [gt_t.min(), gt_t.max(), pred_t.min(), pred_t.max()]).tolist()
            if gt_low < 0 or gt_high >= k:
                raise ValueError(f"ground truth must lie in 0..{k - 1}, got {gt_low}..{gt_high}")
            if pred_low < 1 or pred_high >= k:
                raise ValueError(f"predictions must lie in 1..{k - 1} (class 0 is never predicted), "
                                 f"got {pred_low}..{pred_high}")
            self._matrix += confusion_counts(gt_t, pred_t, k).reshape(-1).cpu()
        self.num_scans += scans

    def merge(self, matrix: np.ndarray | Tensor, scans: int) -> None:
        """Add another accumulator's matrix (e.g. gathered from other ranks)."""
        self._matrix += torch.as_tensor(np.asarray(matrix)).reshape(-1).to(torch.int64)
        self.num_scans += scans

    @property
    def matrix(self) -> np.ndarray:
        """(K, K) int64 with the ignore row and column zeroed."""
        m = self._matrix.reshape(self.num_classes, self.num_classes).numpy().copy()
        m[IGNORE_INDEX, :] = 0
        m[:, IGNORE_INDEX] = 0
        return m


@dataclass(frozen=True)
class SegmentationMetrics:
    """Per-class IoU and mIoU of one evaluation.

    Attributes:
        class_names: K names, index 0 = "ignore".
        confusion: (K, K) int64, rows GT, columns prediction, ignore row/column zero.
        iou: (K,) float64, NaN for the ignore class and for absent classes.
        miou: mean IoU over the present classes (NaN if none is present).
        present: ids (1..K−1) of the classes with a non-empty union.
        absent: names of the classes 1..K−1 with an empty union.
        freq_weighted_iou: Σ_c n_c·IoU_c / Σ_c n_c over present classes, n_c = GT points (devkit rule).
        num_scans, split, dataset: what was evaluated.
    """

    class_names: tuple[str, ...]
    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    present: tuple[int, ...]
    absent: tuple[str, ...]
    freq_weighted_iou: float
    num_scans: int
    split: str
    dataset: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def class_rows(self) -> list[dict[str, Any]]:
        """One row per evaluated class 1..K−1: name, iou (None if absent), tp, fp, fn, gt/pred points."""
        cm = self.confusion
        rows = []
        for c in range(1, len(self.class_names)):
            tp = int(cm[c, c])
            gt, pred = int(cm[c].sum()), int(cm[:, c].sum())
            iou = float(self.iou[c])
            rows.append({"class": self.class_names[c], "iou": None if math.isnan(iou) else iou, "tp": tp,
                         "fp": pred - tp, "fn": gt - tp, "gt_points": gt, "pred_points": pred})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: `miou`, `iou_per_class` (absent classes as null), `confusion_matrix`, ..."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "num_scans": self.num_scans,
            "miou": _json_float(self.miou),
            "iou_per_class": {
                self.class_names[c]: _json_float(float(self.iou[c])) for c in range(1, len(self.class_names))
            },
            "present_classes": [self.class_names[c] for c in self.present],
            "absent_classes": list(self.absent),
            "freq_weighted_iou": _json_float(self.freq_weighted_iou),
            "class_names": list(self.class_names),
            "confusion_matrix": self.confusion.tolist(),
            **self.extra,
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def compute_metrics(
    confusion: np.ndarray, class_names: Sequence[str], num_scans: int, split: str, dataset: str = ""
) -> SegmentationMetrics:
    """IoU per class, mIoU over present classes and the frequency-weighted IoU from a confusion matrix."""
    cm = np.asarray(confusion, dtype=np.int64).copy()
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {cm.shape} for {k} class names")
    cm[IGNORE_INDEX, :] = 0
    cm[:, IGNORE_INDEX] = 0
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(1) + cm.sum(0) - np.diag(cm)
    iou = np.full(k, np.nan)
    has = union > 0
    iou[has] = tp[has] / union[has]
    present = tuple(int(c) for c in range(1, k) if has[c])
    absent = tuple(class_names[c] for c in range(1, k) if not has[c])
    miou = float(np.mean(iou[list(present)])) if present else float("nan")
    gt_points = cm.sum(1).astype(np.float64)
    total = gt_points[list(present)].sum() if present else 0.0
    fw = float((gt_points[list(present)] * iou[list(present)]).sum() / total) if total > 0 else float("nan")
    return SegmentationMetrics(
        tuple(class_names), cm, iou, miou, present, absent, fw, num_scans, split, dataset
    )


def pixel_scores(confusion: Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Pixel accuracy, mIoU over the classes present in the truth, and per-class IoU (None if absent).

    For (K, K) confusions without an ignore class (the 2D teacher's pixels). Unlike ``compute_metrics``
    (devkit rule: a class is present when its union is non-empty), a class is present when it has truth.
    """
    confusion = confusion.double()
    hits, truth, predicted = confusion.diagonal(), confusion.sum(dim=1), confusion.sum(dim=0)
    present = truth > 0
    iou = hits / (truth + predicted - hits).clamp_min(1.0)
    total = float(confusion.sum())
    return {
        "pixel_accuracy": float(hits.sum()) / total if total else float("nan"),
        "miou": float(iou[present].mean()) if bool(present.any()) else float("nan"),
        "pixels": int(total),
        "iou": {name: (float(iou[k]) if bool(present[k]) else None) for k, name in enumerate(class_names)},
    }


def class_table_rows(metrics: SegmentationMetrics, per_class: Mapping[str, Mapping[str, Any]] | None = None
                     ) -> list[tuple[str, ...]]:
    """Rows of ``CLASS_TABLE_COLUMNS`` per evaluated class: IoU % (``per_class`` mean ± std over seeds when
    given, from ``seed_summary``), TP, FP, FN and ground-truth points of ``metrics``."""
    rows = []
    for row in metrics.class_rows():
        if per_class is not None:
            stats = per_class[row["class"]]
            iou = "absent"
            if stats["mean"] is not None:
                iou = f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"
        else:
            iou = "absent" if row["iou"] is None else f"{100 * row['iou']:.2f}"
        rows.append((row["class"], iou, *(str(row[key]) for key in ("tp", "fp", "fn", "gt_points"))))
    return rows


def seed_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of `metrics.json` dicts (std with ddof = 1; 0 for a single run).

    A class's statistics use the seeds where it is present (its IoU is not null); `n` says how many.
    """
    if not runs:
        raise ValueError("seed_summary needs at least one run")

    def stats(values: list[float]) -> dict[str, float | int | None]:
        if not values:
            return {"mean": None, "std": None, "n": 0}
        arr = np.asarray(values, dtype=np.float64)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        return {"mean": float(arr.mean()), "std": std, "n": len(arr)}

    names = list(runs[0]["iou_per_class"])
    return {
        "num_seeds": len(runs),
        "miou": stats([r["miou"] for r in runs if r["miou"] is not None]),
        "iou_per_class": {n: stats([r["iou_per_class"][n] for r in runs if r["iou_per_class"][n] is not None])
                          for n in names},
        "per_seed_miou": [r["miou"] for r in runs],
    }


def write_lidarseg_prediction(results_dir: str | Path, eval_set: str, lidar_token: str,
                              prediction: np.ndarray | Tensor) -> Path:
    """Write one scan's predictions as `<results>/lidarseg/<eval_set>/<lidar_token>_lidarseg.bin`.

    Args:
        prediction: (N,) class ids 1..16 in the order of the points of the scan's `.pcd.bin`.
    Returns:
        the path written (uint8, as nuscenes-devkit's `load_bin_file` reads it).
    """
    values = torch.as_tensor(prediction).reshape(-1).cpu().numpy()
    if values.size and (values.min() < 1 or values.max() > 255):
        raise ValueError(f"{lidar_token}: predictions must lie in 1..255, got {values.min()}..{values.max()}")
    path = Path(results_dir) / "lidarseg" / eval_set / f"{lidar_token}_lidarseg.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(values.astype(np.uint8).tobytes())
    return path


def write_lidarseg_submission_meta(results_dir: str | Path, eval_set: str) -> Path:
    """`<results>/<eval_set>/submission.json` of the lidarseg results format (LiDAR only)."""
    path = Path(results_dir) / eval_set / "submission.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
            "use_external": False}
    path.write_text(json.dumps({"meta": meta}, indent=1) + "\n", encoding="utf-8")
    return path


def write_semantickitti_prediction(results_dir: str | Path, token: str, prediction: np.ndarray | Tensor,
                                   inverse_map: Sequence[int]) -> Path:
    """Write one scan's predictions to `<results>/sequences/<NN>/predictions/<scan>.label`.

    Args:
        token: "<NN>/<scan>".
        prediction: (N,) train ids 1..K−1.
        inverse_map: train id -> raw label id written to the file (uint32).
    """
    sequence, _, scan = token.partition("/")
    if not scan:
        raise ValueError(f"SemanticKITTI token {token!r} is not of the form <sequence>/<scan>")
    values = torch.as_tensor(prediction).reshape(-1).cpu().numpy().astype(np.int64)
    lut = np.asarray(inverse_map, dtype=np.uint32)
    if values.size and (values.min() < 1 or values.max() >= len(lut)):
        raise ValueError(f"{token}: predictions must lie in 1..{len(lut) - 1}")
    path = Path(results_dir) / "sequences" / sequence / "predictions" / f"{scan}.label"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lut[values].tobytes())
    return path


def tta_views() -> list[np.ndarray]:
    """The 8 test-time views as (3, 3) matrices applied as ``xyz @ M.T``: rotations about z by 0°, 90°,
    180°, 270° (exact integer matrices), each without and with a flip of y. The first is the identity."""
    flip = np.diag([1.0, -1.0, 1.0])
    views = []
    for quarter in range(4):
        c, s = ((1, 0), (0, 1), (-1, 0), (0, -1))[quarter]
        rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)
        views += [rotation, rotation @ flip]
    return views


class _ViewSamples(torch.utils.data.Dataset):
    """Each scan of `source` voxelised once per view: a tuple of `SegmentationSample`s."""

    def __init__(self, source: Sequence[Any], settings: SegmentationSettings,
                 views: Sequence[np.ndarray | None]) -> None:
        self.views = [SegmentationDataset(source, settings, train=False, require_labels=False, view=view)
                      for view in views]

    def __len__(self) -> int:
        return len(self.views[0])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return tuple(view[index] for view in self.views)


def _collate_views(items: Sequence[tuple[Any, ...]]) -> tuple[SegmentationBatch, ...]:
    return tuple(collate_segmentation([item[v] for item in items]) for v in range(len(items[0])))


@torch.no_grad()
def evaluate(model: nn.Module, source: Sequence[Any], settings: SegmentationSettings,
             class_names: Sequence[str], split: str, dataset: str = "nuscenes", batch_size: int = 4,
             device: str | torch.device = "cpu", export_dir: str | Path | None = None, num_workers: int = 0,
             context: distributed.DistContext | None = None, views: Sequence[np.ndarray] = (),
             label: str = "evaluate") -> SegmentationMetrics:
    """Score every point of every scan of `source`: voxel logits -> points through the inverse map; the
    evaluator of fine-tuning, probing, validation, `cmcr evaluate` and zero-shot segmentation (class 0 is
    never predicted).

    Under torchrun each rank scores scans rank, rank + W, ... and the confusion matrices are summed.
    `export_dir`: also write predictions (nuScenes lidarseg `.bin` files, or SemanticKITTI `.label`).
    `views`: (3, 3) matrices of test-time augmentation (`tta_views`); the points' logits are averaged over
    them. Scans without labels are predicted (and exported) but add nothing to the scores; the result's
    `extra["labelled_scans"]` counts the others. `label` names the progress bar.
    """
    ctx = context or distributed.single_process_context(device)
    model.eval().to(ctx.device)
    mine = Subset(source, range(ctx.rank, len(source), ctx.world_size))
    data = _ViewSamples(mine, settings, list(views) or [None])
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate_views)
    acc = ConfusionAccumulator(len(class_names))
    labelled = 0
    for batches in track(loader, len(loader), f"{label} {split}", "batches", enabled=ctx.is_main):
        point_logits = None
        for batch in batches:
            batch = batch.to(ctx.device)
            logits = model(SparseTensor(batch.feats, batch.coords)).features[batch.point_to_voxel]
            point_logits = logits if point_logits is None else point_logits + logits
        point_logits = point_logits / len(batches)
        point_logits[:, 0] = SUPPRESSED_LOGIT
        points_pred = point_logits.argmax(1)
        first = batches[0]
        acc.update(first.point_labels.to(ctx.device), points_pred, scans=first.batch_size)
        labelled += sum(first.labelled)
        if export_dir is not None:
            _export(Path(export_dir), dataset, split, first, points_pred.cpu())
    confusion, scans = torch.as_tensor(acc.matrix), acc.num_scans
    if ctx.is_distributed:
        packed = torch.cat([confusion.reshape(-1), torch.tensor([scans, labelled])]).to(ctx.device)
        torch.distributed.all_reduce(packed)
        confusion = packed[:-2].cpu().reshape(confusion.shape)
        scans, labelled = int(packed[-2]), int(packed[-1])
    metrics = compute_metrics(confusion.numpy(), class_names, scans, split, dataset)
    return replace(metrics, extra={"labelled_scans": labelled, "tta_views": len(views) or 1})


def _export(out: Path, dataset: str, split: str, batch: SegmentationBatch, pred: Tensor) -> None:
    offsets = batch.point_offsets.tolist()
    for b, token in enumerate(batch.lidar_tokens):
        values = pred[offsets[b]:offsets[b + 1]]
        if dataset == "semantickitti":
            from cmcr_core.data.semantickitti import LEARNING_MAP_INV

            write_semantickitti_prediction(out, token, values, LEARNING_MAP_INV)
        else:
            write_lidarseg_prediction(out, split, token, values)
    if dataset != "semantickitti":
        write_lidarseg_submission_meta(out, split)
