"""Strict loading of frozen-dataclass recipes: YAML overrides, `--set` overrides, saving.

The recipe *schema* lives in `cmcr_core.config.schema` and `cmcr_core.config.objects` (dataclasses with
their defaults in code); this module is the machinery that turns a YAML file of overrides plus
`--set section.key=value` strings into a fully resolved, type-checked, frozen recipe, and back into YAML.

Rules:
- a YAML recipe holds overrides only; every key must exist in the schema, otherwise the error names the
  key, the file and the closest valid key;
- values are type-checked against the dataclass annotations (ints are accepted where floats are expected,
  lists where tuples are expected); nothing is coerced silently from strings;
- `base: other.yaml` inherits another recipe's overrides, applied first; the name resolves as `--recipe`
  does (`cmcr_core.config.packaged.find_recipe`): a file next to the recipe, else a packaged recipe.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cmcr_core.config.checks import CHECKS, problems
from cmcr_core.config.errors import RecipeError
from cmcr_core.config.packaged import find_recipe
from cmcr_core.ops.atomic import atomic_write_text

T = TypeVar("T")

BASE_KEY = "base"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` (no dot) as a float, as YAML 1.2 and every user expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, hint in _field_types(cls).items():
        full = f"{prefix}{name}"
        keys.append(full)
        if dataclasses.is_dataclass(hint):
            keys.extend(_all_keys(hint, prefix=f"{full}."))
    return keys


def _unknown_key_error(cls: type, root: type, key: str, prefix: str, source: str | None) -> RecipeError:
    full = f"{prefix}{key}"
    candidates = _all_keys(root)
    close = difflib.get_close_matches(full, candidates, n=1, cutoff=0.5)
    if not close:  # a misspelt leaf under the right section, or the right leaf under a wrong section
        leaf_matches = [c for c in candidates if c.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
        close = leaf_matches[:1]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    valid = ", ".join(_field_types(cls))
    return RecipeError(f"unknown recipe key '{full}'{_where(source)}{hint} (valid keys here: {valid})")


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _check_value(value: Any, hint: Any, key: str, source: str | None) -> Any:
    """Return `value` converted to the annotated type (list -> tuple, int -> float) or raise RecipeError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    def fail() -> RecipeError:
        return RecipeError(
            f"recipe key '{key}'{_where(source)} expects {_type_name(hint)}, "
            f"got {value!r} ({type(value).__name__})"
        )

    if origin is typing.Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint_txt = f"; did you mean '{close[0]}'?" if close else ""
            raise RecipeError(
                f"recipe key '{key}'{_where(source)} must be one of {list(args)}, got {value!r}{hint_txt}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key, source)
            except RecipeError:
                continue
        raise fail()
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise fail()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise RecipeError(
                f"recipe key '{key}'{_where(source)} expects {len(args)} values, got {len(value)}: {value!r}"
            )
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_check_value(v, a, f"{key}[{i}]", source) for i, (v, a) in pairs)
    if hint is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise fail()
        return value
    if hint is Any:
        return value
    raise RecipeError(f"recipe key '{key}': unsupported annotation {_type_name(hint)}")


def build(
    cls: type[T],
    overrides: Mapping[str, Any] | None,
    source: str | None = None,
    prefix: str = "",
    root: type | None = None,
) -> T:
    """Instantiate dataclass `cls` from its defaults updated by a nested mapping of overrides.

    `root` is the whole recipe's class (for suggestions across sections); `prefix` the dotted path of `cls`.
    """
    root = root or cls
    overrides = dict(overrides or {})
    types_ = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in types_:
            raise _unknown_key_error(cls, root, str(key), prefix, source)
        hint = types_[key]
        full = f"{prefix}{key}"
        if dataclasses.is_dataclass(hint):
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise RecipeError(
                    f"recipe key '{full}'{_where(source)} is a section and expects a mapping of keys, "
                    f"got {value!r}"
                )
            kwargs[key] = build(hint, value, source, prefix=f"{full}.", root=root)
        else:
            kwargs[key] = _check_value(value, hint, full, source)
    for name, hint in types_.items():
        if name not in kwargs and dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, {}, source, prefix=f"{prefix}{name}.", root=root)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def read_overrides(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML recipe (following `base:` links) into one nested mapping of overrides; `path` is a file
    or the name of a packaged recipe (`find_recipe`)."""
    path = find_recipe(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise RecipeError(f"recipe 'base' links form a cycle: {chain}")
    try:
        data = _yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}")
    data = dict(data)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"recipe key 'base' in {path} must be a file name, got {base!r}")
    parent = read_overrides(find_recipe(base, relative_to=path.parent), (*_seen, resolved))
    return _merge(parent, data)


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """Parse one `--set section.key=value` string; the value is read as YAML (so `1e-3`, `[1, 2]`, `true`)."""
    if "=" not in assignment:
        raise RecipeError(f"--set '{assignment}' must look like section.key=value (no '=' found)")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise RecipeError(f"--set '{assignment}': '{key}' is not a dotted key like optim.lr")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set '{assignment}': value {raw!r} is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_sets(overrides: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """Fold `--set` strings into a nested override mapping (later assignments win)."""
    out = dict(overrides)
    for assignment in assignments:
        path, value = parse_set(assignment)
        nested: Any = value
        for part in reversed(path[1:]):
            nested = {part: nested}
        out = _merge(out, {path[0]: nested})
    return out


def resolve(cls: type[T], overrides: Mapping[str, Any], source: str | None, sets: Sequence[str] = (),
            check: bool = True) -> T:
    """A recipe of `cls` from read overrides (named `source` in errors), then `--set` assignments; with
    `check`, its values pass `cmcr_core.config.checks.CHECKS` (kind detection reads keys and types only)."""
    recipe = build(cls, overrides, source)
    if sets:
        recipe = build(cls, apply_sets(dict(overrides), sets), "--set")
    if check:
        check_values(recipe, CHECKS, source, sets)
    return recipe


def check_values(recipe: Any, table: Mapping[type, Any], source: str | None,
                 sets: Sequence[str] = ()) -> None:
    """Raise `RecipeError` for the first value of `recipe` that breaks its rule in `table` (a table of
    `cmcr_core.config.checks`), naming the key, the value and where it was given."""
    found = problems(recipe, table)
    if not found:
        return
    key, value, problem = found[0]
    given = {".".join(parse_set(a)[0]) for a in sets}
    where = " (given on the command line)" if key in given else _where(source)
    raise RecipeError(f"recipe key '{key}'{where} {problem}, got {value!r}")


def load(cls: type[T], path: str | Path | None = None, sets: Sequence[str] = ()) -> T:
    """Resolve a recipe: dataclass defaults <- YAML file (and its bases) <- `--set` assignments."""
    overrides = read_overrides(path) if path is not None else {}
    return resolve(cls, overrides, str(path) if path is not None else None, sets)


def to_dict(recipe: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a resolved recipe."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(recipe)


class _Dumper(yaml.SafeDumper):
    """Block-style sections, flow-style lists: `crop_size: [224, 416]`."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def dump(recipe: Any) -> str:
    """The fully resolved recipe as YAML text (every field, in schema order)."""
    return yaml.dump(to_dict(recipe), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def save(recipe: Any, path: str | Path) -> Path:
    """Write the resolved recipe to `path` (atomically) and return the path."""
    return atomic_write_text(path, dump(recipe))


def replace(recipe: T, **changes: Any) -> T:
    """`dataclasses.replace` re-exported for frozen recipes."""
    return dataclasses.replace(recipe, **changes)  # type: ignore[type-var]
