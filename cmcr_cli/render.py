"""`cmcr render`: a picture of a prepared scan, a prediction on it or a pretrained feature space."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import DEVICE_OPTION, OVERWRITE_OPTION, THREADS_OPTION, print_report, run_or_fail
from cmcr_core import api


def render(
    data: Path = typer.Option(..., "--data", help="Prepared folder (nuScenes or SemanticKITTI)."),
    out: Path = typer.Option(..., "--out", help="The picture to write (.png)."),
    sample: str = typer.Option("0", "--sample", help="A sample token, or an index into the split."),
    split: str = typer.Option(None, "--split", help="Split of the sample (default: the run's val split, "
                              "else val)."),
    weights: Path = typer.Option(
        None, "--weights", help="A fine-tuned run or checkpoint (truth | prediction | error), or a "
        "pretraining checkpoint (its point features as colours)."),
    extent: float = typer.Option(40.0, "--extent", help="Half-width of the bird's-eye views in metres."),
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
) -> None:
    """Bird's-eye views coloured by class, prediction, error or feature, and the points on each camera."""
    run_or_fail(api.set_threads, threads)
    result = run_or_fail(api.render, data, out, sample, split, weights, device, overwrite=overwrite,
                         extent=extent, errors=(KeyError,))
    print_report(result.report())
