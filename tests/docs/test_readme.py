"""The README and the docs against the real command line: every `cmcr` command line they show names an
existing subcommand and only options that subcommand has; the quick start is the two commands `.ci/run`
runs; every relative link points at a file that exists.

The command tree comes from the Typer app itself (`typer.main.get_command`), the independent source of
truth for what `cmcr <cmd> --help` prints.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from cmcr_cli.app import app

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, ROOT / "docs" / "recipes.md", ROOT / "docs" / "reproduce.md"]
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def shell_blocks(text: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(text) if m["lang"] in ("bash", "sh", "")]


def command_lines(block: str) -> list[list[str]]:
    """Token lists of the `cmcr ...` invocations in a shell block, from the word after `cmcr`
    (or after `-m cmcr_cli` for torchrun); continuation lines are joined, `#` comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        for part in re.split(r"&&|;|\|", line):
            try:
                tokens = shlex.split(part, comments=True)
            except ValueError:  # an unbalanced quote is a documentation error too
                raise AssertionError(f"cannot parse shell line: {part!r}") from None
            if "cmcr" in tokens[:1]:
                found.append(tokens[1:])
            elif "cmcr_cli" in tokens and tokens[tokens.index("cmcr_cli") - 1] == "-m":
                found.append(tokens[tokens.index("cmcr_cli") + 1:])
    return found


def is_group(command: Any) -> bool:
    return hasattr(command, "commands")  # Typer vendors click: duck-type its Group


def resolve(root: Any, tokens: list[str]) -> tuple[str, Any, list[str]]:
    """Walk subcommand names down the group tree; returns (path, command, remaining tokens)."""
    command, path = root, ["cmcr"]
    tokens = list(tokens)
    while is_group(command) and tokens and not tokens[0].startswith("-"):
        name = tokens.pop(0)
        if name not in command.commands:
            known = sorted(command.commands)
            raise AssertionError(f"`{' '.join(path)} {name}`: no such command (has {known})")
        command, path = command.commands[name], [*path, name]
    return " ".join(path), command, tokens


def unknown_options(command: Any, tokens: list[str]) -> list[str]:
    known = {"--help"}
    for param in command.params:
        known.update(param.opts)
        known.update(param.secondary_opts)
    flags = [t.split("=", 1)[0] for t in tokens if t.startswith("-") and not re.fullmatch(r"-\d.*", t)]
    return [f for f in flags if f not in known]


@pytest.fixture(scope="module")
def cli() -> Any:
    return typer.main.get_command(app)


def documented_commands() -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        for block in shell_blocks(page.read_text()):
            out.extend((page.name, tokens) for tokens in command_lines(block))
    return out


def test_every_documented_command_and_option_exists(cli):
    commands = documented_commands()
    assert len(commands) > 40  # the pages are full of examples; a parser that finds none must fail
    errors = []
    for page, tokens in commands:
        try:
            path, command, rest = resolve(cli, tokens)
        except AssertionError as exc:
            errors.append(f"{page}: {exc}")
            continue
        if is_group(command) and not command.params and "--help" not in rest:
            errors.append(f"{page}: `{path}` is a group; a subcommand is missing in {tokens}")
        bad = unknown_options(command, rest)
        if bad:
            errors.append(f"{page}: `{path}` has no option(s) {bad} (line: cmcr {' '.join(tokens)})")
    assert not errors, "\n".join(errors)


def test_every_subcommand_has_an_example_in_the_readme(cli):
    shown = {resolve(cli, tokens)[0] for page, tokens in documented_commands() if page == "README.md"}

    def leaves(command: Any, path: str) -> list[str]:
        if not is_group(command):
            return [path]
        own = [path] if command.params else []  # a group with options (`cmcr analyze`) runs on its own too
        subs = command.commands.items()
        return own + [leaf for name, sub in subs for leaf in leaves(sub, f"{path} {name}")]

    missing = sorted(set(leaves(cli, "cmcr")) - shown)
    assert not missing, f"README.md has no example for {missing}"


def test_the_checker_catches_a_wrong_option_and_command(cli):
    path, command, rest = resolve(cli, ["prepare", "nuscenes", "--dataroot", "x", "--worker", "2"])
    assert path == "cmcr prepare nuscenes" and unknown_options(command, rest) == ["--worker"]
    with pytest.raises(AssertionError, match="no such command"):
        resolve(cli, ["prepare", "kitti"])
    block = "torchrun --nproc_per_node 6 -m cmcr_cli pretrain --recipe r.yaml \\\n  --out x # c"
    assert command_lines(block) == [["pretrain", "--recipe", "r.yaml", "--out", "x"]]


def test_quick_start_is_the_two_commands_ci_runs():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in shell_blocks(quick)]
    assert len(blocks) == 2, f"the quick start must be two commands, found {len(blocks)} blocks"
    install, tests = blocks
    assert install.startswith('pip install torch==2.13.0 && pip install -e ".[dev]" && cmcr demo')
    assert "\n" not in install and "--quick" in quick
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), f".ci/run does not run the README's test command {tests!r}"
    assert 'pip install -e ".[dev]"' in ci and "pip install torch==2.13.0" in ci


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    prose = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))  # links live outside code
    for match in LINK.finditer(prose):
        target = match["target"]
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        if not (page.parent / target).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_readme_links_the_reference_pages():
    text = README.read_text()
    for page in ("docs/data-format.md", "docs/checkpoints.md", "docs/recipes.md", "docs/reproduce.md"):
        assert f"]({page})" in text, f"README.md does not link {page}"
