"""What every command shares: clean failures, the one error mapping of core calls, and printing reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from cmcr_core import api

T = TypeVar("T")

err_console = Console(stderr=True, soft_wrap=True)
console = Console()

# Options several commands declare the same way (Typer reads each declaration; reusing them is safe).
# The grammar they follow is docs/cli.md (and cmcr_cli/grammar.py).
RECIPE_HELP = "Recipe: a YAML file, or the name of a packaged recipe (`cmcr recipe list`)."
SET_OPTION = typer.Option(None, "--set", help="Override one recipe key: section.key=value (repeatable).")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Check the recipe and its files, print it, stop.")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto (cuda when available), cpu, cuda or cuda:N.")
RUN_DEVICE_OPTION = typer.Option(
    None, "--device", help="auto, cpu, cuda or cuda:N (sets train.device; default: the recipe's).")
THREADS_OPTION = typer.Option(None, "--threads", help="Torch CPU threads of this process (default: torch's).")
RESUME_OPTION = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint.")
OVERWRITE_RUN_OPTION = typer.Option(
    False, "--overwrite", help="Delete a run already in --out and start again.")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace what --out already holds.")
BATCH_SIZE_OPTION = typer.Option(
    None, "--batch-size", help="Samples per step and process (sets data.batch_size; default: the recipe's).")
DATA_OPTION = typer.Option(None, "--data", help="Prepared folder (sets data.path).")


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


def load_or_fail(recipe: Any, sets: list[str], kinds: tuple[str, ...], dry_run: bool,
                 threads: int | None = None) -> Any:
    """The resolved recipe of a training command, its teacher files checked (a recipe error exits 2); None
    after `--dry-run` printed it. Otherwise logging is set up and torch gets `threads`."""
    try:
        resolved = api.load_recipe(recipe, sets, kinds=kinds, files=True)
    except api.RecipeError as exc:
        fail(str(exc))
    return ready(resolved, dry_run, threads)


def ready(resolved: Any, dry_run: bool, threads: int | None) -> Any:
    """After loading: print the recipe and return None for `--dry-run`; else set up logging and threads."""
    if dry_run:
        typer.echo(api.dump_recipe(resolved), nl=False)
        return None
    setup_logging()
    run_or_fail(api.set_threads, threads)
    return resolved


def with_option(sets: list[str] | None, key: str, value: Any) -> list[str]:
    """`--set` assignments plus `key=value` when a dedicated option (e.g. `--data`) gave one; a path is
    JSON-quoted so that any character survives the YAML reading of the value."""
    if value is None:
        return list(sets or [])
    text = json.dumps(str(value)) if isinstance(value, PurePath) else value
    return [*(sets or []), f"{key}={text}"]


def run_settings(sets: list[str] | None, device: str | None, batch_size: int | None,
                 **options: Any) -> list[str]:
    """`--set` assignments plus the run-setting flags: `--device` (train.device), `--batch-size`
    (data.batch_size) and `options` (recipe key with dots as "__" -> value; None = not given)."""
    out = with_option(with_option(sets, "train.device", device), "data.batch_size", batch_size)
    for key, value in options.items():
        out = with_option(out, key.replace("__", "."), value)
    return out


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
