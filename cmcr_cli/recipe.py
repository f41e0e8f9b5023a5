"""`cmcr recipe ...`: list the packaged recipes, inspect and validate recipes without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import RECIPE_HELP, SET_OPTION, console, fail, run_or_fail
from cmcr_cli.grammar import CmcrCommand, CmcrGroup
from cmcr_core import api

app = typer.Typer(cls=CmcrGroup, help="List, inspect and validate recipes.", no_args_is_help=True)


@app.command("list", cls=CmcrCommand)
def list_command(
    paths: bool = typer.Option(False, "--paths", help="Also show where each recipe file is."),
) -> None:
    """Every recipe shipped with cmcr: its name (what --recipe takes), kind, method and purpose."""
    from rich import box
    from rich.table import Table

    rows = run_or_fail(api.list_recipes)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for i, column in enumerate(("recipe", "kind", "method")):  # never cut: the purpose column wraps instead
        table.add_column(column, no_wrap=True, min_width=max(len(column), *(len(r[i]) for r in rows)))
    for column in ("purpose", *(("file",) if paths else ())):
        table.add_column(column, overflow="fold", ratio=1)
    for row in rows:
        table.add_row(row.name, row.kind, row.method, row.purpose, *((str(row.path),) if paths else ()))
    console.print(table)
    console.print("run one with `--recipe NAME` (e.g. `cmcr pretrain --recipe ppkt_synthetic`); "
                  "`cmcr recipe show --recipe NAME` prints everything it sets", highlight=False)


@app.command("show", cls=CmcrCommand)
def show(
    recipe: Path = typer.Option(
        None, "--recipe", "-r", help=f"{RECIPE_HELP} Omit for the built-in defaults."),
    set_: list[str] = SET_OPTION,
    kind: str = typer.Option(
        "auto", "--kind", help="auto (from the file), " + ", ".join(api.RECIPE_KINDS)
        + ": validate against this schema."
    ),
) -> None:
    """Print the fully resolved recipe (defaults <- file <- --set) as YAML; fails on a bad key or value."""
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
