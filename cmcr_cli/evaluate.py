"""`cmcr evaluate`: score a fine-tuned run on a prepared split (optionally with test-time augmentation) and
export its predictions in the benchmark's submission layout."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import (
    DEVICE_OPTION,
    OVERWRITE_OPTION,
    THREADS_OPTION,
    print_report,
    run_or_fail,
    setup_logging,
)
from cmcr_core import api


def evaluate(
    weights: Path = typer.Option(
        ..., "--weights", help="A run folder of `cmcr finetune` / `cmcr probe` (its best.pt, else last.pt, "
        "else checkpoint.pt) or one of those files."),
    data: Path = typer.Option(None, "--data", help="Prepared folder (default: the one the run trained on)."),
    split: str = typer.Option(
        None, "--split", help="Split to score, e.g. val or test (default: the run's data.val_split)."),
    tta: bool = typer.Option(
        False, "--tta", help="Test-time augmentation: average over 4 rotations about z, each with and "
        "without a flip."),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json (default: print only)."),
    export_predictions: Path = typer.Option(
        None, "--export-predictions", help="Write the predictions: nuScenes lidarseg .bin files with "
        "submission.json, or SemanticKITTI .label files."),
    batch_size: int = typer.Option(None, "--batch-size", help="Scans per forward pass (default: the run's "
                                   "data.eval_batch_size)."),
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
) -> None:
    """Evaluate a fine-tuned network with the evaluator of fine-tuning; unlabelled splits are predicted."""
    setup_logging()
    run_or_fail(api.set_threads, threads)
    run = run_or_fail(api.evaluate, weights, data, split, tta, out, overwrite=overwrite,
                      export_predictions=export_predictions, device=device, batch_size=batch_size,
                      errors=(KeyError,))
    print_report(run.report())
