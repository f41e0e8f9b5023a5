"""The object classification protocols as `cmcr finetune` / `cmcr probe` run a `task: classification` recipe.

* full data: fine-tuning over seeds S … S + N − 1 (``run_object_finetune``) or the linear probe
  (``run_object_probe``, one seed or several);
* few-shot (``fewshot.way`` > 0): ``fewshot.folds`` episodes (``run_fewshot``), each fine-tuned
  (`cmcr finetune`) or probed (`cmcr probe`) on its ``way`` × ``shot`` objects and scored on its queries;
  ``folds.json`` records each fold's classes and object ids, ``metrics.json`` the mean ± std over folds (ReCon
  reports the best test accuracy over epochs per fold; here it is the last epoch's).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cmcr_core.config import ObjectClassifyRecipe
from cmcr_core.data.objects.fewshot import FewShotFold, read_published_fold, sample_fold
from cmcr_core.runs.object_classification import (
    finetune_classifier,
    mean_std,
    probe_classifier,
    run_object_finetune,
    run_object_probe,
    run_object_probe_seeds,
)
from cmcr_core.runs.objects import read_objects
from cmcr_core.runs.report import Line, Report
from cmcr_core.runs.run_folder import METRICS_JSON, write_json

__all__ = ["FOLDS_JSON", "classification_report", "run_classification", "run_fewshot"]

logger = logging.getLogger(__name__)

FOLDS_JSON = "folds.json"


def _folds(recipe: ObjectClassifyRecipe) -> list[FewShotFold]:
    f = recipe.fewshot
    if f.folds < 1:
        raise ValueError(f"fewshot.folds must be >= 1, got {f.folds}")
    if f.folds_path:
        return [read_published_fold(f.folds_path, f.way, f.shot, fold) for fold in range(f.folds)]
    train = read_objects(recipe.data, recipe.data.train_split)
    test = read_objects(recipe.data, recipe.data.test_split)
    return [sample_fold(train, test, f.way, f.shot, f.queries, f.seed, fold) for fold in range(f.folds)]


def run_fewshot(recipe: ObjectClassifyRecipe, mode: str, out_dir: str | Path,
                weights: str | Path | None = None) -> dict[str, Any]:
    """Every fold of ``recipe.fewshot`` fine-tuned (``mode`` "finetune") or probed ("probe") into
    ``out_dir/fold{f}``; ``out_dir/folds.json`` (what each fold drew) and ``out_dir/metrics.json`` (accuracy
    and voting, mean ± std over folds)."""
    out_dir, f = Path(out_dir), recipe.fewshot
    folds = _folds(recipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = f.folds_path or f"sampled from {recipe.data.path} (fewshot.seed {f.seed})"
    write_json(out_dir / FOLDS_JSON, {"way": f.way, "shot": f.shot, "queries": f.queries, "seed": f.seed,
                                      "source": source, "folds": [fold.record() for fold in folds]},
               indent=2, newline=False)
    runs = {}
    for index, fold in enumerate(folds):
        folder = out_dir / f"fold{index}"
        if mode == "finetune":
            runs[str(index)] = finetune_classifier(recipe, fold.train, fold.test, folder, weights)
        else:
            runs[str(index)] = probe_classifier(recipe, fold.train, fold.test, weights)
            write_json(folder / METRICS_JSON, runs[str(index)], indent=2, newline=False)
        logger.info("fold %d/%d: accuracy %.4f", index + 1, len(folds), runs[str(index)]["overall_accuracy"])
    summary = {
        "recipe": recipe.name,
        "weights": str(weights) if weights is not None else None,
        "protocol": f"{mode}, {f.way}-way {f.shot}-shot, {len(folds)} folds",
        "overall_accuracy": mean_std([r["overall_accuracy"] for r in runs.values()]),
        "voting_mean": mean_std([r["voting_mean"] for r in runs.values()]),
        "folds": runs,
    }
    write_json(out_dir / METRICS_JSON, summary, indent=2, newline=False)
    return summary


def run_classification(recipe: ObjectClassifyRecipe, mode: str, out_dir: str | Path,
                       weights: str | Path | None = None, seeds: int = 1) -> dict[str, Any]:
    """`cmcr finetune` (mode "finetune") or `cmcr probe` ("probe") of a `task: classification` recipe, over
    seeds S..S+seeds−1 (S = train.seed): one folder per seed and the mean ± std in `out_dir`, except a
    single-seed probe, whose metrics.json is `out_dir`'s own; few-shot recipes run their folds instead."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if recipe.fewshot.way > 0:
        if seeds > 1:
            raise ValueError("--seeds: a few-shot recipe repeats over its folds (fewshot.folds); run other "
                             "training seeds with --set train.seed=S into other --out folders")
        return run_fewshot(recipe, mode, out_dir, weights)
    first = recipe.train.seed
    if mode == "finetune":
        return run_object_finetune(recipe, out_dir, weights, range(first, first + seeds))
    if seeds == 1:
        return run_object_probe(recipe, out_dir, weights)
    return run_object_probe_seeds(recipe, out_dir, weights, range(first, first + seeds))


def classification_report(metrics: dict[str, Any], out_dir: str | Path) -> Report:
    """The command's last line: overall accuracy and voting (mean over votes), ± std over seeds or folds."""

    def fmt(entry: object) -> str:
        if isinstance(entry, dict):
            return f"{entry['mean']:.4f} ± {entry['std']:.4f}"
        return f"{entry:.4f}"

    voting = metrics["voting_mean"]
    if not isinstance(voting, dict):
        voting = {"mean": voting, "std": metrics["voting_std"]}
    over = f" ({metrics['protocol']}; ± std over folds)" if "protocol" in metrics else ""
    return Report((Line(
        f"[green]done[/]: overall accuracy {fmt(metrics['overall_accuracy'])}, voting (mean over votes) "
        f"{fmt(voting)}{over}; {Path(out_dir) / METRICS_JSON}"
    ),))
