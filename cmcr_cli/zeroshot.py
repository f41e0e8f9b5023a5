"""`cmcr zeroshot`: annotation-free segmentation with class (text or prototype) embeddings, or (`--objects`)
zero-shot classification of object clouds with a ReCon pretraining."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import (
    DEVICE_OPTION,
    OVERWRITE_OPTION,
    RECIPE_HELP,
    SET_OPTION,
    THREADS_OPTION,
    print_report,
    run_or_fail,
    setup_logging,
    with_option,
)
from cmcr_core import api


def zeroshot(
    weights: Path = typer.Option(None, "--weights", help="Pretraining checkpoint (--objects: omit for a "
                                 "random initialisation, the chance baseline)."),
    data: Path = typer.Option(..., "--data", help="Prepared folder (--objects: the object layout root)."),
    objects: bool = typer.Option(False, "--objects", help="Classify object clouds (ReCon) with --recipe."),
    recipe: Path = typer.Option(None, "--recipe", "-r", help=f"--objects: {RECIPE_HELP} A task: "
                                "classification recipe, e.g. recon_zeroshot_modelnet40."),
    set_: list[str] = SET_OPTION,
    out: Path = typer.Option(None, "--out", help="Output folder (default: runs/zeroshot_<run name>)."),
    split: str = typer.Option("val", "--split", help="Evaluated split (whole)."),
    text_embeddings: Path = typer.Option(
        None, "--text-embeddings", help="Class embeddings, one row per class: .npy (16, D) or (16, P, D), "
        ".npz ('embeddings') or .pt; --objects: .npy (C, D) or (C, P, D) in the dataset's class order."
    ),
    clip: Path = typer.Option(None, "--clip", help="Local CLIP directory (its text tower encodes prompts)."),
    templates: str = typer.Option("clip2scene", "--templates", help="clip2scene (85), openscene, imagenet."),
    class_names: str = typer.Option("clip2scene", "--class-names", help="clip2scene, openscene or nuscenes."),
    prototypes: str = typer.Option(
        None, "--prototypes", help="'teacher': the teacher file's class prototypes (default when it has "
        "them); 'data': class means of the teacher's features on labelled points (an oracle)."
    ),
    teacher: Path = typer.Option(None, "--teacher", help="Teacher file holding the prototypes."),
    prototype_split: str = typer.Option("train", "--prototype-split", help="Split of --prototypes data."),
    per_class: int = typer.Option(5000, "--per-class", help="Points per class for --prototypes data."),
    batch_size: int = typer.Option(4, "--batch-size", help="Scans per forward pass."),
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
) -> None:
    """Cosine between point features and class embeddings, argmax, mIoU with the fine-tuning evaluator; with
    --objects, one feature per object cloud and the overall accuracy."""
    setup_logging()
    run_or_fail(api.set_threads, threads)
    if objects:
        sets = with_option(set_, "data.path", data)
        print_report(run_or_fail(api.zeroshot_objects, recipe, sets, weights, out, text_embeddings, clip,
                                 device, overwrite=overwrite, errors=(ImportError,)))
        return
    run = run_or_fail(api.zeroshot, weights, data, out, split, batch_size, device, overwrite=overwrite,
                      errors=(ImportError,), text_embeddings=text_embeddings, clip=clip, templates=templates,
                      class_names=class_names, prototypes=prototypes, teacher_file=teacher,
                      prototype_split=prototype_split, per_class=per_class)
    print_report(run.report())
