"""What every command shares: clean failures, the one error mapping of core calls, and printing reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from cmcr_core import api

T = TypeVar("T")

err_console = Console(stderr=True, soft_wrap=True)
console = Console()

# Options several commands declare the same way (Typer reads each declaration; reusing them is safe).
SET_OPTION = typer.Option(None, "--set", help="Override one key: section.key=value (repeatable).")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Print the resolved recipe and exit.")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu or cuda.")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line and exit with `code` (no traceback for user errors)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run_or_fail(entry: Callable[..., T], *args: Any, errors: tuple[type[Exception], ...] = (),
                **kwargs: Any) -> T:
    """Call a core entry point for the CLI: a NaN/Inf loss exits 3 with the engine's message (step, loss,
    last checkpoint); bad input (ValueError, recipe errors included, a used or missing folder, `errors`)
    exits 2 naming it."""
    non_finite = api.non_finite_loss_error()
    try:
        return entry(*args, **kwargs)
    except non_finite as exc:
        fail(str(exc), code=3)
    except (ValueError, FileExistsError, FileNotFoundError, *errors) as exc:
        fail(str(exc))


def load_or_fail(recipe: Any, sets: list[str], kinds: tuple[str, ...], dry_run: bool) -> Any:
    """The resolved recipe of a training command (a recipe error exits 2); None after `--dry-run` printed
    it."""
    try:
        resolved = api.load_recipe(recipe, sets, kinds=kinds)
    except api.RecipeError as exc:
        fail(str(exc))
    if dry_run:
        typer.echo(api.dump_recipe(resolved), nl=False)
        return None
    setup_logging()
    return resolved


def with_option(sets: list[str] | None, key: str, value: Any) -> list[str]:
    """`--set` assignments plus `key=value` when a dedicated option (e.g. `--data`) gave one."""
    return [*(sets or []), *([f"{key}={value}"] if value is not None else [])]


def print_report(report: Any) -> None:
    """Print a core ``Report``: rich tables (first column left-aligned) and lines, in order."""
    from rich.table import Table

    for block in report.blocks:
        if hasattr(block, "columns"):
            table = Table(title=block.title)
            for i, column in enumerate(block.columns):
                table.add_column(column, justify="left" if i == 0 else "right")
            for row in block.rows:
                table.add_row(*row)
            console.print(table)
        else:
            console.print(block.text, highlight=block.highlight)


def print_run_done(run: Any) -> None:
    """The last line of a pretraining run: final step, total loss, run folder."""
    last = run.result.records[-1] if run.result.records else {}
    console.print(
        f"[green]done[/]: step {run.result.position.step}, total loss {last.get('total', float('nan')):.4f}; "
        f"run folder {run.out_dir} (checkpoint.pt, metrics.jsonl, recipe.yaml)"
    )


def setup_logging(level: str = "INFO") -> None:
    """Route the core's `logging` records through rich (once)."""
    import logging

    from rich.logging import RichHandler

    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=err_console, show_path=False, rich_tracebacks=False))
    root.setLevel(level)
