"""`cmcr finetune` and `cmcr probe`: LiDAR semantic segmentation from a pretrained or random student, or
object classification for `task: classification` recipes (ReCon)."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import DRY_RUN_OPTION, SET_OPTION, print_report, run_or_fail, setup_logging, with_option
from cmcr_core import api

RECIPE_HELP = "YAML recipe, e.g. recipes/finetune_nuscenes.yaml."

# Options shared by `cmcr finetune` and `cmcr probe` (Typer reads each declaration; reusing them is safe).
_DATA = typer.Option(None, "--data", help="Prepared folder (sets data.path).")
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
         out: Path | None, seeds: int, set_: list[str] | None, resume: bool, allow_voxel_mismatch: bool,
         export_predictions: Path | None, dry_run: bool) -> None:
    segmentation = {"resume": resume, "allow_voxel_mismatch": allow_voxel_mismatch,
                    "export_predictions": export_predictions}
    flags = {"--resume": resume, "--allow-voxel-mismatch": allow_voxel_mismatch,
             "--export-predictions": export_predictions}
    resolved = run_or_fail(api.load_downstream_recipe, recipe, with_option(set_, "data.path", data),
                           label_fraction, flags)
    if dry_run:
        typer.echo(api.dump_recipe(resolved), nl=False)
        return
    setup_logging()
    print_report(run_or_fail(api.finetune, resolved, mode, out, weights, seeds, errors=(KeyError,),
                             **segmentation))


def finetune(
    recipe: Path = typer.Option(..., "--recipe", "-r", help=RECIPE_HELP),
    data: Path = _DATA,
    weights: Path = _WEIGHTS,
    label_fraction: float = typer.Option(None, "--label-fraction", help="0.01, 0.05, 0.1, 0.25 or 1.0."),
    out: Path = _OUT,
    seeds: int = _SEEDS,
    set_: list[str] = SET_OPTION,
    resume: bool = _RESUME,
    allow_voxel_mismatch: bool = _ALLOW_VOXEL_MISMATCH,
    export_predictions: Path = _EXPORT,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Fine-tune a MinkUNet for semantic segmentation on a label fraction; evaluate the whole val split."""
    _run("finetune", recipe, data, weights, label_fraction, out, seeds, set_, resume, allow_voxel_mismatch,
         export_predictions, dry_run)


def probe(
    recipe: Path = typer.Option(..., "--recipe", "-r", help="YAML recipe, e.g. recipes/probe_nuscenes.yaml."),
    data: Path = _DATA,
    weights: Path = _WEIGHTS,
    label_fraction: float = typer.Option(None, "--label-fraction", help="Default from the recipe (1.0)."),
    out: Path = _OUT,
    seeds: int = _SEEDS,
    set_: list[str] = SET_OPTION,
    resume: bool = _RESUME,
    allow_voxel_mismatch: bool = _ALLOW_VOXEL_MISMATCH,
    export_predictions: Path = _EXPORT,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Linear probing: frozen backbone (batch norm in eval mode), a linear head on the point features."""
    _run("probe", recipe, data, weights, label_fraction, out, seeds, set_, resume, allow_voxel_mismatch,
         export_predictions, dry_run)
