"""Sizes given as text on the command line ("WIDTHxHEIGHT", or "N" for a square)."""
from __future__ import annotations


def parse_size(text: str, option: str, square: bool = False) -> tuple[int, int]:
    """A size option: "WIDTHxHEIGHT" -> (width, height), both >= 1; with `square`, also "N" for NxN, and
    the two sides must be equal. A ValueError names the option and the form it takes."""
    form = "N or NxN (square)" if square else "WIDTHxHEIGHT, e.g. 416x224"
    parts = text.lower().split("x")
    if square and len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"{option} takes {form}, got {text!r}")
    width, height = (int(p) for p in parts)
    if square and width != height:
        raise ValueError(f"{option} takes {form} (the object renders are square), got {text!r}")
    return width, height
