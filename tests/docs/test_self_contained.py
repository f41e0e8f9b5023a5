"""The documentation is self-contained: nothing in docs/, README.md, recipes/ or the code (comments,
docstrings and messages included) sends a user to a file they do not have — the developers' reference
notes ("METHODS.md §7", "PROTOCOLS.md", "ENGINE.md", "NUSCENES_FORMAT.md", `reference/...`) or a path of
one of our machines. A fact is stated in the project's own words with its paper or code named.

The "D1".."D22" labels of the differences from the reference code are defined in one user-facing page,
docs/differences.md; a page that uses one links that page, and a code or recipe line that uses one names
that page on the same line or a neighbouring one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIFFERENCES = ROOT / "docs" / "differences.md"
SCANNED = ("docs", "README.md", "recipes", "cmcr_core", "cmcr_cli", "benchmarks")
SUFFIXES = {".md", ".py", ".yaml", ".yml", ".sh", ".txt", ".toml"}

FORBIDDEN = {
    "a developers' reference note": re.compile(
        r"\b(?:METHODS|PROTOCOLS|ENGINE|NUSCENES_FORMAT)\b(?:\.md|\s*§)"),
    "the reference-notes folder": re.compile(r"(?<![\w.-])reference/(?:[A-Z]|\s|$)"),
    "a path of our machines": re.compile(r"/work/|\.\./shared/|(?<![\w.])shared/wheels|/home/\w+/|/root/"),
}
LABEL = re.compile(r"\bD(?:[1-9]|1[0-9]|2[0-2])\b")


def scanned_files() -> list[Path]:
    files: dict[Path, Path] = {}
    for name in SCANNED:
        top = ROOT / name
        paths = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for path in paths:
            if path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                files.setdefault(path.resolve(), path)  # cmcr_core/recipes is recipes/: read once
    return sorted(files.values())


def offences(path: Path, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in FORBIDDEN.items():
            match = pattern.search(line)
            if match:
                where = f"{path.relative_to(ROOT)}:{number}"
                found.append(f"{where}: {what}: {match.group(0)!r} in {line.strip()!r}")
    return found


def defined_labels() -> set[str]:
    return set(re.findall(r"^\|\s*(D\d+)\s*\|", DIFFERENCES.read_text(), re.M))


def label_problems(path: Path, text: str, defined: set[str]) -> list[str]:
    problems = []
    lines = text.splitlines()
    used = [(n, m.group(0)) for n, line in enumerate(lines) for m in LABEL.finditer(line)]
    if not used or path == DIFFERENCES:
        return problems
    name = path.relative_to(ROOT)
    for n, label in used:
        if label not in defined:
            problems.append(f"{name}:{n + 1}: {label} is not defined in docs/differences.md")
    if path.suffix == ".md":
        if "differences.md" not in text:
            problems.append(f"{name}: uses {sorted({lab for _, lab in used})} without linking differences.md")
    else:
        for n, label in used:
            if not any("differences.md" in lines[i] for i in range(max(0, n - 1), min(len(lines), n + 2))):
                problems.append(f"{name}:{n + 1}: {label} without docs/differences.md on that line or a "
                                "neighbour")
    return problems


def test_the_scan_reads_the_places_users_read():
    names = {p.relative_to(ROOT).as_posix() for p in scanned_files()}
    for expected in ("README.md", "docs/recipes.md", "recipes/nuscenes.yaml", "cmcr_core/api.py",
                     "cmcr_cli/app.py", "benchmarks/recon_probe.py"):
        assert expected in names
    assert not any(n.startswith("cmcr_core/recipes/") for n in names)  # the same files as recipes/


def test_nothing_points_to_files_users_do_not_have():
    found = [o for path in scanned_files() for o in offences(path, path.read_text(encoding="utf-8"))]
    assert not found, "references to files users do not have:\n" + "\n".join(found)


def test_every_difference_label_is_defined_and_linked():
    defined = defined_labels()
    assert {f"D{i}" for i in range(1, 23)} <= defined, "docs/differences.md must define D1..D22"
    problems = [p for path in scanned_files()
                for p in label_problems(path, path.read_text(encoding="utf-8"), defined)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("text", "bad"), [
    ("see METHODS.md §7 for the loss", True), ("as PROTOCOLS §13 says", True), ("ENGINE.md", True),
    ("the reference NUSCENES_FORMAT.md, section 3", True), ("read reference/METHODS.md", True),
    ("pip install /work/shared/wheels/x.whl", True), ("../shared/wheels/README.md", True),
    ("the reference code's defect", False), ("docs/cmcr.md §7", False), ("MinkowskiEngine.md", False),
    ("the METHODS section of the paper", False),
])
def test_the_patterns_catch_references_and_spare_prose(text, bad):
    assert bool(offences(ROOT / "x.md", text)) is bad


def test_a_label_without_its_page_is_reported():
    defined = {"D5"}
    code = ROOT / "cmcr_core" / "x.py"
    assert label_problems(code, "# checked at load (defect D5)\n", defined)
    assert not label_problems(code, "# checked at load (D5 in docs/differences.md)\n", defined)
    assert not label_problems(code, "# checked at load (D5 of\n# docs/differences.md)\n", defined)
    assert label_problems(code, "# (D5)\n#\n#\n# docs/differences.md\n", defined)
    assert label_problems(ROOT / "docs" / "x.md", "fixed (D5)\n", defined)
    assert not label_problems(ROOT / "docs" / "x.md", "fixed ([D5](differences.md))\n", defined)
    assert label_problems(ROOT / "docs" / "x.md", "fixed ([D7](differences.md))\n", defined)  # undefined
