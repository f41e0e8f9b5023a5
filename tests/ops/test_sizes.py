"""Size options given as text: the accepted forms and the errors that name the option."""
from __future__ import annotations

import pytest

from cmcr_core.ops.sizes import parse_size


@pytest.mark.parametrize(("text", "square", "expected"), [
    ("416x224", False, (416, 224)),
    ("64X36", False, (64, 36)),
    ("32", True, (32, 32)),
    ("48x48", True, (48, 48)),
])
def test_accepted_forms(text: str, square: bool, expected: tuple[int, int]):
    assert parse_size(text, "--size", square=square) == expected


@pytest.mark.parametrize(("text", "square", "message"), [
    ("64by36", False, "--size takes WIDTHxHEIGHT"),
    ("32", False, "--size takes WIDTHxHEIGHT"),
    ("0x10", False, "got '0x10'"),
    ("-3x10", False, "got '-3x10'"),
    ("32x16", True, "the object renders are square"),
    ("axb", True, "N or NxN"),
])
def test_bad_sizes_name_the_option_and_the_form(text: str, square: bool, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_size(text, "--size", square=square)
