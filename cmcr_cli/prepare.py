"""`cmcr prepare ...`: write synthetic worlds and turn datasets into prepared shards."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Write synthetic worlds and prepare datasets.", no_args_is_help=True)


@app.command("synthetic")
def synthetic(
    out: Path = typer.Option(..., "--out", help="Output folder (becomes the nuScenes dataroot)."),
    scenes: int = typer.Option(10, "--scenes", help="Number of scenes, 1..10 (official v1.0-mini names)."),
    samples_per_scene: int = typer.Option(
        10, "--samples-per-scene", help="Keyframes per scene (0.5 s apart)."
    ),
    seed: int = typer.Option(0, "--seed", help="World seed; same arguments give byte-identical files."),
    image_size: str = typer.Option("1600x900", "--image-size", help="Camera image size WIDTHxHEIGHT."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a world already written in --out."),
    workers: int = typer.Option(1, "--workers", help="Processes rendering keyframes in parallel."),
) -> None:
    """Write a procedural driving world in the nuScenes v1.0-mini layout (with lidarseg and camera truth)."""
    # Heavy imports stay inside the command so `cmcr --help` never loads numpy or the renderer.
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cmcr_core.data.synthetic import parse_image_size, write_nuscenes_world

    console = Console()
    try:
        size = parse_image_size(image_size)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--image-size") from err
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]synthetic world"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("samples", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = write_nuscenes_world(
                out,
                scenes=scenes,
                samples_per_scene=samples_per_scene,
                seed=seed,
                image_size=size,
                overwrite=overwrite,
                workers=workers,
                progress=advance,
            )
        except (ValueError, FileExistsError) as err:
            bar.stop()
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(code=2) from err
    elapsed = time.perf_counter() - start
    points = summary.points_per_sweep
    console.print(
        f"wrote {len(summary.scene_names)} scenes ({', '.join(summary.scene_names)}), "
        f"{summary.samples} samples in {elapsed:.1f} s\n"
        f"  LiDAR points per sweep: mean {sum(points) / len(points):.0f}, "
        f"min {min(points)}, max {max(points)}\n"
        f"  images {summary.image_size[0]}x{summary.image_size[1]}, 6 cameras; "
        f"{summary.bytes_written / summary.samples / 1e6:.2f} MB per sample\n"
        f"  nuScenes dataroot: {summary.root} (version {summary.version})\n"
        f"  camera truth maps: {summary.truth_index.parent} (index {summary.truth_index.name})"
    )


# --- cmcr prepare nuscenes / cmcr prepare info --------------------------------------------------------

NUSCENES_VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")


@app.command("nuscenes")
def nuscenes_command(
    dataroot: Path = typer.Option(..., "--dataroot", help="nuScenes root (samples/, lidarseg/, <version>/)."),
    version: str = typer.Option(..., "--version", help="v1.0-trainval, v1.0-mini or v1.0-test."),
    out: Path = typer.Option(..., "--out", help="Prepared folder (created; re-running resumes)."),
    workers: int = typer.Option(1, "--workers", help="Processes building shards on this machine."),
    shard: str = typer.Option("0/1", "--shard", help="i/n: this job builds shards with id % n == i."),
    superpixels: str = typer.Option("slic", "--superpixels", help="slic or none."),
    superpixel_scale: float = typer.Option(
        None, "--superpixel-scale", help="Run SLIC on the image scaled by this (default 0.5; 1.0 = full res)."
    ),
    samples_per_shard: int = typer.Option(64, "--samples-per-shard", help="Keyframes per HDF5 shard."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rebuild finished shards with failures."),
) -> None:
    """Prepare nuScenes keyframes into HDF5 shards: points, labels, JPEGs, pairings, superpixels.

    Exit code 0 when every sample of this job's shards was prepared, 1 when some failed, 2 for usage errors.
    """
    from cmcr_cli.common import console, fail

    if version not in NUSCENES_VERSIONS:
        fail(f"--version must be one of {', '.join(NUSCENES_VERSIONS)}, got {version!r}")
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    from cmcr_core.data import prepare_nuscenes as prep
    from cmcr_core.data.superpixels import SlicParams

    try:
        job = prep.parse_shard_spec(shard)
        scale = prep.DEFAULT_SUPERPIXEL_SCALE if superpixel_scale is None else superpixel_scale
        options = prep.PrepareOptions(
            superpixels=superpixels, slic=SlicParams(scale=scale), samples_per_shard=samples_per_shard
        )
        plan = prep.plan_prepare(dataroot, version, out, options, job=job, retry_failed=retry_failed)
    except ValueError as exc:
        fail(str(exc))
    with _samples_progress() as progress:
        task = progress.add_task(f"shard job {job[0]}/{job[1]}", total=plan.samples_todo)
        report = prep.run_prepare(plan, workers=workers, progress=lambda n: progress.advance(task, n))
        progress.update(task, completed=plan.samples_todo)
    console.print(
        f"{report.shards_built} shards built, {report.shards_kept} kept from earlier runs, "
        f"{report.samples_written} samples written; index: {report.index_path}"
    )
    if report.failures:
        _print_failures(report.failures)
        raise typer.Exit(1)


@app.command("info")
def info_command(out: Path = typer.Argument(..., help="A prepared folder.")) -> None:
    """Show what a prepared folder holds: splits, sample counts, bytes and failures."""
    from rich.table import Table

    from cmcr_cli.common import console, fail
    from cmcr_core.data.prepared import PreparedDataError, prepared_summary

    try:
        summary = prepared_summary(out)
    except PreparedDataError as exc:
        fail(str(exc))
    sp = summary["config"]["superpixels"]
    console.print(
        f"[bold]{out}[/]: {summary['version']} from {summary['dataroot']}\n"
        f"shards {summary['shards_done']}/{summary['shards_total']}, "
        f"samples {summary['samples_prepared']}/{summary['samples_planned']}, "
        f"{_human_bytes(summary['bytes'])}; superpixels: "
        + ("none" if sp is None else f"SLIC n_segments={sp['n_segments']} scale={sp['scale']}"),
        highlight=False,
    )
    table = Table(title="splits")
    for column in ("split", "scenes", "planned", "prepared", "failed"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, row in summary["splits"].items():
        table.add_row(name, *(str(row[k]) for k in ("scenes", "planned", "prepared", "failed")))
    console.print(table)
    jobs = Table(title="index parts")
    for column in ("file", "shards planned", "complete"):
        jobs.add_column(column)
    for job in summary["jobs"]:
        jobs.add_row(job["file"], str(job["shards_planned"]), "yes" if job["complete"] else "no")
    console.print(jobs)
    if summary["failures"]:
        _print_failures(summary["failures"])


def _print_failures(failures: list[dict[str, str]], limit: int = 20) -> None:
    from rich.table import Table

    from cmcr_cli.common import console

    shown = f" (first {limit})" if len(failures) > limit else ""
    table = Table(title=f"{len(failures)} failed samples{shown}")
    for column in ("sample", "scene", "path", "reason"):
        table.add_column(column, overflow="fold")
    for failure in failures[:limit]:
        table.add_row(failure["sample_token"], failure["scene"], failure["path"], failure["reason"])
    console.print(table)


def _human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _samples_progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from cmcr_cli.common import console

    class SamplesPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-- samples/s" if speed is None else f"{speed:.2f} samples/s")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        SamplesPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


# --- cmcr prepare semantickitti ---------------------------------------------------------------------


@app.command("semantickitti")
def semantickitti_command(
    root: Path = typer.Option(..., "--root", help="SemanticKITTI dataset folder holding sequences/NN/."),
    out: Path = typer.Option(..., "--out", help="Prepared folder (created; re-running resumes)."),
    synthetic: bool = typer.Option(
        False, "--synthetic", help="First write the synthetic world in SemanticKITTI layout into --root."
    ),
    sequences: str = typer.Option("00,01,08", "--sequences", help="With --synthetic: sequence names."),
    scans_per_sequence: int = typer.Option(20, "--scans-per-sequence", help="With --synthetic: scans each."),
    seed: int = typer.Option(0, "--seed", help="With --synthetic: world seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --synthetic: replace --root/sequences."),
) -> None:
    """Prepare SemanticKITTI scans (19-class learning map) into per-sequence HDF5 shards."""
    from cmcr_cli.common import console, fail
    from cmcr_core.data.semantickitti import KittiDataError, prepare_semantickitti

    if synthetic:
        from cmcr_core.data.semantickitti.writer import write_semantickitti_world

        try:
            world = write_semantickitti_world(root, [s.strip() for s in sequences.split(",")],
                                              scans_per_sequence, seed, overwrite=overwrite)
        except (ValueError, FileExistsError) as exc:
            fail(str(exc))
        points = world.points_per_scan
        console.print(f"wrote synthetic sequences {', '.join(world.sequences)} ({world.scans_per_sequence} "
                      f"scans each, {sum(points) / len(points):.0f} points per scan) to {root}/sequences")
    try:
        report = prepare_semantickitti(root, out)
    except KittiDataError as exc:
        fail(str(exc))
    console.print(f"sequences prepared: {', '.join(report.written) or 'none'}; kept from an earlier run: "
                  f"{', '.join(report.kept) or 'none'}; index: {report.index_path}")


# --- cmcr prepare objects (ReCon) ------------------------------------------------------------------------


def _objects_command() -> None:
    # the command body lives in cmcr_cli.objects (lazy heavy imports inside it)
    from cmcr_cli.objects import prepare_objects

    app.command("objects")(prepare_objects)


_objects_command()
