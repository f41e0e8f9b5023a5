"""The recipes travel with the package: a wheel built from this tree and installed elsewhere (not editable)
runs `cmcr recipe list` and a dry run by recipe name from a directory outside the checkout.

What proves it: the wheel is built from a copy of the source files, installed with `pip --target` into an
empty folder, and the commands run in a fresh interpreter whose working directory is outside the checkout
and whose `cmcr_core` is checked to come from that folder (no editable install, no checkout on the path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "cmcr_cli", "cmcr_core", "recipes")


def run(args: list[str], cwd: Path, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the folder it was installed into)."""
    base = tmp_path_factory.mktemp("wheel")
    tree = base / "tree"
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, tree / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(tree)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((base / "dist").glob("cmcr-*.whl"))
    target = base / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return wheel, target


def test_the_wheel_holds_every_recipe_as_a_file(installed) -> None:
    wheel, target = installed
    names = zipfile.ZipFile(wheel).namelist()
    expected = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
    assert sorted(Path(n).name for n in names if n.startswith("cmcr_core/recipes/")) == expected
    folder = target / "cmcr_core" / "recipes"
    assert folder.is_dir() and not folder.is_symlink()
    assert (folder / "nuscenes.yaml").read_bytes() == (ROOT / "recipes" / "nuscenes.yaml").read_bytes()


def test_an_installed_cmcr_runs_recipes_by_name_outside_the_checkout(installed, tmp_path) -> None:
    _, target = installed
    where = run(["-c", "import cmcr_core, cmcr_cli; print(cmcr_core.__file__); print(cmcr_cli.__file__)"],
                tmp_path, target)
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(target) for line in where.stdout.split())  # not the checkout
    listed = run(["-m", "cmcr_cli", "recipe", "list"], tmp_path, target)
    assert listed.returncode == 0, listed.stderr
    for name in ("nuscenes", "ppkt_synthetic", "finetune_nuscenes", "recon_synthetic"):
        assert name in listed.stdout
    dry = run(["-m", "cmcr_cli", "pretrain", "--recipe", "ppkt_synthetic", "--data", "prepared", "--dry-run"],
              tmp_path, target)
    assert dry.returncode == 0, dry.stderr
    assert "name: ppkt_synthetic" in dry.stdout and "path: prepared" in dry.stdout
    # the headline command: the recipe is found; what is missing is the local teacher file it names
    headline = run(["-m", "cmcr_cli", "pretrain", "--recipe", "nuscenes.yaml", "--dry-run"], tmp_path, target)
    assert headline.returncode == 2
    assert "teacher.weights" in headline.stderr and "not found" not in headline.stderr
    assert list(tmp_path.iterdir()) == []
