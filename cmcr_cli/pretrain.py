"""`cmcr pretrain`: train a 3D student from a frozen 2D teacher, or ReCon on objects (`method: recon`)."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import (
    BATCH_SIZE_OPTION,
    DATA_OPTION,
    DRY_RUN_OPTION,
    OVERWRITE_RUN_OPTION,
    RECIPE_HELP,
    RESUME_OPTION,
    RUN_DEVICE_OPTION,
    SET_OPTION,
    THREADS_OPTION,
    load_or_fail,
    print_run_done,
    run_or_fail,
    run_settings,
)
from cmcr_core import api


def pretrain(
    recipe: Path = typer.Option(..., "--recipe", "-r", help=f"{RECIPE_HELP} E.g. nuscenes."),
    data: Path = DATA_OPTION,
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/<recipe name>)."),
    set_: list[str] = SET_OPTION,
    resume: bool = RESUME_OPTION,
    overwrite: bool = OVERWRITE_RUN_OPTION,
    device: str = RUN_DEVICE_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    threads: int = THREADS_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Pretrain a MinkUNet student (PPKT, SLidR, CMCR, ...) as the recipe says. Works under torchrun."""
    sets = run_settings(set_, device, batch_size, data__path=data)
    resolved = load_or_fail(recipe, sets, ("pretrain", "recon"), dry_run, threads)
    if resolved is not None:
        print_run_done(run_or_fail(api.pretrain, resolved, out, resume=resume, overwrite=overwrite,
                                   errors=(KeyError,)))
