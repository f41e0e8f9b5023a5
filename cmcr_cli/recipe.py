"""`cmcr recipe ...`: inspect and validate recipes without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import load_recipe_or_fail

app = typer.Typer(help="Inspect and validate recipes.", no_args_is_help=True)


@app.command("show")
def show(
    recipe: Path = typer.Argument(None, help="YAML recipe (overrides only); omit for the built-in defaults."),
    set_: list[str] = typer.Option(None, "--set", help="Override one key: section.key=value (repeatable)."),
) -> None:
    """Print the fully resolved recipe (defaults <- file <- --set) as YAML; fails on any invalid key."""
    from cmcr_core.recipes import dump

    resolved = load_recipe_or_fail(recipe, set_)
    typer.echo(dump(resolved), nl=False)
