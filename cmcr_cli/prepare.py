"""`cmcr prepare ...`: write synthetic worlds and turn datasets into prepared shards."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import (
    DEVICE_OPTION,
    THREADS_OPTION,
    console,
    fail,
    print_report,
    run_or_fail,
    setup_logging,
)
from cmcr_cli.grammar import CmcrCommand, CmcrGroup
from cmcr_core import api

app = typer.Typer(cls=CmcrGroup, help="Write synthetic worlds and prepare datasets.", no_args_is_help=True)


@app.command("synthetic", cls=CmcrCommand)
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        size = api.parse_image_size(image_size)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--image-size") from err
    with Progress(TextColumn("[bold]synthetic world"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("samples", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            run = api.write_synthetic_world(out, scenes, samples_per_scene, seed, size, overwrite, workers,
                                            progress=advance)
        except (ValueError, FileExistsError) as err:
            bar.stop()
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(code=2) from err
    print_report(run.report())


# --- cmcr prepare nuscenes / cmcr prepare info --------------------------------------------------------

@app.command("nuscenes", cls=CmcrCommand)
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
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete the prepared folder in --out and start again (default: resume it)."
    ),
) -> None:
    """Prepare nuScenes keyframes into HDF5 shards: points, labels, JPEGs, pairings, superpixels.

    Exit code 0 when every sample of this job's shards was prepared, 1 when some failed, 2 for usage errors.
    """
    plan = run_or_fail(api.plan_nuscenes, dataroot, version, out, overwrite=overwrite, workers=workers,
                       shard=shard, superpixels=superpixels, superpixel_scale=superpixel_scale,
                       samples_per_shard=samples_per_shard, retry_failed=retry_failed)
    with _samples_progress() as progress:
        task = progress.add_task(f"shard job {plan.job[0]}/{plan.job[1]}", total=plan.samples_todo)
        report = api.prepare_nuscenes(plan, workers=workers, progress=lambda n: progress.advance(task, n))
        progress.update(task, completed=plan.samples_todo)
    console.print(
        f"{report.shards_built} shards built, {report.shards_kept} kept from earlier runs, "
        f"{report.samples_written} samples written; index: {report.index_path}"
    )
    if report.failures:
        _print_failures(report.failures)
        raise typer.Exit(1)


@app.command("info", cls=CmcrCommand)
def info_command(data: Path = typer.Option(..., "--data", help="A prepared folder.")) -> None:
    """Show what a prepared folder holds: splits, sample counts, bytes and failures."""
    from rich.table import Table

    summary = run_or_fail(api.prepared_summary, data)
    sp = summary["config"]["superpixels"]
    console.print(
        f"[bold]{data}[/]: {summary['version']} from {summary['dataroot']}\n"
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


@app.command("verify", cls=CmcrCommand)
def verify_command(
    data: Path = typer.Option(..., "--data", help="A prepared folder (nuScenes or SemanticKITTI)."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Rebuild the damaged files from the raw dataset, then check again."),
    dataroot: Path = typer.Option(
        None, "--dataroot", help="With --retry-failed: the raw dataset (default: the prepared folder's)."),
    workers: int = typer.Option(1, "--workers", help="With --retry-failed: processes rebuilding shards."),
) -> None:
    """Read every sample of a prepared folder against its checksums; list (or rebuild) the damaged files.

    Exit code 0 when no damage is found (or left after --retry-failed), 1 when some is, 2 for usage errors.
    """
    setup_logging()
    run = run_or_fail(api.verify_prepared, data, retry_failed, dataroot, workers)
    print_report(run.report())
    if run.damaged:
        raise typer.Exit(1)


# --- cmcr prepare semantickitti ---------------------------------------------------------------------


@app.command("semantickitti", cls=CmcrCommand)
def semantickitti_command(
    dataroot: Path = typer.Option(..., "--dataroot", help="SemanticKITTI folder holding sequences/NN/."),
    out: Path = typer.Option(..., "--out", help="Prepared folder (created; re-running resumes)."),
    synthetic: bool = typer.Option(
        False, "--synthetic", help="First write the synthetic world in SemanticKITTI layout into --dataroot."
    ),
    sequences: str = typer.Option("00,01,08", "--sequences", help="With --synthetic: sequence names."),
    scans_per_sequence: int = typer.Option(20, "--scans-per-sequence", help="With --synthetic: scans each."),
    seed: int = typer.Option(0, "--seed", help="With --synthetic: world seed."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the prepared folder in --out (and, with --synthetic, the "
        "sequences in --dataroot) instead of resuming."
    ),
) -> None:
    """Prepare SemanticKITTI scans (19-class learning map) into per-sequence HDF5 shards."""
    setup_logging()
    if synthetic:
        print_report(run_or_fail(api.write_synthetic_kitti, dataroot, sequences, scans_per_sequence, seed,
                                 overwrite=overwrite))
    print_report(run_or_fail(api.prepare_kitti, dataroot, out, overwrite=overwrite))


# --- cmcr prepare objects (ReCon) ------------------------------------------------------------------------


@app.command("objects", cls=CmcrCommand)
def prepare_objects(
    out: Path = typer.Option(..., "--out", help="Output folder (synthetic layouts) or targets file (.npz)."),
    synthetic: bool = typer.Option(
        False, "--synthetic", help="Write synthetic objects in every layout (and OUT/teacher_targets.npz)."
    ),
    dataroot: Path = typer.Option(
        None,
        "--dataroot",
        help="ShapeNet-55 root (ShapeNet-55/, shapenet_pc/, shapenet_img/): write "
        "teacher targets for its objects into --out (.npz).",
    ),
    teacher: str = typer.Option(
        None, "--teacher", help="Image teacher: hf_vit:DIR (ViT pre-logits), hf_clip:DIR (CLIP image "
        "embedding) or a LOCAL ResNet / cmcr-teacher file; default: the TinyImageTeacher stand-in."
    ),
    text: str = typer.Option(
        None, "--text", help="hf_clip:DIR: the CLIP text tower on ReCon's 60 prompts of every class text."
    ),
    text_embeddings: Path = typer.Option(
        None,
        "--text-embeddings",
        help=".npy, one row per class (classes x D); default: random class vectors.",
    ),
    img_dim: int = typer.Option(32, "--img-dim", help="TinyImageTeacher output size (no --teacher)."),
    text_dim: int = typer.Option(24, "--text-dim", help="Stand-in text vector size (no --text-embeddings)."),
    views: int = typer.Option(1, "--views", help="Image augmentations stored per object."),
    image_size: str = typer.Option("224x224", "--image-size", help="Teacher input size, square: N or NxN."),
    train_per_class: int = typer.Option(16, "--train-per-class", help="--synthetic: train objects/class."),
    test_per_class: int = typer.Option(4, "--test-per-class", help="--synthetic: test objects per class."),
    points: int = typer.Option(1024, "--points", help="--synthetic: points per object."),
    render_size: str = typer.Option("32x32", "--render-size", help="--synthetic: render size: N or NxN."),
    classes: str = typer.Option("basic", "--classes", help="--synthetic: class set, basic (8 shapes) or "
                                "confusable (12 look-alike shapes and furniture)."),
    pretrain_per_class: int = typer.Option(
        0, "--pretrain-per-class", help="--synthetic: > 0 gives ShapeNet-55 objects of its own (per class), "
        "apart from the downstream train / test objects."),
    scans: bool = typer.Option(False, "--scans", help="--synthetic: also write ScanObjectNN's hardest "
                               "variant (partial scans with background and noise)."),
    seed: int = typer.Option(0, "--seed", help="Seed of objects, stand-in teachers and view augmentations."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the objects or targets in --out."),
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
) -> None:
    """Write synthetic objects (ShapeNet-55, ScanObjectNN, ModelNet40 layouts) and/or ReCon targets."""
    if not synthetic and dataroot is None:
        fail("nothing to do: pass --synthetic and/or --dataroot SHAPENET55_ROOT")
    size, render = (run_or_fail(api.parse_size, text, name, square=True)[0]
                    for text, name in ((image_size, "--image-size"), (render_size, "--render-size")))
    run_or_fail(api.set_threads, threads)
    root = dataroot
    if synthetic:
        layout, report = run_or_fail(api.write_synthetic_objects, out, overwrite=overwrite,
                                     train_per_class=train_per_class, test_per_class=test_per_class,
                                     points=points, seed=seed, render_size=render, classes=classes,
                                     pretrain_per_class=pretrain_per_class, scans=scans)
        print_report(report)
        # the synthetic ShapeNet-55 copy gets its targets too, so one command readies a whole demo
        root, out = root or layout["shapenet55"], out / "teacher_targets.npz"
    print_report(run_or_fail(api.prepare_object_targets, root, out, overwrite=overwrite,
                             errors=(KeyError, ImportError), teacher=teacher, text=text,
                             text_embeddings=text_embeddings, img_dim=img_dim, text_dim=text_dim, views=views,
                             image_size=size, seed=seed, device=device))
