"""Object-level (ReCon) commands: `cmcr prepare objects` and the bodies of `cmcr pretrain/finetune/probe`
for recipes with `method: recon` or `task: classification`.

`cmcr_cli.pretrain`, `cmcr_cli.finetune` call `pretrain_objects`, `finetune_objects` and `probe_objects`
when `is_recon_recipe` / `is_object_classification_recipe` says so. Heavy imports stay inside functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cmcr_cli.common import console, fail, print_run_done, run_or_fail, setup_logging


def _recipe_key(path: Path, key: str) -> object:
    from cmcr_core.config import RecipeError, read_overrides

    try:
        return read_overrides(path).get(key)
    except RecipeError as exc:
        fail(str(exc))


def is_recon_recipe(path: Path | None) -> bool:
    """Whether a recipe file (after `base:` links) says `method: recon`."""
    return path is not None and _recipe_key(path, "method") == "recon"


def is_object_classification_recipe(path: Path | None) -> bool:
    """Whether a recipe file (after `base:` links) says `task: classification`."""
    return path is not None and _recipe_key(path, "task") == "classification"


def _load(path: Path, sets: list[str], kind_name: str):
    from cmcr_core import config
    from cmcr_core.config import RecipeError

    kind = config.ReconRecipe if kind_name == "recon" else config.ObjectClassifyRecipe
    try:
        return config.load_recipe(path, sets, kind=kind)
    except RecipeError as exc:
        fail(str(exc))


def pretrain_objects(recipe: Path, sets: list[str], out: Path | None, resume: bool, dry_run: bool) -> None:
    """`cmcr pretrain` for a `method: recon` recipe (`--data` arrives as `data.path=...` in `sets`)."""
    from cmcr_core import config

    resolved = _load(recipe, sets, "recon")
    if dry_run:
        typer.echo(config.dump(resolved), nl=False)
        return
    setup_logging()
    from cmcr_core.recon_training import run_recon_pretraining

    out = out or Path("runs") / resolved.name
    print_run_done(run_or_fail(run_recon_pretraining, resolved, out, resume=resume, errors=(KeyError,)))


def _report(metrics: dict, out: Path) -> None:
    def fmt(entry: object) -> str:
        if isinstance(entry, dict):
            return f"{entry['mean']:.4f} ± {entry['std']:.4f}"
        return f"{entry:.4f}"

    voting = metrics["voting_mean"]
    if not isinstance(voting, dict):
        voting = {"mean": voting, "std": metrics["voting_std"]}
    console.print(
        f"[green]done[/]: overall accuracy {fmt(metrics['overall_accuracy'])}, voting (mean over votes) "
        f"{fmt(voting)}; {out / 'metrics.json'}"
    )


def finetune_objects(
    recipe: Path, sets: list[str], out: Path | None, weights: Path | None, seeds: int, dry_run: bool
) -> None:
    """`cmcr finetune` for a `task: classification` recipe: seeds S..S+seeds-1 (S = train.seed), one run
    folder each under `out`, metrics.json (mean +- std over seeds) in `out`."""
    from cmcr_core import config

    resolved = _load(recipe, sets, "classify")
    if dry_run:
        typer.echo(config.dump(resolved), nl=False)
        return
    setup_logging()
    from cmcr_core.object_classification import run_object_finetune

    if seeds < 1:
        fail(f"--seeds must be >= 1, got {seeds}")
    out = out or Path("runs") / resolved.name
    first = resolved.train.seed
    try:
        metrics = run_object_finetune(resolved, out, weights, range(first, first + seeds))
    except (ValueError, KeyError, FileExistsError, FileNotFoundError) as exc:
        fail(str(exc))
    _report(metrics, out)


def probe_objects(
    recipe: Path, sets: list[str], out: Path | None, weights: Path | None, seeds: int, dry_run: bool
) -> None:
    """`cmcr probe` for a `task: classification` recipe: linear classifier on frozen global features.
    One seed: metrics.json in `out`; several (S..S+seeds-1): one folder each, mean +- std in `out`."""
    from cmcr_core import config

    resolved = _load(recipe, sets, "classify")
    if dry_run:
        typer.echo(config.dump(resolved), nl=False)
        return
    if seeds < 1:
        fail(f"--seeds must be >= 1, got {seeds}")
    setup_logging()
    from cmcr_core.object_classification import run_object_probe, run_object_probe_seeds

    out = out or Path("runs") / resolved.name
    first = resolved.train.seed
    try:
        if seeds == 1:
            metrics = run_object_probe(resolved, out, weights)
        else:
            metrics = run_object_probe_seeds(resolved, out, weights, range(first, first + seeds))
    except (ValueError, KeyError, FileNotFoundError) as exc:
        fail(str(exc))
    _report(metrics, out)


def prepare_objects(
    out: Path = typer.Option(..., "--out", help="Output folder (synthetic layouts) or targets file (.npz)."),
    synthetic: bool = typer.Option(
        False, "--synthetic", help="Write synthetic objects in every layout (and OUT/teacher_targets.npz)."
    ),
    targets_from: Path = typer.Option(
        None,
        "--targets-from",
        help="ShapeNet-55 root (ShapeNet-55/, shapenet_pc/, shapenet_img/): write "
        "teacher targets for its objects into --out (.npz).",
    ),
    teacher: Path = typer.Option(
        None, "--teacher", help="LOCAL image-teacher file (ResNet / cmcr-teacher); default: TinyImageTeacher."
    ),
    text_embeddings: Path = typer.Option(
        None,
        "--text-embeddings",
        help=".npy, one row per class (classes x D); default: random class vectors.",
    ),
    img_dim: int = typer.Option(32, "--img-dim", help="TinyImageTeacher output size (no --teacher)."),
    text_dim: int = typer.Option(24, "--text-dim", help="Stand-in text vector size (no --text-embeddings)."),
    views: int = typer.Option(1, "--views", help="Image augmentations stored per object."),
    image_size: int = typer.Option(224, "--image-size", help="Teacher input size (square)."),
    train_per_class: int = typer.Option(16, "--train-per-class", help="--synthetic: train objects/class."),
    test_per_class: int = typer.Option(4, "--test-per-class", help="--synthetic: test objects per class."),
    points: int = typer.Option(1024, "--points", help="--synthetic: points per object."),
    render_size: int = typer.Option(32, "--render-size", help="--synthetic: render size in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of objects, stand-in teachers and view augmentations."),
) -> None:
    """Write synthetic objects (ShapeNet-55, ScanObjectNN, ModelNet40 layouts) and/or ReCon targets."""
    if not synthetic and targets_from is None:
        fail("nothing to do: pass --synthetic and/or --targets-from ROOT")
    root = targets_from
    if synthetic:
        from cmcr_core.data.objects import write_synthetic_object_datasets

        if out.suffix == ".npz":
            fail(f"--synthetic writes a folder; --out {out} looks like a targets file")
        try:
            layout = write_synthetic_object_datasets(
                out, train_per_class, test_per_class, points, seed, image_size=render_size
            )
        except (ValueError, OSError) as exc:
            fail(str(exc))
        console.print("wrote synthetic objects: " + ", ".join(f"{k} {v}" for k, v in layout.items()))
        # the synthetic ShapeNet-55 copy gets its targets too, so one command readies a whole demo
        root, out = root or layout["shapenet55"], out / "teacher_targets.npz"
    _prepare_targets(root, out, teacher, text_embeddings, img_dim, text_dim, views, image_size, seed)


def _prepare_targets(
    root: Path,
    out: Path,
    teacher: Path | None,
    text_embeddings: Path | None,
    img_dim: int,
    text_dim: int,
    views: int,
    image_size: int,
    seed: int,
) -> None:
    import torch

    from cmcr_core.data.objects.prepare import prepare_teacher_targets
    from cmcr_core.models.tiny_image_teacher import TinyImageTeacher

    target_file = out if out.suffix == ".npz" else out / "teacher_targets.npz"
    if teacher is not None:
        from cmcr_core.models.teacher import load_teacher

        try:
            image_teacher = load_teacher(teacher)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            fail(f"--teacher {teacher}: {exc}")
        source = str(teacher)
    else:
        image_teacher = TinyImageTeacher(out_dim=img_dim, seed=seed)
        source = f"TinyImageTeacher(out_dim={img_dim}, seed={seed}) stand-in"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    image_teacher = image_teacher.to(device)
    try:
        targets = prepare_teacher_targets(
            root,
            target_file,
            image_teacher,
            text_embeddings,
            text_dim,
            views,
            image_size,
            seed,
            device=device,
        )
    except (ValueError, KeyError, FileNotFoundError) as exc:
        fail(str(exc))
    info = {
        "image_teacher": source,
        "text": str(text_embeddings) if text_embeddings else "class_text_vectors",
        "objects": len(targets.ids),
        "img": list(targets.img.shape),
        "text_shape": list(targets.text.shape),
    }
    console.print(f"wrote teacher targets {target_file}: {json.dumps(info)}")
