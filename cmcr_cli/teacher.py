"""`cmcr teacher ...`: train the offline semantic teacher on a synthetic world; inspect and score teachers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cmcr_cli.common import (
    BATCH_SIZE_OPTION,
    DEVICE_OPTION,
    DRY_RUN_OPTION,
    OVERWRITE_OPTION,
    OVERWRITE_RUN_OPTION,
    RECIPE_HELP,
    RESUME_OPTION,
    RUN_DEVICE_OPTION,
    SET_OPTION,
    THREADS_OPTION,
    console,
    load_or_fail,
    run_or_fail,
    run_settings,
    setup_logging,
    with_option,
)
from cmcr_cli.grammar import CmcrCommand, CmcrGroup
from cmcr_core import api

app = typer.Typer(cls=CmcrGroup, help="Train, inspect and evaluate 2D teachers.", no_args_is_help=True)
_TEACHER_FILE = typer.Option(
    ..., "--weights", help="A cmcr-teacher file (RUN/teacher.pt of `cmcr teacher train`).")


def _scores_line(label: str, scores: dict | None) -> str:
    if not scores:
        return f"{label}: none"
    line = f"{label}: pixel accuracy {scores['pixel_accuracy']:.3f}, mIoU {scores['miou']:.3f}"
    if "prototype_miou" in scores:
        line += (f" (nearest prototype: accuracy {scores['prototype_pixel_accuracy']:.3f}, "
                 f"mIoU {scores['prototype_miou']:.3f})")
    return line


def _print_scores(metrics: dict) -> None:
    console.print(_scores_line("held-out scenes", metrics.get("holdout")), highlight=False)
    for scores in metrics.get("eval_worlds", []):
        console.print(_scores_line(f"world {scores['world']}", scores), highlight=False)


@app.command("train", cls=CmcrCommand)
def train_command(
    recipe: Path = typer.Option(
        ..., "--recipe", "-r", help=f"{RECIPE_HELP} E.g. semantic_teacher_synthetic."),
    dataroot: Path = typer.Option(
        None, "--dataroot", help="Synthetic world to train on (`cmcr prepare synthetic` output; data.world)."
    ),
    eval_dataroot: list[Path] = typer.Option(
        None, "--eval-dataroot", help="Another world to score the teacher on (repeatable; data.eval_worlds)."
    ),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/<recipe name>)."),
    set_: list[str] = SET_OPTION,
    resume: bool = RESUME_OPTION,
    overwrite: bool = OVERWRITE_RUN_OPTION,
    device: str = RUN_DEVICE_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    threads: int = THREADS_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Train the compact semantic network on a world's camera truth; writes RUN/teacher.pt and metrics."""
    sets = run_settings(set_, device, batch_size, data__world=dataroot)
    if eval_dataroot:
        sets = with_option(sets, "data.eval_worlds", json.dumps([str(p) for p in eval_dataroot]))
    resolved = load_or_fail(recipe, sets, ("teacher",), dry_run, threads)
    if resolved is None:
        return
    run = run_or_fail(api.train_teacher, resolved, out, resume=resume, overwrite=overwrite)
    if run.teacher is None:
        console.print(f"stopped at step {run.result.position.step}; resume with --resume --out {run.out_dir}")
        return
    metrics = run.metrics or {}
    seconds = metrics.get("train_seconds")
    console.print(f"[green]done[/]: {run.result.position.step} steps"
                  + (f" in {seconds:.0f} s" if seconds is not None else "") + f"; teacher {run.teacher}",
                  highlight=False)
    _print_scores(metrics)


@app.command("info", cls=CmcrCommand)
def info_command(weights: Path = _TEACHER_FILE) -> None:
    """Show a teacher file's arch, source world, prototypes and recorded accuracy."""
    payload = run_or_fail(api.read_teacher_file, weights)
    meta = payload.get("meta", {})
    state = payload["state_dict"]
    params = sum(int(t.numel()) for k, t in state.items() if not k.endswith("num_batches_tracked"))
    console.print(f"[bold]{weights}[/]: arch {payload['arch']} {payload.get('kwargs', {})}, "
                  f"{params:,} parameters", highlight=False)
    source = meta.get("world")
    if source:
        held_out = ", ".join(source["holdout_scenes"]) or "-"
        console.print(f"trained on {source['root']} (fingerprint {source['fingerprint'][:12]}), scenes "
                      f"{', '.join(source['train_scenes'])}; held out {held_out}", highlight=False)
    training = meta.get("training")
    if training:
        seconds = training.get("seconds")
        console.print(f"training: {training['steps']} steps"
                      + (f", {seconds:.0f} s" if seconds is not None else "") + f", seed {training['seed']}")
    if "prototypes" in meta:
        present = meta["prototype_present"]
        missing = [n for n, ok in zip(meta["class_names"], present, strict=True) if not ok]
        console.print(f"prototypes: {tuple(meta['prototypes'].shape)}, {sum(present)}/{len(present)} classes"
                      + (f" (absent: {', '.join(missing)})" if missing else ""), highlight=False)
    else:
        console.print("prototypes: none")
    _print_scores(meta.get("metrics", {}))


@app.command("eval", cls=CmcrCommand)
def eval_command(
    weights: Path = _TEACHER_FILE,
    dataroot: Path = typer.Option(..., "--dataroot", help="Synthetic world with truth maps."),
    scene: list[str] = typer.Option(None, "--scene", help="Scene name to score (repeatable; default all)."),
    out: Path = typer.Option(None, "--out", help="Also write the scores to this JSON file."),
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
) -> None:
    """Score a trained teacher file (its classifier and prototypes) on a world's camera truth."""
    setup_logging()
    run_or_fail(api.set_threads, threads)
    scores = run_or_fail(api.evaluate_teacher, weights, dataroot, scenes=list(scene or []), device=device,
                         out=out, overwrite=overwrite)
    label = f"{dataroot} ({'the training world' if scores['same_world'] else 'another world'})"
    console.print(_scores_line(label, scores), highlight=False)
