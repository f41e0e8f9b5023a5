"""`cmcr recipe ...`: inspect and validate recipes without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import fail

app = typer.Typer(help="Inspect and validate recipes.", no_args_is_help=True)

# --kind value -> (config class name, the command that runs such a recipe)
KINDS = {
    "pretrain": ("PretrainRecipe", "cmcr pretrain"),
    "finetune": ("FinetuneRecipe", "cmcr finetune / cmcr probe"),
    "teacher": ("TeacherTrainRecipe", "cmcr teacher train"),
    "recon": ("ReconRecipe", "cmcr pretrain (method: recon)"),
    "classification": ("ObjectClassifyRecipe", "cmcr finetune / cmcr probe (task: classification)"),
}


def detect_kind(path: Path | None, sets: list[str]) -> str:
    """The recipe kind of a file: `method: recon` and `task: classification` say so; otherwise the first of
    pretrain, finetune, teacher whose schema accepts every key (an invalid file reports as pretrain)."""
    from cmcr_core import config
    from cmcr_core.config import RecipeError, read_overrides

    if path is None:
        return "pretrain"
    try:
        top = read_overrides(path)
    except RecipeError as exc:
        fail(str(exc))
    if top.get("method") == "recon":
        return "recon"
    if top.get("task") == "classification":
        return "classification"
    for kind in ("pretrain", "finetune", "teacher"):
        try:
            config.load_recipe(path, sets, kind=getattr(config, KINDS[kind][0]))
        except RecipeError:
            continue
        return kind
    return "pretrain"


@app.command("show")
def show(
    recipe: Path = typer.Argument(None, help="YAML recipe (overrides only); omit for the built-in defaults."),
    set_: list[str] = typer.Option(None, "--set", help="Override one key: section.key=value (repeatable)."),
    kind: str = typer.Option(
        "auto", "--kind", help="auto (from the file), " + ", ".join(KINDS) + ": validate against this schema."
    ),
) -> None:
    """Print the fully resolved recipe (defaults <- file <- --set) as YAML; fails on any invalid key."""
    from cmcr_core import config
    from cmcr_core.config import RecipeError, dump

    sets = list(set_ or [])
    if kind != "auto" and kind not in KINDS:
        fail(f"--kind must be auto or one of {', '.join(KINDS)}, got {kind!r}")
    chosen = detect_kind(recipe, sets) if kind == "auto" else kind
    try:
        resolved = config.load_recipe(recipe, sets, kind=getattr(config, KINDS[chosen][0]))
    except RecipeError as exc:
        hint = "" if kind != "auto" else f" (read as a {chosen} recipe; pass --kind to choose another schema)"
        fail(f"{exc}{hint}")
    typer.echo(f"# {chosen} recipe, run by {KINDS[chosen][1]}")
    typer.echo(dump(resolved), nl=False)
