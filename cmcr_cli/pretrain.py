"""`cmcr pretrain`: train a 3D student from a frozen 2D teacher."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import load_recipe_or_fail, print_run_done, run_or_fail, setup_logging


def pretrain(
    recipe: Path = typer.Option(..., "--recipe", "-r", help="YAML recipe, e.g. recipes/nuscenes.yaml."),
    data: Path = typer.Option(None, "--data", help="Prepared folder (sets data.path)."),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/<recipe name>)."),
    set_: list[str] = typer.Option(None, "--set", help="Override one key: section.key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and exit."),
) -> None:
    """Pretrain a MinkUNet student (PPKT, SLidR, ...) as the recipe says. Works under torchrun."""
    sets = list(set_ or [])
    if data is not None:
        sets.append(f"data.path={data}")
    from cmcr_cli.objects import is_recon_recipe, pretrain_objects

    if is_recon_recipe(recipe):  # ReCon on object point clouds: its own recipe schema and runner
        pretrain_objects(recipe, sets, out, resume, dry_run)
        return
    resolved = load_recipe_or_fail(recipe, sets)
    from cmcr_core import config

    if dry_run:
        typer.echo(config.dump(resolved), nl=False)
        return
    setup_logging()
    from cmcr_core.pretrain import run_pretraining

    out = out or Path("runs") / resolved.name
    print_run_done(run_or_fail(run_pretraining, resolved, out, resume=resume))
