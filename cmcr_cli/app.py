"""Root of the `cmcr` Typer application: one sub-application per command group."""

from __future__ import annotations

import typer

from cmcr_cli import prepare, pretrain, recipe

app = typer.Typer(
    name="cmcr",
    help="Pretrain 3D LiDAR encoders by distilling 2D image models, then measure what they learned.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(prepare.app, name="prepare")
app.add_typer(recipe.app, name="recipe")
app.command("pretrain")(pretrain.pretrain)


def main() -> None:
    app()
