"""`cmcr finetune` and `cmcr probe`: LiDAR semantic segmentation from a pretrained or random student;
`task: classification` recipes (ReCon objects) are handed to `cmcr_cli.objects`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cmcr_cli.common import console, fail, load_recipe_or_fail, setup_logging

RECIPE_HELP = "YAML recipe, e.g. recipes/finetune_nuscenes.yaml."


def _run(mode: str, recipe: Path, data: Path | None, weights: Path | None, label_fraction: float | None,
         out: Path | None, seeds: int, set_: list[str] | None, resume: bool, allow_voxel_mismatch: bool,
         export_predictions: Path | None, dry_run: bool) -> None:
    sets = list(set_ or [])
    if data is not None:
        sets.append(f"data.path={data}")
    from cmcr_cli.objects import is_object_classification_recipe

    if is_object_classification_recipe(recipe):  # ReCon object classification: its own schema and runner
        _run_objects(mode, recipe, sets, weights, out, seeds, dry_run, label_fraction=label_fraction,
                     resume=resume, allow_voxel_mismatch=allow_voxel_mismatch,
                     export_predictions=export_predictions)
        return
    if label_fraction is not None:
        sets.append(f"data.label_fraction={label_fraction}")
    resolved = load_recipe_or_fail(recipe, sets, "finetune")
    from cmcr_core import config

    if dry_run:
        typer.echo(config.dump(resolved), nl=False)
        return
    if seeds < 1:
        fail(f"--seeds must be >= 1, got {seeds}")
    setup_logging()
    from cmcr_core.data.label_fractions import LabelSubsetError
    from cmcr_core.engine.loop import NonFiniteLossError
    from cmcr_core.finetune import run_finetune, run_probe, run_seeds
    from cmcr_core.models.checkpoints import VoxelMismatchError

    out = out or Path("runs") / resolved.name
    options: dict[str, Any] = {"weights": weights, "resume": resume,
                               "allow_voxel_mismatch": allow_voxel_mismatch}
    try:
        if seeds == 1:
            runner = run_probe if mode == "probe" else run_finetune
            runs = [runner(resolved, out, export_predictions=export_predictions, **options)]
            summary = None
        else:
            if resolved.train.mode != mode:
                fail(f"recipe {resolved.name!r} is a {resolved.train.mode} recipe (train.mode); "
                     f"use a {mode} recipe (recipes/{mode}_*.yaml)")
            runs, summary = run_seeds(resolved, out, seeds, export_predictions=export_predictions, **options)
    except NonFiniteLossError as exc:
        fail(str(exc), code=3)
    except (VoxelMismatchError, LabelSubsetError) as exc:
        fail(str(exc))
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        fail(str(exc))
    _print_report(runs, summary, out, export_predictions)


def _run_objects(mode: str, recipe: Path, sets: list[str], weights: Path | None, out: Path | None, seeds: int,
                 dry_run: bool, **segmentation_only: Any) -> None:
    """`task: classification` recipes go to `cmcr_cli.objects`; segmentation-only flags are refused."""
    flags = {"label_fraction": "--label-fraction", "resume": "--resume",
             "allow_voxel_mismatch": "--allow-voxel-mismatch", "export_predictions": "--export-predictions"}
    given = [flags[k] for k, v in segmentation_only.items() if v not in (None, False)]
    if given:
        fail(f"{', '.join(given)}: not available for object classification; {recipe} has "
             "task: classification (these options are for segmentation recipes); drop them")
    from cmcr_cli.objects import finetune_objects, probe_objects

    if mode == "probe":
        probe_objects(recipe, sets, out, weights, seeds, dry_run)
    else:
        finetune_objects(recipe, sets, out, weights, seeds, dry_run)


def _print_report(runs: list, summary: dict | None, out: Path, export: Path | None) -> None:
    from rich.table import Table

    first = runs[0].metrics
    title = (f"{first.dataset} {first.split}: {first.num_scans} scans, "
             f"{first.extra['protocol']['mode']}, {len(runs)} seed(s)")
    table = Table(title=title)
    for column in ("class", "IoU %", "TP", "FP", "FN", "GT points"):
        table.add_column(column, justify="left" if column == "class" else "right")
    per_class = summary["iou_per_class"] if summary else None
    for row in first.class_rows():
        if per_class is not None:
            stats = per_class[row["class"]]
            iou = "absent"
            if stats["mean"] is not None:
                iou = f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"
        else:
            iou = "absent" if row["iou"] is None else f"{100 * row['iou']:.2f}"
        counts = (str(row[key]) for key in ("tp", "fp", "fn", "gt_points"))
        table.add_row(row["class"], iou, *counts)
    console.print(table)
    if summary is not None:
        m = summary["miou"]
        per_seed = ", ".join(f"{100 * v:.2f}" for v in summary["per_seed_miou"])
        console.print(f"[bold]mIoU {100 * m['mean']:.2f} ± {100 * m['std']:.2f}[/] over seeds "
                      f"{summary['seeds']} (per seed: {per_seed})")
    else:
        console.print(f"[bold]mIoU {100 * first.miou:.2f}[/] over {len(first.present)} present classes")
    if first.absent:
        console.print(f"absent classes (not in the mean): {', '.join(first.absent)}")
    protocol = first.extra["protocol"]
    console.print(
        f"labelled scans {protocol['scans']} (fraction {protocol['label_fraction']}, "
        f"skip {protocol['skip']}), "
        f"{protocol['total_steps']} steps, lr {protocol['lr']} / head {protocol['lr_head']}, "
        f"init {first.extra['weights'] or 'random'}; results in {out}/metrics.json"
        + (f"; predictions in {export}" if export else ""),
        highlight=False,
    )


# Options shared by `cmcr finetune` and `cmcr probe` (Typer reads each declaration; reusing them is safe).
_DATA = typer.Option(None, "--data", help="Prepared folder (sets data.path).")
_WEIGHTS = typer.Option(None, "--weights", help="Pretraining checkpoint; omit for random init.")
_OUT = typer.Option(None, "--out", help="Run folder (default: runs/<recipe name>).")
_SEEDS = typer.Option(1, "--seeds", help="Run seeds S..S+N-1 one after the other; mean ± std.")
_SET = typer.Option(None, "--set", help="Override one key: section.key=value (repeatable).")
_RESUME = typer.Option(False, "--resume", help="Continue the run(s) in --out from checkpoints.")
_ALLOW_VOXEL_MISMATCH = typer.Option(
    False, "--allow-voxel-mismatch", help="Load a checkpoint pretrained with another voxelisation."
)
_EXPORT = typer.Option(
    None, "--export-predictions", help="Write val predictions (nuScenes lidarseg / SemanticKITTI format)."
)
_DRY_RUN = typer.Option(False, "--dry-run", help="Print the resolved recipe and exit.")


def finetune(
    recipe: Path = typer.Option(..., "--recipe", "-r", help=RECIPE_HELP),
    data: Path = _DATA,
    weights: Path = _WEIGHTS,
    label_fraction: float = typer.Option(None, "--label-fraction", help="0.01, 0.05, 0.1, 0.25 or 1.0."),
    out: Path = _OUT,
    seeds: int = _SEEDS,
    set_: list[str] = _SET,
    resume: bool = _RESUME,
    allow_voxel_mismatch: bool = _ALLOW_VOXEL_MISMATCH,
    export_predictions: Path = _EXPORT,
    dry_run: bool = _DRY_RUN,
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
    set_: list[str] = _SET,
    resume: bool = _RESUME,
    allow_voxel_mismatch: bool = _ALLOW_VOXEL_MISMATCH,
    export_predictions: Path = _EXPORT,
    dry_run: bool = _DRY_RUN,
) -> None:
    """Linear probing: frozen backbone (batch norm in eval mode), a linear head on the point features."""
    _run("probe", recipe, data, weights, label_fraction, out, seeds, set_, resume, allow_voxel_mismatch,
         export_predictions, dry_run)
