"""Small helpers shared by the CLI commands: clean failures and recipe loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

T = TypeVar("T")

err_console = Console(stderr=True, soft_wrap=True)
console = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line and exit with `code` (no traceback for user errors)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run_or_fail(entry: Callable[..., T], *args: Any, errors: tuple[type[Exception], ...] = (),
                **kwargs: Any) -> T:
    """Call a core training entry point for the CLI: a NaN/Inf loss exits 3 with the engine's message (step,
    loss, last checkpoint); bad input (ValueError, a used or missing folder, `errors`) exits 2 naming it."""
    from cmcr_core.engine.loop import NonFiniteLossError

    try:
        return entry(*args, **kwargs)
    except NonFiniteLossError as exc:
        fail(str(exc), code=3)
    except (ValueError, FileExistsError, FileNotFoundError, *errors) as exc:
        fail(str(exc))


def print_run_done(run: Any) -> None:
    """The last line of a pretraining run: final step, total loss, run folder."""
    last = run.result.records[-1] if run.result.records else {}
    console.print(
        f"[green]done[/]: step {run.result.position.step}, total loss {last.get('total', float('nan')):.4f}; "
        f"run folder {run.out_dir} (checkpoint.pt, metrics.jsonl, recipe.yaml)"
    )


def load_recipe_or_fail(path: Path | None, sets: list[str] | None, kind_name: str = "pretrain"):
    """Resolve a recipe for the CLI; a RecipeError becomes a one-line error and exit code 2."""
    from cmcr_core import config
    from cmcr_core.config import RecipeError

    kinds = {"pretrain": config.PretrainRecipe, "teacher": config.TeacherTrainRecipe,
             "finetune": config.FinetuneRecipe}
    try:
        return config.load_recipe(path, sets or [], kind=kinds[kind_name])
    except RecipeError as exc:
        fail(str(exc))


def setup_logging(level: str = "INFO") -> None:
    """Route the core's `logging` records through rich (once)."""
    import logging

    from rich.logging import RichHandler

    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=err_console, show_path=False, rich_tracebacks=False))
    root.setLevel(level)
