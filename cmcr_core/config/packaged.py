"""The recipes shipped inside the package, found by name: `--recipe nuscenes` works from any directory.

The published and synthetic recipes live in `cmcr_core/recipes/` (in a source checkout a link to the
repository's `recipes/` folder; a built wheel holds the files themselves). A recipe argument is resolved
the same way everywhere (`--recipe`, `base:`, `cmcr recipe show`, the demo): an existing file first (for
`base:`, relative to the file that names it), then a packaged recipe by its file name with or without
`.yaml`. `describe_recipe` gives what `cmcr recipe list` prints: name, kind, method and purpose.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from cmcr_core.config.errors import RecipeError

__all__ = ["RecipeSummary", "find_recipe", "packaged_recipe_names", "packaged_recipes_dir", "recipe_purpose"]

SUFFIX = ".yaml"


def packaged_recipes_dir() -> Path:
    """The folder of the recipes shipped with the installed package."""
    return Path(__file__).resolve().parents[1] / "recipes"


def packaged_recipe_names() -> list[str]:
    """File names (``nuscenes.yaml``, ...) of the packaged recipes, sorted."""
    folder = packaged_recipes_dir()
    return sorted(p.name for p in folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []


def _packaged(name: str) -> Path | None:
    if Path(name).name != name:  # a path with folders never names a packaged recipe
        return None
    for candidate in (name, f"{name}{SUFFIX}"):
        path = packaged_recipes_dir() / candidate
        if path.is_file():
            return path
    return None


def find_recipe(name: str | Path, relative_to: Path | None = None) -> Path:
    """The recipe file `name` designates: an existing file (looked up in `relative_to` first when given,
    as `base:` does), else the packaged recipe of that name (``nuscenes.yaml`` or ``nuscenes``).

    Raises `RecipeError` naming the closest packaged recipes when there is neither.
    """
    path = Path(name)
    candidate = relative_to / path if relative_to is not None else path
    if candidate.is_file():
        return candidate
    packaged = _packaged(str(name))
    if packaged is not None:
        return packaged
    names = packaged_recipe_names()
    stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    close = difflib.get_close_matches(stem, [n[: -len(SUFFIX)] for n in names], n=3, cutoff=0.6)
    hint = ""
    if f"{stem}{SUFFIX}" in names and str(path) != path.name:
        hint = f"; the packaged recipe of that name is `--recipe {stem}`"
    elif close:
        hint = "; packaged recipes with a close name: " + ", ".join(close)
    where = f" (looked in {relative_to})" if relative_to is not None else ""
    raise RecipeError(f"recipe file not found: {name}{where}, and no packaged recipe has that name{hint} "
                      "(`cmcr recipe list` shows them)")


@dataclass(frozen=True)
class RecipeSummary:
    """One row of `cmcr recipe list` (indexable: name, kind, method, purpose)."""

    name: str
    kind: str
    method: str
    purpose: str
    path: Path

    def __getitem__(self, index: int) -> str:
        return (self.name, self.kind, self.method, self.purpose)[index]


def recipe_purpose(path: Path) -> str:
    """The one-line purpose of a recipe: the first sentence of its leading comment."""
    first = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        first = line.lstrip("#").strip()
        if first:
            break
    for stop in (" (", ": ", "; ", ". "):
        first = first.split(stop, 1)[0]
    return first.rstrip(".,")
