"""`cmcr finetune` and `cmcr probe`: LiDAR semantic segmentation from a pretrained or random student, or
object classification for `task: classification` recipes (ReCon)."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import (
    BATCH_SIZE_OPTION,
    DATA_OPTION,
    DRY_RUN_OPTION,
    OVERWRITE_RUN_OPTION,
    RECIPE_HELP,
    RUN_DEVICE_OPTION,
    SET_OPTION,
    THREADS_OPTION,
    print_report,
    ready,
    run_or_fail,
    run_settings,
)
from cmcr_core import api

# Options shared by `cmcr finetune` and `cmcr probe` (Typer reads each declaration; reusing them is safe).
_WEIGHTS = typer.Option(None, "--weights", help="Pretraining checkpoint; omit for random init.")
_OUT = typer.Option(None, "--out", help="Run folder (default: runs/<recipe name>).")
_SEEDS = typer.Option(1, "--seeds", help="Run seeds S..S+N-1 one after the other; mean ± std.")
_RESUME = typer.Option(False, "--resume", help="Continue the run(s) in --out from checkpoints.")
_ALLOW_VOXEL_MISMATCH = typer.Option(
    False, "--allow-voxel-mismatch", help="Load a checkpoint pretrained with another voxelisation."
)
_EXPORT = typer.Option(
    None, "--export-predictions", help="Write val predictions (nuScenes lidarseg / SemanticKITTI format)."
)


def _run(mode: str, recipe: Path, data: Path | None, weights: Path | None, label_fraction: float | None,
         out: Path | None, seeds: int, sets: list[str], resume: bool, overwrite: bool,
         allow_voxel_mismatch: bool, export_predictions: Path | None, threads: int | None,
         dry_run: bool) -> None:
    segmentation = {"resume": resume, "allow_voxel_mismatch": allow_voxel_mismatch,
                    "export_predictions": export_predictions}
    flags = {"--resume": resume, "--allow-voxel-mismatch": allow_voxel_mismatch,
             "--export-predictions": export_predictions}
    sets = run_settings(sets, None, None, data__path=data)
    resolved = run_or_fail(api.load_downstream_recipe, recipe, sets, label_fraction, flags, mode)
    if ready(resolved, dry_run, threads) is not None:
        print_report(run_or_fail(api.finetune, resolved, mode, out, weights, seeds, overwrite=overwrite,
                                 errors=(KeyError,), **segmentation))


def finetune(
    recipe: Path = typer.Option(..., "--recipe", "-r", help=f"{RECIPE_HELP} E.g. finetune_nuscenes."),
    data: Path = DATA_OPTION,
    weights: Path = _WEIGHTS,
    label_fraction: float = typer.Option(None, "--label-fraction", help="0.01, 0.05, 0.1, 0.25 or 1.0."),
    out: Path = _OUT,
    seeds: int = _SEEDS,
    set_: list[str] = SET_OPTION,
    resume: bool = _RESUME,
    overwrite: bool = OVERWRITE_RUN_OPTION,
    allow_voxel_mismatch: bool = _ALLOW_VOXEL_MISMATCH,
    export_predictions: Path = _EXPORT,
    device: str = RUN_DEVICE_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    threads: int = THREADS_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Fine-tune a MinkUNet for semantic segmentation on a label fraction; evaluate the whole val split."""
    sets = run_settings(set_, device, batch_size)
    _run("finetune", recipe, data, weights, label_fraction, out, seeds, sets, resume, overwrite,
         allow_voxel_mismatch, export_predictions, threads, dry_run)


def probe(
    recipe: Path = typer.Option(..., "--recipe", "-r", help=f"{RECIPE_HELP} E.g. probe_nuscenes."),
    data: Path = DATA_OPTION,
    weights: Path = _WEIGHTS,
    label_fraction: float = typer.Option(None, "--label-fraction", help="Default from the recipe (1.0)."),
    out: Path = _OUT,
    seeds: int = _SEEDS,
    set_: list[str] = SET_OPTION,
    resume: bool = _RESUME,
    overwrite: bool = OVERWRITE_RUN_OPTION,
    allow_voxel_mismatch: bool = _ALLOW_VOXEL_MISMATCH,
    export_predictions: Path = _EXPORT,
    device: str = RUN_DEVICE_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    threads: int = THREADS_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Linear probing: frozen backbone (batch norm in eval mode), a linear head on the point features."""
    sets = run_settings(set_, device, batch_size)
    _run("probe", recipe, data, weights, label_fraction, out, seeds, sets, resume, overwrite,
         allow_voxel_mismatch, export_predictions, threads, dry_run)
