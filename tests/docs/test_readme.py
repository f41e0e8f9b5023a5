"""The README and the docs against the real command line: every `cmcr` command they show — in shell blocks,
in inline code and in the recipes' comments — names an existing subcommand, only options that subcommand
has, a value after every option that takes one and none after a flag, recipes that exist (a packaged name
or a file of the repository) and repository files that exist; every `python benchmarks/...` line names a
script and options it has. The quick start is the two commands `.ci/run` runs; every relative link points at
a file that exists.

The command tree and the option parser come from the Typer app itself (`typer.main.get_command`), the
independent source of truth for what `cmcr <cmd> --help` prints and what `cmcr <cmd> ...` accepts.
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
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
RECIPE_FILES = sorted((ROOT / "recipes").glob("*.yaml"))
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]*)`")
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")
COMMAND_START = re.compile(
    r"^(?:[A-Z_]+=\S+\s+)*(?:cmcr\s|torchrun\s|python\s+(?:-m\s+cmcr_cli|benchmarks/))")
REPO_PATH = re.compile(r"^(?:recipes|benchmarks|docs|tests|cmcr_core|cmcr_cli)/[\w./-]*$")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # FILE, PREPARED, FILE_OR_NAME: written for the reader
# Options another change adds to this command line, shown by the docs before they exist; each entry must be
# removed once the option exists (a test checks it). None is awaited now.
AWAITED: set[tuple[str, str]] = set()
# docs/cli.md's list of the spellings of 0.1: shown on purpose, refused (tests/cli/test_grammar.py)
OLD_SPELLINGS = re.compile(r"^## \d+\. Renamed in .*?(?=^## |\Z)", re.S | re.M)


def shell_blocks(text: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(text) if m["lang"] in ("bash", "sh", "")]


def tokens_of(line: str) -> list[str] | None:
    """Shell words of one command line: `[`, `]` and `...` of usage lines dropped, `# comments` removed."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote is a documentation error too
        raise AssertionError(f"cannot parse shell line: {line!r}") from None
    words = [w.strip("[]") for w in words]
    return [w for w in words if w and w not in ("...", "|")]


