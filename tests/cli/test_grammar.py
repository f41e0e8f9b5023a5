"""The one grammar of the command line (docs/cli.md), checked on the Typer application itself: input and
output option names, `--overwrite` wherever a command writes, `--device` / `--threads` wherever it
computes, flags rendered as flags, `--version`, required options marked required, and one clear
"renamed to" error per spelling of version 0.1 (with nothing written).

The command tree comes from `typer.main.get_command(app)`: what `cmcr <cmd> --help` shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_cli.grammar import POSITIONAL, RENAMED
from cmcr_core import __version__

runner = CliRunner()

# Written out here, independently of the code: what each command does (docs/cli.md's table).
WRITES = {"prepare synthetic", "prepare nuscenes", "prepare semantickitti", "prepare objects",
          "teacher train", "teacher eval", "pretrain", "finetune", "probe", "analyze", "analyze toy",
          "zeroshot", "demo"}
COMPUTES = {"prepare objects", "teacher train", "teacher eval", "pretrain", "finetune", "probe", "analyze",
            "zeroshot", "demo"}
CPU_ONLY = {"analyze toy"}  # computes on the CPU only: --threads, no --device
OLD_NAMES = {"--root", "--world", "--eval-world", "--targets-from", "--force", "--teacher-size",
             "--teacher-file"}


def commands() -> dict[str, Any]:
    """Every runnable command: 'prepare nuscenes' -> click command (a group with options counts too)."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            if path and any(p.param_type_name == "option" and p.name != "help" for p in command.params):
                found[" ".join(path)] = command
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


def options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_the_walk_finds_every_command():
    readers = {"prepare info", "recipe list", "recipe show", "teacher info"}
    assert WRITES | COMPUTES | readers <= set(commands())


def test_inputs_and_outputs_have_one_name_each():
    for name, command in commands().items():
        names = options(command)
        assert not names & OLD_NAMES, f"`cmcr {name}` still has {names & OLD_NAMES}"
        assert not [p for p in command.params if p.param_type_name == "argument"], \
            f"`cmcr {name}` takes a positional argument; inputs are options"
        if name in WRITES:
            assert {"--out", "--overwrite"} <= names, f"`cmcr {name}` writes: it needs --out and --overwrite"
        if name in COMPUTES:
            assert {"--device", "--threads"} <= names, f"`cmcr {name}` computes: --device and --threads"
        if name in CPU_ONLY:
            assert "--threads" in names
    assert "--dataroot" in options(commands()["prepare semantickitti"])
    assert "--data" in options(commands()["prepare info"])


def test_every_boolean_option_is_a_flag_and_help_shows_no_placeholder():
    for name, command in commands().items():
        for param in command.params:
            if param.param_type_name == "option" and isinstance(param.default, bool):
                assert param.is_flag, f"`cmcr {name} {param.opts[0]}` takes a value"
        result = runner.invoke(app, [*name.split(), "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, f"`cmcr {name} --help` shows a <bool> placeholder"


def test_a_flag_given_a_value_is_an_error():
    result = runner.invoke(app, ["pretrain", "--recipe", "ppkt_synthetic", "--dry-run", "true"])
    assert result.exit_code == 2 and "unexpected extra argument" in result.output.lower()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"cmcr {__version__}"
    assert __version__ == "0.2.0"


def test_analyze_marks_its_required_options_and_its_subcommand_needs_none(tmp_path: Path):
    analyze = commands()["analyze"]
    required = {p.opts[0] for p in analyze.params if getattr(p, "required", False)}
    assert required == {"--weights", "--data", "--out"}
    result = runner.invoke(app, ["analyze", "--data", "d", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Missing option '--weights'" in result.output
    result = runner.invoke(app, ["analyze", "toy", "--clusters", "2"])  # reaches the toy's own check
    assert result.exit_code == 2 and "--clusters must be 1 or 3" in result.output


def test_recipe_show_takes_the_recipe_as_an_option():
    result = runner.invoke(app, ["recipe", "show", "--recipe", "ppkt_synthetic"])
    assert result.exit_code == 0 and result.output.startswith("# pretrain recipe")


# One case per spelling of 0.1: (command, old spelling), arguments using it, the new name the error gives.
OLD_SPELLINGS = [
    (("prepare info", POSITIONAL), ["prepare", "info", "PREPARED"], "--data DIR"),
    (("prepare semantickitti", "--root"), ["prepare", "semantickitti", "--root", "K", "--out", "O"],
     "--dataroot"),
    (("prepare objects", "--targets-from"), ["prepare", "objects", "--targets-from", "S", "--out", "t.npz"],
     "--dataroot"),
    (("recipe show", POSITIONAL), ["recipe", "show", "ppkt_synthetic"], "--recipe FILE_OR_NAME"),
    (("teacher train", "--world"),
     ["teacher", "train", "--recipe", "semantic_teacher_synthetic", "--world", "W", "--dry-run"],
     "--dataroot"),
    (("teacher train", "--eval-world"),
     ["teacher", "train", "--recipe", "semantic_teacher_synthetic", "--eval-world", "W"], "--eval-dataroot"),
    (("teacher info", POSITIONAL), ["teacher", "info", "run/teacher.pt"], "--weights FILE"),
    (("teacher eval", POSITIONAL), ["teacher", "eval", "run/teacher.pt", "--dataroot", "W"],
     "--weights FILE"),
    (("teacher eval", "--world"), ["teacher", "eval", "--weights", "t.pt", "--world", "W"], "--dataroot"),
    (("analyze", "--teacher-size"),
     ["analyze", "--weights", "c.pt", "--data", "P", "--out", "O", "--teacher-size", "224x416"],
     "--teacher-image-size (which takes WIDTHxHEIGHT"),
    (("zeroshot", "--teacher-file"),
     ["zeroshot", "--weights", "c.pt", "--data", "P", "--out", "O", "--teacher-file", "t.pt"], "--teacher"),
    (("demo", "--force"), ["demo", "--quick", "--out", "O", "--force"], "--overwrite"),
]


def test_every_old_spelling_has_a_case():
    expected = {(path, old) for path, renamed in RENAMED.items() for old in renamed}
    assert {case for case, _, _ in OLD_SPELLINGS} == expected


@pytest.mark.parametrize(("case", "args", "new"), OLD_SPELLINGS,
                         ids=[" ".join(case) for case, _, _ in OLD_SPELLINGS])
def test_an_old_spelling_exits_2_naming_the_new_one_and_writes_nothing(case, args, new, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert new in message and "cmcr 0.2" in message and "Traceback" not in message
    assert ("renamed to" if case[1] != POSITIONAL else "takes its input as an option") in message
    assert list(tmp_path.iterdir()) == []


def test_an_option_value_that_looks_like_an_old_spelling_is_not_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `--set` takes a value: the checker must skip it, not read it as input
    result = runner.invoke(app, ["recipe", "show", "--set", "optim.lr=0.1", "--recipe", "ppkt_synthetic"])
    assert result.exit_code == 0, result.output


def test_the_new_spellings_parse_where_the_old_ones_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["teacher", "train", "--recipe", "semantic_teacher_synthetic", "--dataroot",
                                 "W", "--eval-dataroot", "V", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert 'world: W' in result.output and "eval_worlds: [V]" in result.output
    assert list(tmp_path.iterdir()) == []
