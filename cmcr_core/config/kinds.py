"""The five recipe kinds and the one detection of a file's kind (`load_any`, `detect_kind`).

A file says its kind with a marker (`method: recon`, `task: classification`); otherwise it is the first of
the candidate kinds (pretrain, finetune, teacher) whose schema accepts every key. A file that none of a
command's kinds accepts but another kind does is a recipe for another command: the error names it ("this
is a pretraining recipe; use `cmcr pretrain`"). Every command and `cmcr recipe show` detect through here,
reading the file once; `recipe_summaries` describes the packaged recipes for `cmcr recipe list`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cmcr_core.config.loading import RecipeError, load, read_overrides, resolve
from cmcr_core.config.objects import ObjectClassifyRecipe, ReconRecipe
from cmcr_core.config.packaged import (
    RecipeSummary,
    packaged_recipe_names,
    packaged_recipes_dir,
    recipe_purpose,
)
from cmcr_core.config.schema import FinetuneRecipe, PretrainRecipe, TeacherTrainRecipe

__all__ = ["RECIPE_KINDS", "RecipeKind", "detect_kind", "kind_of", "load_any", "load_recipe",
           "recipe_summaries"]

R = TypeVar("R")


@dataclass(frozen=True)
class RecipeKind:
    """A recipe type, the command that runs it, what a user calls it (with its article) and, when the file
    must say so, its marker key and value."""

    recipe: type
    command: str
    label: str
    marker: tuple[str, str] | None = None


RECIPE_KINDS: dict[str, RecipeKind] = {
    "pretrain": RecipeKind(PretrainRecipe, "cmcr pretrain", "a pretraining"),
    "finetune": RecipeKind(FinetuneRecipe, "cmcr finetune / cmcr probe",
                           "a segmentation fine-tuning or probing"),
    "teacher": RecipeKind(TeacherTrainRecipe, "cmcr teacher train", "a teacher-training"),
    "recon": RecipeKind(ReconRecipe, "cmcr pretrain (method: recon)", "a ReCon pretraining",
                        ("method", "recon")),
    "classification": RecipeKind(ObjectClassifyRecipe, "cmcr finetune / cmcr probe (task: classification)",
                                 "an object-classification", ("task", "classification")),
}


def load_recipe(
    path: str | Path | None, sets: tuple[str, ...] | list[str] = (), kind: type[R] = PretrainRecipe
) -> R:
    """Resolve a recipe file plus `--set` overrides into a frozen `kind` (raises `RecipeError`)."""
    return load(kind, path, sets)


def _accepting(overrides: Mapping[str, Any], sets: Sequence[str], kinds: Sequence[str],
               source: str) -> str | None:
    """The first of `kinds` the file is: its marker's kind, else the first plain kind whose schema takes
    it; None when there is none."""
    for name in kinds:
        marker = RECIPE_KINDS[name].marker
        if marker is not None and overrides.get(marker[0]) == marker[1]:
            return name
    for name in kinds:
        if RECIPE_KINDS[name].marker is not None:
            continue
        try:
            resolve(RECIPE_KINDS[name].recipe, overrides, source, sets, check=False)
        except RecipeError:
            continue
        return name
    return None


def _detect(overrides: Mapping[str, Any], sets: Sequence[str], kinds: Sequence[str], source: str) -> str:
    found = _accepting(overrides, sets, kinds, source)
    if found is not None:
        return found
    others = [name for name in RECIPE_KINDS if name not in kinds]
    other = _accepting(overrides, (), others, source) if others else None
    if other is not None:  # a recipe for another command: say which
        kind = RECIPE_KINDS[other]
        runs = " or ".join(f"`{c.split(' (')[0].strip()}`" for c in kind.command.split(" / "))
        raise RecipeError(f"{source} is {kind.label} recipe; use {runs} with it")
    plain = [name for name in kinds if RECIPE_KINDS[name].marker is None]
    return (plain or list(kinds))[0]  # an invalid file reports against the first candidate's schema


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = [name for name in kinds if name not in RECIPE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"recipe kinds must be among {list(RECIPE_KINDS)}, got {list(kinds)}")


def detect_kind(path: str | Path | None, sets: Sequence[str] = (),
                kinds: Sequence[str] = tuple(RECIPE_KINDS)) -> str:
    """The kind (a key of `RECIPE_KINDS`, one of `kinds`) of a recipe file (see the module docstring).

    No file means the first of `kinds`; a file that cannot be read raises `RecipeError`.
    """
    _check_kinds(kinds)
    if path is None:
        return kinds[0]
    return _detect(read_overrides(path), sets, kinds, str(path))


def load_any(path: str | Path | None, sets: Sequence[str] = (),
             kinds: Sequence[str] = tuple(RECIPE_KINDS)) -> Any:
    """Read a recipe file once, detect its kind among `kinds` and return the resolved recipe of that type.

    `cmcr pretrain` loads with kinds ("pretrain", "recon"), `cmcr finetune`/`probe` with ("finetune",
    "classification"), `cmcr teacher train` with ("teacher",). Raises `RecipeError`.
    """
    _check_kinds(kinds)
    if path is None:
        return load(RECIPE_KINDS[kinds[0]].recipe, None, sets)
    overrides = read_overrides(path)
    name = _detect(overrides, sets, kinds, str(path))
    return resolve(RECIPE_KINDS[name].recipe, overrides, str(path), sets)


def kind_of(recipe: Any) -> str:
    """The kind name of a resolved recipe."""
    for name, kind in RECIPE_KINDS.items():
        if type(recipe) is kind.recipe:
            return name
    raise ValueError(f"{type(recipe).__name__} is not a recipe type of cmcr_core.config")


def recipe_summaries() -> list[RecipeSummary]:
    """Name, kind, method and purpose of every packaged recipe (`cmcr recipe list`)."""
    rows = []
    for name in packaged_recipe_names():
        path = packaged_recipes_dir() / name
        recipe = load_any(path)
        kind = kind_of(recipe)
        if kind == "finetune":
            method = recipe.train.mode
        elif kind == "classification":
            method = "objects"
        elif kind == "teacher":
            method = "semantic"
        else:
            method = recipe.method
        rows.append(RecipeSummary(name.removesuffix(".yaml"), kind, method, recipe_purpose(path), path))
    return rows
