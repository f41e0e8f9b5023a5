"""`cmcr analyze`: structure metrics (U, T, G) of pretrained students and teachers; `cmcr analyze toy`."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import (
    DEVICE_OPTION,
    OVERWRITE_OPTION,
    THREADS_OPTION,
    console,
    fail,
    run_or_fail,
    setup_logging,
)
from cmcr_cli.grammar import CmcrCommand, CmcrGroup
from cmcr_core import api


class AnalyzeGroup(CmcrGroup):
    """`cmcr analyze` runs on its own (its required options apply) or names a subcommand (`toy`), whose
    own options are then the only ones parsed: the group's required options are not asked for."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            saved = [(param, param.required) for param in self.params]
            for param, _ in saved:
                param.required = False
            try:
                return super().parse_args(ctx, args)
            finally:
                for param, required in saved:
                    param.required = required
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=AnalyzeGroup,
    help="Structure of pretrained 3D features next to their 2D teacher (uniformity, tolerance, gap), or the "
    "toy experiment (`cmcr analyze toy`).",
    no_args_is_help=True,
)


def _size(text: str) -> tuple[int, int] | str | None:
    """--teacher-image-size: 'crop', 'original' or WIDTHxHEIGHT -> the analysis's (height, width) or name."""
    if text in ("crop", "original"):
        return "crop" if text == "crop" else None
    try:
        width, height = api.parse_size(text, "--teacher-image-size")
    except ValueError:
        fail(f"--teacher-image-size must be 'crop', 'original' or WIDTHxHEIGHT (e.g. 416x224), got {text!r}")
    return height, width


@app.callback(invoke_without_command=True)
def analyze(
    ctx: typer.Context,
    weights: list[Path] = typer.Option(..., "--weights", help="Pretraining checkpoint (repeatable)."),
    data: Path = typer.Option(..., "--data", help="Prepared folder."),
    out: Path = typer.Option(..., "--out", help="Output folder (structure.json, PNGs)."),
    split: str = typer.Option("val", "--split", help="Analysed split of the prepared folder."),
    per_class: int = typer.Option(5000, "--per-class", help="Sampled features per class (16 classes)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the point selection (same points for every model)."),
    teacher_image_size: str = typer.Option(
        "crop", "--teacher-image-size", help="Camera images are resized whole to: 'crop' (the run's crop "
        "size), 'original', or WIDTHxHEIGHT."
    ),
    export_features: bool = typer.Option(False, "--export-features", help="Write features/<model>.npz."),
    miou_file: Path = typer.Option(
        None, "--miou-file", help="JSON {model: mIoU or metrics.json path}: correlate metrics with mIoU."
    ),
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
) -> None:
    """Sample features per class, measure U/T/G/A of each model and of its teacher, print a table, plot."""
    if ctx.invoked_subcommand is not None:
        return
    size = _size(teacher_image_size)
    setup_logging()
    run_or_fail(api.set_threads, threads)
    result = run_or_fail(api.analyze, weights, data, out, device, overwrite=overwrite, split=split,
                         per_class=per_class, seed=seed, teacher_input_size=size,
                         export_features=export_features, miou_file=miou_file)
    _print_table(result.report)
    console.print(f"results in {result.out_dir}: " + ", ".join(p.name for p in result.files), highlight=False)


def _print_table(report: dict) -> None:
    from rich import box
    from rich.table import Table

    selection = report["selection"]
    table = Table(title=f"split {selection['split']}: {selection['num_features']} features "
                        f"({selection['per_class']} per class max, seed {selection['seed']})",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("model", "U 3D", "U 2D", "ΔU", "T 3D", "T 2D", "ΔT", "G", "A"):
        # Model names never wrap; the numbers fit an 80-column log.
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for name, m in report["models"].items():
        values = (m["uniformity_3d"], m["uniformity_2d"], m["delta_uniformity"], m["tolerance_3d"],
                  m["tolerance_2d"], m["delta_tolerance"], m["modality_gap"], m["alignment"])
        table.add_row(name, *(f"{v:.3f}" for v in values))
    console.print(table)
    console.print("methods: " + ", ".join(f"{n} = {m['method']}" for n, m in report["models"].items()),
                  highlight=False)
    if selection["below_quota"]:
        console.print("below quota (all their points kept): " + ", ".join(selection["below_quota"]))
    if not report["shared_teacher"]:
        console.print("the models' 2D features differ (different teachers or trained decoders): each ΔU/ΔT/G "
                      "is against the model's own 2D side; the bars' reference line is the first model's")
    for metric, r in report.get("correlation", {}).items():
        console.print(f"{metric}: Pearson r = {r['pearson']:.3f}, Spearman ρ = {r['spearman']:.3f} with mIoU")


@app.command("toy", cls=CmcrCommand)
def toy(
    clusters: int = typer.Option(1, "--clusters", help="1 or 3 source clusters on the sphere."),
    out: Path = typer.Option(Path("runs/toy"), "--out", help="Output folder."),
    iterations: int = typer.Option(400, "--iterations", help="Full-batch Adam steps per loss."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data and the initial MLP."),
    overwrite: bool = OVERWRITE_OPTION,
    threads: int = THREADS_OPTION,
) -> None:
    """Distil a source distribution on S² into an MLP with each loss; U and T over training vs the source.

    Runs on the CPU: 3-d points and a 64-wide MLP, seconds of work a GPU would only slow down.
    """
    if clusters not in (1, 3):
        fail(f"--clusters must be 1 or 3, got {clusters}")
    if iterations < 4:
        fail(f"--iterations must be >= 4, got {iterations}")
    run_or_fail(api.set_threads, threads)
    summary = run_or_fail(api.toy, clusters, out, iterations=iterations, seed=seed, overwrite=overwrite)
    source = summary["source"]
    console.print(f"source: U = {source['uniformity']:.3f}, T = {source['tolerance']:.3f}")
    for name, final in summary["final"].items():
        console.print(f"{name:>12}: U = {final['uniformity']:.3f}, T = {final['tolerance']:.3f} "
                      f"(loss {final['loss']:.4f})")
    console.print("figures: " + ", ".join(summary["files"]), highlight=False)
