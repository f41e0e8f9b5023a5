"""The command line stays a thin shell: every `cmcr` command's function body (its docstring aside) is at most
30 lines, and the CLI imports nothing of the core but `cmcr_core.api`.

The commands are taken from the Typer application itself (every registered command and group callback,
recursively), so a new command is checked without being listed here.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cmcr_cli.app import app

MAX_BODY_LINES = 30
CLI = Path(__file__).resolve().parents[2] / "cmcr_cli"


def command_functions(typer_app: Any, path: str = "cmcr") -> Iterator[tuple[str, Any]]:
    info = typer_app.registered_callback
    if info is not None and info.callback is not None:
        yield path, info.callback
    for command in typer_app.registered_commands:
        yield f"{path} {command.name or command.callback.__name__}", command.callback
    for group in typer_app.registered_groups:
        yield from command_functions(group.typer_instance, f"{path} {group.name}")


def body_lines(function: Any) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    node = tree.body[0]
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return 0 if not body else body[-1].end_lineno - body[0].lineno + 1


def test_the_walk_finds_every_command():
    names = {name for name, _ in command_functions(app)}
    assert {"cmcr pretrain", "cmcr finetune", "cmcr probe", "cmcr zeroshot", "cmcr demo", "cmcr analyze",
            "cmcr analyze toy", "cmcr prepare synthetic", "cmcr prepare objects", "cmcr recipe show",
            "cmcr teacher train"} <= names


def test_every_command_body_is_at_most_30_lines():
    long = {name: body_lines(f) for name, f in command_functions(app) if body_lines(f) > MAX_BODY_LINES}
    assert not long, f"command bodies over {MAX_BODY_LINES} lines (move the logic into cmcr_core): {long}"


def test_the_cli_imports_only_the_api_of_the_core():
    wrong = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module == "cmcr_core":
                names = [f"cmcr_core.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            wrong += [f"{path.name}:{node.lineno} {n}" for n in names
                      if n.startswith("cmcr_core") and n != "cmcr_core.api"]
    assert not wrong, f"the CLI reaches past cmcr_core.api: {wrong}"
