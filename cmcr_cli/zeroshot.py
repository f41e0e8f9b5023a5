"""`cmcr zeroshot`: annotation-free segmentation with class (text or prototype) embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cmcr_cli.common import console, fail, setup_logging


def zeroshot(
    weights: Path = typer.Option(..., "--weights", help="Pretraining checkpoint."),
    data: Path = typer.Option(..., "--data", help="Prepared folder."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: runs/zeroshot_<run name>)."),
    split: str = typer.Option("val", "--split", help="Evaluated split (whole)."),
    text_embeddings: Path = typer.Option(
        None, "--text-embeddings", help="Class embeddings, one row per class: .npy (16, D) or (16, P, D), "
        ".npz ('embeddings') or .pt."
    ),
    clip: Path = typer.Option(None, "--clip", help="Local CLIP directory (its text tower encodes prompts)."),
    templates: str = typer.Option("clip2scene", "--templates", help="clip2scene (85), openscene, imagenet."),
    class_names: str = typer.Option("clip2scene", "--class-names", help="clip2scene, openscene or nuscenes."),
    prototypes: str = typer.Option(
        None, "--prototypes", help="'teacher': the teacher file's class prototypes (default when it has "
        "them); 'data': class means of the teacher's features on labelled points (an oracle)."
    ),
    teacher_file: Path = typer.Option(None, "--teacher-file", help="Teacher file holding the prototypes."),
    prototype_split: str = typer.Option("train", "--prototype-split", help="Split of --prototypes data."),
    per_class: int = typer.Option(5000, "--per-class", help="Points per class for --prototypes data."),
    batch_size: int = typer.Option(4, "--batch-size", help="Scans per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Cosine between point features and class embeddings, argmax, mIoU with the fine-tuning evaluator."""
    if sum(x is not None for x in (text_embeddings, clip)) + (prototypes is not None) > 1:
        fail("choose one of --text-embeddings, --clip and --prototypes")
    setup_logging()
    from cmcr_core.pretrain import resolve_device
    from cmcr_core.zeroshot import run_zeroshot

    out = out or Path("runs") / f"zeroshot_{weights.parent.name}"
    options: dict[str, Any] = {
        "text_embeddings": text_embeddings, "clip": clip, "templates": templates, "class_names": class_names,
        "prototypes": prototypes, "teacher_file": teacher_file, "prototype_split": prototype_split,
        "per_class": per_class,
    }
    try:
        run = run_zeroshot(weights, data, out, split=split, batch_size=batch_size,
                           device=resolve_device(device), **options)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    _print_report(run)


def _print_report(run: Any) -> None:
    from rich.table import Table

    m = run.metrics
    source = run.classes.source
    table = Table(title=f"zero-shot, {m.split}: {m.num_scans} scans, classifier {source['kind']}")
    for column in ("class", "IoU %", "TP", "FP", "FN", "GT points"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in m.class_rows():
        iou = "absent" if row["iou"] is None else f"{100 * row['iou']:.2f}"
        table.add_row(row["class"], iou, *(str(row[k]) for k in ("tp", "fp", "fn", "gt_points")))
    console.print(table)
    console.print(f"[bold]mIoU {100 * m.miou:.2f}[/] over {len(m.present)} present classes")
    if m.absent:
        console.print(f"absent classes (not in the mean): {', '.join(m.absent)}")
    if source.get("never_predicted"):
        console.print(f"never predicted (no embedding): {', '.join(source['never_predicted'])}")
    console.print(f"results in {run.out_dir}/metrics.json, classifier in {run.out_dir}/class_embeddings.npy",
                  highlight=False)
