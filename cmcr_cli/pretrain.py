"""`cmcr pretrain`: train a 3D student from a frozen 2D teacher, or ReCon on objects (`method: recon`)."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import DRY_RUN_OPTION, SET_OPTION, load_or_fail, print_run_done, run_or_fail, with_option
from cmcr_core import api


def pretrain(
    recipe: Path = typer.Option(..., "--recipe", "-r", help="YAML recipe, e.g. recipes/nuscenes.yaml."),
    data: Path = typer.Option(None, "--data", help="Prepared folder (sets data.path)."),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/<recipe name>)."),
    set_: list[str] = SET_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Pretrain a MinkUNet student (PPKT, SLidR, ...) as the recipe says. Works under torchrun."""
    resolved = load_or_fail(recipe, with_option(set_, "data.path", data), ("pretrain", "recon"), dry_run)
    if resolved is not None:
        print_run_done(run_or_fail(api.pretrain, resolved, out, resume=resume, errors=(KeyError,)))
