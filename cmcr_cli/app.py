"""Root of the `cmcr` Typer application: one sub-application per command group."""

from __future__ import annotations

import typer

from cmcr_cli import analyze as analyze_cli
from cmcr_cli import demo as demo_cli
from cmcr_cli import finetune as finetune_cli
from cmcr_cli import prepare, pretrain, recipe
from cmcr_cli import teacher as teacher_cli
from cmcr_cli import zeroshot as zeroshot_cli
from cmcr_cli.grammar import VERSION_OPTION, CmcrCommand, CmcrGroup

app = typer.Typer(
    name="cmcr",
    cls=CmcrGroup,
    help="Pretrain 3D LiDAR encoders by distilling 2D image models, then measure what they learned. "
    "The options follow one grammar: docs/cli.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(version: bool = VERSION_OPTION) -> None:
    """Pretrain 3D LiDAR encoders by distilling 2D image models, then measure what they learned."""


app.add_typer(prepare.app, name="prepare")
app.add_typer(recipe.app, name="recipe")
app.add_typer(teacher_cli.app, name="teacher")
app.command("pretrain", cls=CmcrCommand)(pretrain.pretrain)
app.command("finetune", cls=CmcrCommand)(finetune_cli.finetune)
app.command("probe", cls=CmcrCommand)(finetune_cli.probe)
app.add_typer(analyze_cli.app, name="analyze")
app.command("zeroshot", cls=CmcrCommand)(zeroshot_cli.zeroshot)
app.command("demo", cls=CmcrCommand)(demo_cli.demo)


def main() -> None:
    app()
