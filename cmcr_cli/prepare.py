"""`cmcr prepare ...`: write synthetic worlds and turn datasets into prepared shards."""

from __future__ import annotations

import typer

app = typer.Typer(help="Write synthetic worlds and prepare datasets.", no_args_is_help=True)
