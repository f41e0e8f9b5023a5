"""What a workflow reports to its caller as text: tables and lines, decided here and only rendered by the
command line (rich markup in ``Line.text``), so the shell holds no logic of its own."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Line", "Report", "Table"]


@dataclass(frozen=True)
class Table:
    """A table: its title, column names (the first left-aligned, the others right-aligned) and rows."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Line:
    """One printed line of rich markup; ``highlight`` lets the console colour numbers and paths."""

    text: str
    highlight: bool = True


@dataclass(frozen=True)
class Report:
    """Tables and lines, printed in order."""

    blocks: tuple[Table | Line, ...]