def command_lines(block: str) -> list[list[str]]:
    """Token lists of the commands in a shell block (continuation lines joined): `cmcr ...` and `-m cmcr_cli`
    lines from the word after `cmcr` / `cmcr_cli`, `python benchmarks/...` lines whole."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        for part in re.split(r"&&|;|\|(?![\w|])", line):
            part = part.strip()
            if not COMMAND_START.match(part):
                continue
            tokens = tokens_of(part)
            while tokens and re.match(r"^[A-Z_]+=", tokens[0]):  # environment assignments
                tokens.pop(0)
            if tokens[:1] == ["cmcr"]:
                found.append(tokens[1:])
            elif "cmcr_cli" in tokens and tokens[tokens.index("cmcr_cli") - 1] == "-m":
                found.append(tokens[tokens.index("cmcr_cli") + 1:])
            elif tokens[:1] == ["python"] and tokens[1:2] and tokens[1].startswith("benchmarks/"):
                found.append(tokens)
    return found


def recipe_comment_blocks(text: str) -> list[str]:
    """The commands a recipe file shows in its leading comment, as a shell block."""
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    return ["\n".join(lines)]


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


def option_problems(path: str, command: Any, rest: list[str]) -> list[str]:
    """What the command's own parser refuses in `rest`: unknown options, a missing value, a value after a
    flag (it becomes a stray positional argument). Options in AWAITED are taken with their value."""
    awaited = {opt for where, opt in AWAITED if where == path}
    takes_value = {o for p in command.params if p.param_type_name == "option" and not p.is_flag
                   for o in p.opts}
    words, i = [], 0
    while i < len(rest):
        if rest[i].split("=", 1)[0] in awaited:
            i += 1 if "=" in rest[i] else 2
            continue
        # a `$VAR` of a documented shell loop is an option's value, or stands for options: dropped then
        if not rest[i].startswith("$") or (words and words[-1] in takes_value):
            words.append(rest[i])
        i += 1
    ctx = command.context_class(command, info_name=path.split()[-1])
    try:
        _, positional, _ = command.make_parser(ctx).parse_args(list(words))
    except Exception as exc:  # click's NoSuchOption / BadOptionUsage: the message names the option
        return [str(exc)]
    takes = [p for p in command.params if p.param_type_name == "argument"]
    if is_group(command):
        return []
    if positional and not takes:
        return [f"unexpected argument(s) {positional} (a flag given a value, or a missing option name)"]
    return []


def path_problems(tokens: list[str]) -> list[str]:
    """Repository files named by the command, and the recipe it names (a packaged name or a repo file)."""
    from cmcr_core.config import packaged_recipe_names

    problems = []
    for token in tokens:
        value = token.split("=", 1)[-1]
        if REPO_PATH.match(value) and "$" not in value and not (ROOT / value).exists():
            problems.append(f"{value} does not exist in the repository")
    if "--recipe" in tokens and tokens.index("--recipe") + 1 < len(tokens):
        recipe = tokens[tokens.index("--recipe") + 1]
        packaged = {n for name in packaged_recipe_names() for n in (name, name[:-5])}
        known = PLACEHOLDER.match(recipe) or recipe in packaged or (ROOT / recipe).is_file()
        if not known and "$" not in recipe:
            problems.append(f"--recipe {recipe}: neither a packaged recipe nor a file of the repository")
    return problems


def benchmark_problems(tokens: list[str]) -> list[str]:
    script = ROOT / tokens[1]
    if not script.is_file():
        return [f"{tokens[1]} does not exist"]
    known = set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", script.read_text())) | {"--help"}
    used = [t.split("=", 1)[0] for t in tokens[2:] if t.startswith("--")]
    return [f"{tokens[1]} has no option {u}" for u in used if u not in known]


@pytest.fixture(scope="module")
def cli() -> Any:
    return typer.main.get_command(app)


def documented_commands() -> list[tuple[str, list[str], bool]]:
    """(where, tokens, whole) of every command shown: `whole` for shell blocks and recipe comments (a
    complete command), not for inline code in prose (which may name a group or a command alone)."""
    out = []
    for page in PAGES:
        text = OLD_SPELLINGS.sub("", page.read_text())
        for block in shell_blocks(text):
            out.extend((page.name, tokens, True) for tokens in command_lines(block))
        prose = FENCE.sub("", text)
        for span in INLINE_CODE.findall(prose):
            if span.startswith("cmcr ") or span.startswith("python benchmarks/"):
                out.extend((page.name, tokens, False) for tokens in command_lines(span))
    for recipe in RECIPE_FILES:
        for block in recipe_comment_blocks(recipe.read_text()):
            out.extend((f"recipes/{recipe.name}", tokens, True) for tokens in command_lines(block))
    return out


def check(cli: Any, commands: list[tuple[str, list[str], bool]]) -> list[str]:
    errors = []
    for where, tokens, whole in commands:
        if tokens[:1] == ["python"]:
            errors += [f"{where}: {p}" for p in benchmark_problems(tokens)]
            continue
        try:
            path, command, rest = resolve(cli, tokens)
        except AssertionError as exc:
            errors.append(f"{where}: {exc}")
            continue
        if whole and is_group(command) and not command.params and "--help" not in rest:
            errors.append(f"{where}: `{path}` is a group; a subcommand is missing in {tokens}")
        line = f"(line: cmcr {' '.join(tokens)})"
        errors += [f"{where}: `{path}`: {p} {line}" for p in option_problems(path, command, rest)]
        errors += [f"{where}: `{path}`: {p} {line}" for p in path_problems(tokens)]
    return errors


def test_every_documented_command_runs_as_written(cli):
    commands = documented_commands()
    assert len(commands) > 150  # the pages are full of examples; a parser that finds none must fail
    pages = {where for where, _, _ in commands}
    assert pages >= {"README.md", "cli.md", "reproduce.md", "recipes/nuscenes.yaml"}
    errors = check(cli, commands)
    assert not errors, "\n".join(errors)


def test_awaited_options_are_still_awaited(cli):
    for path, option in AWAITED:
        _, command, _ = resolve(cli, path.split()[1:])
        names = {o for p in command.params for o in p.opts}
        assert option not in names, f"`{path} {option}` exists now: remove it from AWAITED"


def test_every_subcommand_has_an_example_in_the_readme(cli):
    shown = {resolve(cli, tokens)[0] for where, tokens, whole in documented_commands()
             if where == "README.md" and whole and tokens[:1] != ["python"]}

    def leaves(command: Any, path: str) -> list[str]:
        if not is_group(command):
            return [path]
        own = [path] if path != "cmcr" and command.params else []  # `cmcr analyze` runs on its own too
        subs = command.commands.items()
        return own + [leaf for name, sub in subs for leaf in leaves(sub, f"{path} {name}")]

    missing = sorted(set(leaves(cli, "cmcr")) - shown)
    assert not missing, f"README.md has no example for {missing}"


def test_the_checker_catches_each_kind_of_mistake(cli):
    def problems(line: str) -> list[str]:
        return check(cli, [("x", tokens, True) for tokens in command_lines(line)])

    assert problems("cmcr prepare nuscenes --dataroot x --version v1.0-mini --out o --worker 2")
    assert problems("cmcr prepare kitti --out o")  # no such command
    assert problems("cmcr pretrain --recipe ppkt_synthetic --resume true")  # a flag given a value
    assert problems("cmcr pretrain --recipe ppkt_synthetic --data")  # an option without its value
    assert problems("cmcr pretrain --recipe no_such_recipe")
    assert problems("cmcr pretrain --recipe recipes/no_such.yaml")
    assert problems("cmcr finetune --recipe finetune_synthetic --weights benchmarks/missing.pt")
    assert problems("cmcr recipe show ppkt_synthetic")  # the positional of 0.1
    assert problems("python benchmarks/recon_probe.py --nope 1")
    assert problems("python benchmarks/missing.py")
    assert not problems("cmcr pretrain --recipe ppkt_synthetic --data PREPARED --resume --set a.b=1")
    assert not problems("cmcr pretrain --recipe recipes/ppkt_synthetic.yaml [--dry-run]")
    assert not problems("OMP_NUM_THREADS=1 python benchmarks/recon_probe.py --threads 1 --seeds 0 1")
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


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
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
    for page in ("docs/data-format.md", "docs/checkpoints.md", "docs/recipes.md", "docs/reproduce.md",
                 "docs/cli.md", "docs/differences.md", "docs/cluster.md"):
        assert f"]({page})" in text, f"README.md does not link {page}"
