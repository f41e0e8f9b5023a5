"""docs/recipes.md against the recipe dataclasses: every field documented, every default as in the code.

The reference page is written by hand; this test is the independent check that keeps it true. It walks
the dataclasses of `cmcr_core.config` (`dataclasses.fields`, recursively from each recipe kind) and parses
the page's tables: under a heading that ends with a class name in backticks
("### `optim` — `OptimConfig`"), rows `| `section.key` | `default` | meaning |`. A documented default is
read exactly as `--set` reads a value (`cmcr_core.config.parse_set`) and must equal the code's default
(tuples compared as lists).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from cmcr_core import config

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "recipes.md"
RECIPE_DIR = ROOT / "recipes"

RECIPE_KINDS = (
    config.PretrainRecipe,
    config.TeacherTrainRecipe,
    config.FinetuneRecipe,
    config.ReconRecipe,
    config.ObjectClassifyRecipe,
)

HEADING = re.compile(r"^#{2,6}\s")
CLASS_AT_HEADING_END = re.compile(r"`([A-Z][A-Za-z0-9]*(?:Config|Recipe))`\s*$")
ROW = re.compile(r"^\|\s*`(?P<key>[a-z_][a-z0-9_.]*)`\s*\|\s*`(?P<default>[^`]*)`\s*\|(?P<meaning>.*)\|\s*$")

# One documented table: class name -> {dotted key: (default text, meaning)}.
Tables = dict[str, dict[str, tuple[str, str]]]


def parse_tables(text: str) -> tuple[Tables, list[str]]:
    """The field tables of the page, and problems found while reading it (duplicate tables or rows)."""
    tables: Tables = {}
    problems: list[str] = []
    current: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if HEADING.match(line):
            match = CLASS_AT_HEADING_END.search(line)
            current = match[1] if match else None
            if current is not None:
                if current in tables:
                    problems.append(f"line {number}: a second table for {current}")
                tables.setdefault(current, {})
            continue
        match = ROW.match(line)
        if match is None or current is None:
            continue
        key = match["key"]
        if key in tables[current]:
            problems.append(f"line {number}: {current} documents '{key}' twice")
        tables[current][key] = (match["default"], match["meaning"].strip())
    return tables, problems


def code_default(f: dataclasses.Field) -> typing.Any:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return config.to_dict(value) if dataclasses.is_dataclass(value) else _plain(value)


def _plain(value: typing.Any) -> typing.Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def expected_tables() -> dict[str, dict[str, typing.Any]]:
    """Class name -> {dotted key as documented: code default} for every class reachable from a kind."""
    expected: dict[str, dict[str, typing.Any]] = {}

    def visit(cls: type, prefix: str) -> None:
        rows = expected.setdefault(cls.__name__, {})
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                visit(hint, f"{f.name}.")
            else:
                rows[f"{prefix}{f.name}"] = code_default(f)

    for kind in RECIPE_KINDS:
        visit(kind, "")
    return expected


def parse_default(text: str) -> typing.Any:
    """A documented default read as `--set key=TEXT` would read it."""
    _, value = config.parse_set(f"doc.value={text}")
    return value


def check(tables: Tables) -> list[str]:
    """Every disagreement between documented tables and the dataclasses, as readable lines."""
    errors: list[str] = []
    for cls_name, rows in expected_tables().items():
        documented = tables.get(cls_name)
        if documented is None:
            errors.append(f"docs/recipes.md has no table for {cls_name}")
            continue
        for key, default in rows.items():
            if key not in documented:
                errors.append(f"{cls_name}: field '{key}' is not documented")
                continue
            text, meaning = documented[key]
            value = parse_default(text)
            if value != default or type(value) is not type(default) and not _same_number(value, default):
                errors.append(f"{cls_name}: '{key}' documented default `{text}` ({value!r}) but the code "
                              f"says {default!r}")
            if not meaning:
                errors.append(f"{cls_name}: '{key}' has no meaning")
        for key in documented.keys() - rows.keys():
            errors.append(f"{cls_name}: documented key '{key}' is not a field of the class")
    for cls_name in tables.keys() - expected_tables().keys():
        errors.append(f"docs/recipes.md has a table for {cls_name}, which no recipe kind uses")
    return errors


def _same_number(a: typing.Any, b: typing.Any) -> bool:
    """int/float written either way (`1` vs 1.0) are the same default; bools are never numbers here."""
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool) and a == b)


@pytest.fixture(scope="module")
def doc_tables() -> Tables:
    tables, problems = parse_tables(DOC.read_text())
    assert not problems, "\n".join(problems)
    return tables


def test_every_field_is_documented_with_the_code_default(doc_tables):
    errors = check(doc_tables)
    assert not errors, "docs/recipes.md is out of date:\n" + "\n".join(errors)


def test_the_walk_covers_every_recipe_kind_and_section(doc_tables):
    # guards the checker itself: the walk must reach every section class and the parse must find them
    expected = expected_tables()
    for kind in RECIPE_KINDS:
        for f in dataclasses.fields(kind):
            hint = typing.get_type_hints(kind)[f.name]
            name = hint.__name__ if dataclasses.is_dataclass(hint) else kind.__name__
            assert name in expected and name in doc_tables
    assert sum(len(rows) for rows in expected.values()) > 150


def test_a_missing_row_is_reported(doc_tables):
    tables = {name: dict(rows) for name, rows in doc_tables.items()}
    del tables["OptimConfig"]["optim.lr"]
    assert check(tables) == ["OptimConfig: field 'optim.lr' is not documented"]


def test_a_wrong_default_is_reported(doc_tables):
    tables = {name: dict(rows) for name, rows in doc_tables.items()}
    tables["DataConfig"]["data.crop_size"] = ("[224, 400]", "changed")
    tables["TrainConfig"]["train.amp"] = ("false", "changed")
    tables["LossConfig"]["loss.temperature"] = ("0.7", "changed")
    errors = check(tables)
    assert len(errors) == 3
    assert all("documented default" in e for e in errors)


def test_a_bool_is_not_accepted_for_a_number(doc_tables):
    tables = {name: dict(rows) for name, rows in doc_tables.items()}
    tables["TrainConfig"]["train.seed"] = ("false", "changed")  # False == 0 in Python; still wrong
    assert check(tables) == [
        "TrainConfig: 'train.seed' documented default `false` (False) but the code says 0"]


def test_a_stale_row_is_reported(doc_tables):
    tables = {name: dict(rows) for name, rows in doc_tables.items()}
    tables["OptimConfig"]["optim.nesterov"] = ("false", "gone")
    assert check(tables) == ["OptimConfig: documented key 'optim.nesterov' is not a field of the class"]


def test_parse_tables_reads_rows_under_class_headings():
    text = "\n".join([
        "# Title",
        "| `x.y` | `1` | outside any class table: ignored |",
        "### `optim` — `OptimConfig`",
        "| key | default | meaning |",
        "|---|---|---|",
        "| `optim.lr` | `0.5` | base learning rate |",
        "| `optim.betas` | `[0.9, 0.999]` | AdamW betas |",
        "## Plain heading",
        "| `optim.eps` | `1.0e-8` | after a heading without a class: ignored |",
    ])
    tables, problems = parse_tables(text)
    assert problems == []
    assert tables == {"OptimConfig": {"optim.lr": ("0.5", "base learning rate"),
                                      "optim.betas": ("[0.9, 0.999]", "AdamW betas")}}
    assert parse_default("1.0e-8") == 1e-8 and parse_default("''") == ""
    assert parse_default("null") is None and parse_default("[rotation, flip_axis]") == [
        "rotation", "flip_axis"]


def test_every_published_recipe_is_listed():
    text = DOC.read_text()
    files = sorted(RECIPE_DIR.glob("*.yaml"))
    assert files
    missing = [f.name for f in files if f"`recipes/{f.name}`" not in text]
    assert not missing, f"recipes missing from docs/recipes.md §8: {missing}"
    listed = set(re.findall(r"`recipes/([a-z0-9_]+\.yaml)`", text))
    absent = listed - {f.name for f in files}
    assert not absent, f"docs/recipes.md names recipes that do not exist: {sorted(absent)}"
