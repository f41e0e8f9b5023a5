"""`cmcr render`: a picture of one prepared scan, of a fine-tuned network's prediction on it, or of a
pretrained feature space on it (`cmcr_core.eval.scan_pictures` draws).

* no `--weights`: the bird's-eye view coloured by the labels, and (nuScenes) the points on each camera;
* a fine-tuned run or checkpoint (`cmcr evaluate`'s rule for folders): truth | prediction | error side by
  side, the cameras coloured by the prediction, and the share of labelled points predicted right;
* a pretraining checkpoint: truth | the first three principal components of the student's point
  features as RGB, the cameras coloured by the features.

The prediction is the evaluator's: class 0 is never predicted, logits are carried from voxels to points.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcr_core import config
from cmcr_core.config import FinetuneRecipe
from cmcr_core.data.segmentation_dataset import SegmentationDataset, collate_segmentation
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.engine.method import load_trainable_state_dict
from cmcr_core.eval.scan_pictures import (
    BevPanel,
    CameraPanel,
    class_colours,
    error_colours,
    feature_colours,
    write_scan_picture,
)
from cmcr_core.eval.segmentation import SUPPRESSED_LOGIT
from cmcr_core.methods.registry import build_segmentation_model
from cmcr_core.methods.segmentation import SegmentationMethod
from cmcr_core.runs.evaluate import find_weights
from cmcr_core.runs.finetune import open_split, segmentation_settings
from cmcr_core.sparse import SparseTensor
from cmcr_core.sparse.voxelize import voxelize

__all__ = ["RenderResult", "render_scan"]


@dataclass(frozen=True)
class RenderResult:
    """What `cmcr render` drew: the picture, the scan, and (with a fine-tuned network) its prediction."""

    path: Path
    token: str
    split: str
    what: str  # "labels", "prediction" or "features"
    predicted: np.ndarray | None = None  # (N,) class ids of the scan's points
    accuracy: float | None = None  # share of the labelled points predicted right

    def report(self) -> Any:
        from cmcr_core.runs.report import Line, Report

        score = "" if self.accuracy is None else f"; {100 * self.accuracy:.1f} % of labelled points right"
        return Report((Line(f"wrote {self.path}: {self.what} of scan {self.token} ({self.split}){score}",
                            highlight=False),))


def _pick(source: Any, sample: str) -> int:
    tokens = list(source.tokens)
    if sample in tokens:
        return tokens.index(sample)
    if sample.lstrip("-").isdigit() and -len(tokens) <= int(sample) < len(tokens):
        return int(sample) % len(tokens)
    raise ValueError(f"--sample {sample!r}: neither a token nor an index of the {len(tokens)} scans of the "
                     "split")


def _dataset_recipe(data: str | Path, kind: str) -> FinetuneRecipe:
    """A segmentation recipe that only says where the scans are (no network is built from it)."""
    base = FinetuneRecipe()
    return replace(base, data=replace(base.data, path=str(data), dataset=kind, intensity_scale=1.0))


def _predict(recipe: FinetuneRecipe, payload: dict[str, Any], path: Path, item: Any, num_classes: int,
             device: str) -> np.ndarray:
    model = build_segmentation_model(recipe, num_classes, recipe.train.seed)
    method = SegmentationMethod(model, recipe.loss.cross_entropy, recipe.loss.lovasz,
                                probe=recipe.train.mode == "probe")
    load_trainable_state_dict(method, payload["model"], source=str(path))
    model.eval().to(device)
    batch = collate_segmentation([SegmentationDataset([item], segmentation_settings(recipe), train=False,
                                                      require_labels=False)[0]]).to(device)
    with torch.no_grad():
        logits = model(SparseTensor(batch.feats, batch.coords)).features[batch.point_to_voxel]
    logits[:, 0] = SUPPRESSED_LOGIT
    return logits.argmax(1).cpu().numpy()


def _features(path: Path, item: Any, device: str) -> np.ndarray:
    from cmcr_core.runs.pretrain import load_pretraining_run

    run = load_pretraining_run(path, device=device)
    d = run.recipe.data
    points = torch.from_numpy(np.ascontiguousarray(item.points, dtype=np.float32))
    vox = voxelize(points, d.voxel_size, d.cylindrical)
    feats = points[vox.representative, 3:4] * d.intensity_scale
    coords = torch.cat([torch.zeros(len(vox.coords), 1, dtype=torch.int32), vox.coords.int()], dim=1)
    with torch.no_grad():
        out = run.method.student(SparseTensor(feats.to(device), coords.to(device))).features
    return out[vox.inverse.to(device)].float().cpu().numpy()


def _cameras(item: Any, colours: np.ndarray) -> list[CameraPanel]:
    if not hasattr(item, "pairings"):
        return []  # SemanticKITTI: no cameras
    pairings, images = np.asarray(item.pairings), item.images
    panels = []
    for c, name in enumerate(item.camera_names):
        mine = pairings[pairings[:, 1] == c]
        panels.append(CameraPanel(name, np.asarray(images[c]), mine[:, 2:4], colours[mine[:, 0]]))
    return panels


def render_scan(data: str | Path, out: str | Path, sample: str = "0", split: str | None = None,
                weights: str | Path | None = None, device: str = "cpu", extent: float = 40.0) -> RenderResult:
    """Draw scan `sample` (a token or an index) of `split` of the prepared folder `data` into the PNG
    `out`, with what `weights` adds (see the module docstring). Default split: the fine-tuned run's
    `data.val_split`, else `val`."""
    path = payload = recipe = None
    if weights is not None:
        path = find_weights(weights)
        payload = load_checkpoint(path)
        stored = payload.get("recipe") or {}
        if "mode" in stored.get("train", {}):
            recipe = config.resolve(FinetuneRecipe, stored, str(path))
            recipe = replace(recipe, data=replace(recipe.data, path=str(data)))
    from cmcr_core.data.semantickitti.prepared import INDEX_NAME as KITTI_INDEX

    kind = recipe.data.dataset if recipe else ("semantickitti" if (Path(data) / KITTI_INDEX).is_file()
                                               else "nuscenes")
    split = split or (recipe.data.val_split if recipe else "val")
    source, names = open_split(recipe or _dataset_recipe(data, kind), split)
    item = source[_pick(source, sample)]
    points = np.asarray(item.points)
    truth = np.zeros(len(points), np.int64) if item.labels is None else np.asarray(item.labels, np.int64)
    panels = [BevPanel("labels" if item.labels is not None else "no labels", class_colours(truth))]
    shown, predicted, accuracy, what = truth, None, None, "labels"
    colours = class_colours(truth)
    if recipe is not None:
        predicted = _predict(recipe, payload, path, item, len(names), device)
        panels.append(BevPanel("prediction", class_colours(predicted)))
        colours, what = class_colours(predicted), "prediction"
        if item.labels is not None:
            labelled = truth != 0
            accuracy = float((predicted[labelled] == truth[labelled]).mean()) if labelled.any() else None
            panels.append(BevPanel("error (red: wrong)", error_colours(truth, predicted)))
        shown = np.concatenate([truth, predicted])
    elif path is not None:
        colours, what = feature_colours(_features(path, item, device)), "features"
        panels.append(BevPanel(f"features of {path.parent.name} (PCA as RGB)", colours))
    legend = [(int(c), names[c]) for c in np.unique(shown) if c != 0]
    title = f"{kind} {split}: {item.token}"
    title += f" — {100 * accuracy:.1f} % of labelled points right" if accuracy is not None else ""
    picture = write_scan_picture(out, points, panels, _cameras(item, colours), legend, title, extent)
    return RenderResult(picture, str(item.token), split, what, predicted, accuracy)
