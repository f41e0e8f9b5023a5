"""The one grammar of the command line (docs/cli.md): the options every command spells the same way, the
flags shown as flags, and one release of "renamed to" errors for the spellings of version 0.1.

* Inputs: a prepared folder is `--data`, a raw dataset (nuScenes tree, synthetic world, SemanticKITTI
  folder, ShapeNet-55 root) `--dataroot`, a checkpoint or teacher file `--weights`, a recipe `--recipe`.
* Outputs: `--out`; replacing an existing output is `--overwrite`.
* Run settings that depend on the machine are flags on every command that computes (`--device`,
  `--threads`, and `--batch-size` where there is a batch); everything else a recipe holds is `--set`.
* Sizes are WIDTHxHEIGHT.

`CmcrGroup` (the root and every group) and `CmcrCommand` (every command) render boolean flags without a
value placeholder (`--resume`, not `--resume <bool>`), and the root checks the arguments for an old
spelling before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from cmcr_core import api

__all__ = ["RENAMED", "CmcrCommand", "CmcrGroup", "old_spelling"]

# Spellings of version 0.1 -> what replaces them; they answer with an error through the 0.2 releases.
# A key "<positional>" means the command took its input as a positional argument.
POSITIONAL = "<positional>"
RENAMED: dict[str, dict[str, str]] = {
    "prepare info": {POSITIONAL: "--data DIR"},
    "prepare semantickitti": {"--root": "--dataroot"},
    "prepare objects": {"--targets-from": "--dataroot"},
    "recipe show": {POSITIONAL: "--recipe FILE_OR_NAME"},
    "teacher train": {"--world": "--dataroot", "--eval-world": "--eval-dataroot"},
    "teacher info": {POSITIONAL: "--weights FILE"},
    "teacher eval": {POSITIONAL: "--weights FILE", "--world": "--dataroot"},
    "analyze": {"--teacher-size": "--teacher-image-size (which takes WIDTHxHEIGHT; the old option took "
                                  "HEIGHTxWIDTH)"},
    "zeroshot": {"--teacher-file": "--teacher"},
    "demo": {"--force": "--overwrite"},
}


def _flags_without_placeholder(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value: show none
    return params


class CmcrCommand(TyperCommand):
    """A command whose help shows flags as flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_placeholder(super().get_params(ctx))


class CmcrGroup(TyperGroup):
    """A group whose help shows flags as flags; at the root it refuses old spellings with their new name."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_placeholder(super().get_params(ctx))

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        import sys

        argv = list(sys.argv[1:] if args is None else args)
        message = old_spelling(self, argv)
        if message is not None:
            from cmcr_cli.common import err_console

            err_console.print(f"[bold red]error:[/] {message}", highlight=False)
            if kwargs.get("standalone_mode", True):
                raise SystemExit(2)
            raise typer.Exit(2)
        return super().main(argv, *rest, **kwargs)


def old_spelling(root: Any, argv: list[str]) -> str | None:
    """The "renamed" message when `argv` uses a spelling of version 0.1, else None."""
    command, path, rest = root, [], list(argv)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        if rest[0] not in command.commands:
            return None  # let the parser report the unknown command
        command = command.commands[rest[0]]
        path.append(rest.pop(0))
    renamed = RENAMED.get(" ".join(path), {})
    if not renamed:
        return None
    options = {opt: param for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    i = 0
    while i < len(rest):
        token = rest[i]
        name = token.split("=", 1)[0]
        if token == "--":
            break
        if name in renamed:
            return _renamed(path, name, renamed[name])
        if token.startswith("-"):
            param = options.get(name)
            takes_value = param is not None and not getattr(param, "is_flag", False) and "=" not in token
            i += 2 if takes_value else 1
            continue
        if POSITIONAL in renamed and not any(p.param_type_name == "argument" for p in command.params):
            return (f"`cmcr {' '.join(path)}` takes its input as an option since cmcr 0.2: "
                    f"{renamed[POSITIONAL]} (got {token!r} as a positional argument)")
        i += 1
    return None


def _renamed(path: list[str], old: str, new: str) -> str:
    return f"`cmcr {' '.join(path)} {old}` was renamed to {new} in cmcr 0.2 (docs/cli.md lists every change)"


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cmcr {api.version()}")
        raise typer.Exit()


VERSION_OPTION = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                              help="Print the version of cmcr and exit.")
