"""`cmcr evaluate`: score a fine-tuned (or probed) network on a prepared split, on its own.

`--weights` is a run folder of `cmcr finetune` / `cmcr probe` or one of its checkpoints. A folder stands
for its best validated network (`best.pt`, written with `train.eval_every`), else its finished one
(`last.pt`), else its latest training checkpoint (`checkpoint.pt`); a folder of several seeds names them
instead of choosing one. The recipe stored in the checkpoint fixes the network, the voxelisation and the
input scaling, so the scores are those fine-tuning's own evaluation computes (`cmcr_core.eval.segmentation.
evaluate`, the same function); `--data` and `--split` say what to score, `--tta` averages the logits of
the eight symmetries of the square (`tta_views`).

A split without labels (nuScenes `test`, SemanticKITTI sequences 11–21) is predicted and, with
`--export-predictions`, written in the benchmark's submission layout: nuScenes lidarseg
`lidarseg/<split>/<lidar token>_lidarseg.bin` plus `<split>/submission.json`, SemanticKITTI
`sequences/<NN>/predictions/<scan>.label`; it adds nothing to the scores.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cmcr_core import config
from cmcr_core.config import FinetuneRecipe
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.engine.method import load_trainable_state_dict
from cmcr_core.eval import segmentation as seg
from cmcr_core.methods.registry import build_segmentation_model
from cmcr_core.methods.segmentation import SegmentationMethod
from cmcr_core.runs.finetune import open_split, segmentation_settings
from cmcr_core.runs.report import Line, Report, Table
from cmcr_core.runs.run_folder import BEST_CHECKPOINT, CHECKPOINT, LAST_CHECKPOINT, METRICS_JSON, write_json

__all__ = ["EvaluateRun", "find_weights", "run_evaluate"]

logger = logging.getLogger(__name__)

WEIGHTS_ORDER = (BEST_CHECKPOINT, LAST_CHECKPOINT, CHECKPOINT)


def find_weights(path: str | Path) -> Path:
    """The checkpoint `--weights` stands for: a file as given; a run folder's best.pt, else last.pt,
    else checkpoint.pt. Raises FileNotFoundError / ValueError saying what the folder holds."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"--weights: no such file or run folder: {path}")
    for name in WEIGHTS_ORDER:
        if (path / name).is_file():
            return path / name
    seeds = sorted(p.name for p in path.glob("seed*") if p.is_dir())
    if seeds:
        raise ValueError(f"--weights: {path} holds the runs of several seeds ({', '.join(seeds)}); pass one "
                         f"of them, e.g. --weights {path / seeds[0]}")
    raise FileNotFoundError(f"--weights: {path} holds no {', '.join(WEIGHTS_ORDER)}: not a run folder of "
                            "`cmcr finetune` / `cmcr probe`")


def _recipe_of(payload: dict[str, Any], path: Path) -> FinetuneRecipe:
    stored = payload.get("recipe")
    if not isinstance(stored, dict) or "mode" not in stored.get("train", {}):
        raise ValueError(f"--weights: {path} was not written by `cmcr finetune` / `cmcr probe` (its recipe "
                         "is not a segmentation recipe); `cmcr evaluate` scores fine-tuned networks")
    return config.resolve(FinetuneRecipe, stored, str(path))


@dataclass(frozen=True)
class EvaluateRun:
    """What `cmcr evaluate` scored: the checkpoint, the scores, where they and the predictions went."""

    weights: Path
    metrics: seg.SegmentationMetrics
    out_dir: Path | None
    export: Path | None

    def report(self) -> Report:
        m, extra = self.metrics, self.metrics.extra
        views = f", test-time augmentation over {extra['tta_views']} views" if extra["tta_views"] > 1 else ""
        title = f"{m.dataset} {m.split}: {m.num_scans} scans, {self.weights}{views}"
        blocks: list[Table | Line] = []
        if extra["labelled_scans"]:
            blocks.append(Table(title, seg.CLASS_TABLE_COLUMNS, tuple(seg.class_table_rows(m))))
            blocks.append(Line(f"[bold]mIoU {100 * m.miou:.2f}[/] over {len(m.present)} present classes "
                               f"({extra['labelled_scans']} labelled scans)"))
            if m.absent:
                blocks.append(Line(f"absent classes (not in the mean): {', '.join(m.absent)}"))
        else:
            blocks.append(Line(f"{title}: the split has no labels, nothing to score", highlight=False))
        where = [f"scores in {self.out_dir / METRICS_JSON}"] if self.out_dir is not None else []
        where += [f"predictions in {self.export}"] if self.export is not None else []
        if where:
            blocks.append(Line("; ".join(where), highlight=False))
        return Report(tuple(blocks))


def run_evaluate(weights: str | Path, data: str | Path | None = None, split: str | None = None,
                 tta: bool = False, out_dir: str | Path | None = None,
                 export_predictions: str | Path | None = None, device: str = "cpu",
                 batch_size: int | None = None, num_workers: int = 0) -> EvaluateRun:
    """Score the network of `weights` (`find_weights`) on `split` (default: the run's `data.val_split`)
    of `data` (default: the run's `data.path`); write `metrics.json` to `out_dir` and the predictions to
    `export_predictions` when given."""
    path = find_weights(weights)
    payload = load_checkpoint(path)
    recipe = _recipe_of(payload, path)
    if data is not None:
        recipe = replace(recipe, data=replace(recipe.data, path=str(data)))
    split = split or recipe.data.val_split
    t0 = time.perf_counter()
    source, class_names = open_split(recipe, split)
    model = build_segmentation_model(recipe, len(class_names), recipe.train.seed)
    method = SegmentationMethod(model, recipe.loss.cross_entropy, recipe.loss.lovasz,
                                probe=recipe.train.mode == "probe")
    load_trainable_state_dict(method, payload["model"], source=str(path))
    views = seg.tta_views() if tta else ()
    metrics = seg.evaluate(method.model, source, segmentation_settings(recipe), class_names, split,
                           recipe.data.dataset, batch_size or recipe.data.eval_batch_size, device=device,
                           export_dir=export_predictions, num_workers=num_workers, views=views)
    extra = {**metrics.extra, "protocol": "evaluate", "weights": str(path), "step": payload.get("step"),
             "mode": recipe.train.mode, "data": recipe.data.path, "wall_time_s": time.perf_counter() - t0}
    if "validation" in payload:
        extra["validation"] = payload["validation"]
    metrics = replace(metrics, extra=extra)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        write_json(out / METRICS_JSON, metrics.to_dict())
    export = None if export_predictions is None else Path(export_predictions)
    return EvaluateRun(path, metrics, out, export)
