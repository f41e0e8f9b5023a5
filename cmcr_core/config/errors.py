"""The one error type of recipe loading."""

from __future__ import annotations

__all__ = ["RecipeError"]


class RecipeError(ValueError):
    """A recipe file or override is invalid; the message names the file, key and value at fault."""
