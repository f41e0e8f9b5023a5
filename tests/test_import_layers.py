"""The house rules of imports, checked on the source: no cycle between modules or packages, and every
import runs downward (cli -> api -> demo -> runs -> methods, eval -> models, losses, data, engine, config ->
ops, sparse).

Every `import` and `from ... import` of every module of `cmcr_core` and `cmcr_cli` counts, including the
ones inside functions (a lazy import is still a dependency). The layers are written out here, independently
of the code; docs/architecture.md describes the same table.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cmcr_core", "cmcr_cli")

# package -> the packages it may import (besides itself). "cli" is all of cmcr_cli; "api" is cmcr_core.api.
LOW = {"ops", "sparse"}
ALLOWED: dict[str, set[str]] = {
    "ops": set(),
    "sparse": {"ops"},
    "config": {"ops"},
    "engine": {"ops"},
    "losses": {"ops", "sparse"},
    "models": {"ops", "sparse"},
    "data": {"ops", "sparse"},
    "eval": LOW | {"config", "engine", "models", "data"},
    "methods": LOW | {"config", "engine", "models", "losses", "data"},
    "runs": LOW | {"config", "engine", "models", "losses", "data", "eval", "methods"},
    "demo": LOW | {"config", "engine", "models", "losses", "data", "eval", "methods", "runs"},
    # the api also reads the version from cmcr_core/__init__.py (which imports nothing: "root" below)
    "api": LOW | {"config", "engine", "models", "losses", "data", "eval", "methods", "runs", "demo", "root"},
    "cli": {"api"},
    "root": set(),  # cmcr_core/__init__.py
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "cmcr_cli":
        return "cli"
    return parts[1] if len(parts) > 1 else "root"


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported cmcr module, line) for every import statement of the module, anywhere in it."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:  # `from package import submodule` depends on the submodule
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in modules else target, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] in PACKAGES]


def graph() -> dict[str, list[tuple[str, int]]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_package_of_the_layers_exists():
    packages = {package_of(m) for m in all_modules()}
    assert packages == set(ALLOWED), f"packages {packages ^ set(ALLOWED)} differ from the layer table"


def test_no_loose_module_at_the_top_of_cmcr_core():
    loose = sorted(p.name for p in (ROOT / "cmcr_core").glob("*.py"))
    assert loose == ["__init__.py", "api.py"], f"modules outside a subpackage: {loose}"


def test_imports_run_downward():
    wrong = []
    for module, imports in graph().items():
        source = package_of(module)
        for target, line in imports:
            dest = package_of(target)
            if dest != source and dest not in ALLOWED.get(source, set()):
                allowed = ", ".join(sorted(ALLOWED.get(source, ()))) or "nothing of cmcr"
                wrong.append(f"{all_modules()[module].relative_to(ROOT)}:{line} imports {target}: "
                             f"{source} may import only {allowed}")
    assert not wrong, "imports that run the wrong way:\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules():
    imports = graph()
    edges = {module: {target for target, _ in found if target != module} for module, found in imports.items()}
    cycles = strongly_connected(edges)
    detail = []
    for component in cycles:
        members = set(component)
        links = sorted({f"{m} -> {t} (line {line})"
                        for m in component for t, line in imports[m] if t in members})
        detail.append(f"cycle among {component}: " + "; ".join(links))
    assert not cycles, "\n".join(detail)


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, found in graph().items():
        for target, _ in found:
            if package_of(target) != package_of(module):
                edges[package_of(module)].add(package_of(target))
    assert not strongly_connected(edges), f"packages import each other: {strongly_connected(edges)}"


def test_the_checker_sees_cycles_upward_and_lazy_imports(tmp_path: Path):
    # the rules themselves, on a made-up graph: a cycle is found, and a function-level import counts
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from cmcr_core.runs import pretrain\n")
    modules = {"cmcr_core.runs.pretrain": lazy}
    assert imports_of("cmcr_core.models.fake", lazy, modules) == [("cmcr_core.runs.pretrain", 2)]
