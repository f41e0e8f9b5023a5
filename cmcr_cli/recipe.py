"""`cmcr recipe ...`: inspect and validate recipes without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import SET_OPTION, fail
from cmcr_core import api

app = typer.Typer(help="Inspect and validate recipes.", no_args_is_help=True)


@app.command("show")
def show(
    recipe: Path = typer.Argument(None, help="YAML recipe (overrides only); omit for the built-in defaults."),
    set_: list[str] = SET_OPTION,
    kind: str = typer.Option(
        "auto", "--kind", help="auto (from the file), " + ", ".join(api.RECIPE_KINDS)
        + ": validate against this schema."
    ),
) -> None:
    """Print the fully resolved recipe (defaults <- file <- --set) as YAML; fails on any invalid key."""
    sets = list(set_ or [])
    if kind != "auto" and kind not in api.RECIPE_KINDS:
        fail(f"--kind must be auto or one of {', '.join(api.RECIPE_KINDS)}, got {kind!r}")
    try:
        chosen = api.detect_recipe_kind(recipe, sets) if kind == "auto" else kind
    except api.RecipeError as exc:
        fail(str(exc))
    try:
        resolved = api.load_recipe(recipe, sets, kind=chosen)
    except api.RecipeError as exc:
        hint = "" if kind != "auto" else f" (read as a {chosen} recipe; pass --kind to choose another schema)"
        fail(f"{exc}{hint}")
    typer.echo(f"# {chosen} recipe, run by {api.RECIPE_KINDS[chosen].command}")
    typer.echo(api.dump_recipe(resolved), nl=False)
