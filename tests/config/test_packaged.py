"""Recipes by name: a file first, then a packaged recipe (`nuscenes.yaml`, `nuscenes`); `base:` the same way
(a file next to the recipe first); `cmcr recipe list` shows each with its kind, method and purpose."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support import RECIPES
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core import config
from cmcr_core.config import RecipeError, find_recipe, packaged_recipe_names, packaged_recipes_dir

runner = CliRunner()

# Independent of the code: the kind and method of a few recipes, read off their files by hand.
KNOWN = {"nuscenes": ("pretrain", "cmcr"), "ppkt_synthetic": ("pretrain", "ppkt"),
         "slidr_nuscenes": ("pretrain", "slidr"), "relational_nuscenes": ("pretrain", "relational"),
         "finetune_nuscenes": ("finetune", "finetune"), "probe_synthetic": ("finetune", "probe"),
         "semantic_teacher_synthetic": ("teacher", "semantic"), "recon_shapenet": ("recon", "recon"),
         "recon_probe_modelnet40": ("classification", "objects")}


def test_the_packaged_recipes_are_the_repositorys() -> None:
    assert packaged_recipe_names() == sorted(p.name for p in RECIPES.glob("*.yaml"))
    for name in packaged_recipe_names():
        assert (packaged_recipes_dir() / name).read_bytes() == (RECIPES / name).read_bytes()


@pytest.mark.parametrize("name", ["nuscenes", "nuscenes.yaml"])
def test_a_name_finds_the_packaged_recipe_from_any_directory(name, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_recipe(name) == packaged_recipes_dir() / "nuscenes.yaml"
    assert config.load_any(name).name == "cmcr_nuscenes"


def test_a_file_wins_over_a_packaged_recipe_of_the_same_name(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("nuscenes.yaml").write_text("name: my_own\n")
    assert find_recipe("nuscenes.yaml") == Path("nuscenes.yaml")
    assert config.load_any("nuscenes.yaml").name == "my_own"
    assert config.load_any("nuscenes").name == "cmcr_nuscenes"  # no file named `nuscenes`: the packaged one


def test_base_resolves_next_to_the_recipe_then_in_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "child.yaml").write_text("base: ppkt_synthetic.yaml\nname: child\noptim:\n  lr: 0.01\n")
    recipe = config.load_any(folder / "child.yaml")
    packaged = config.load_any("ppkt_synthetic")
    assert recipe.name == "child" and recipe.optim.lr == 0.01 and recipe.student == packaged.student
    (folder / "ppkt_synthetic.yaml").write_text("name: local_parent\ndata:\n  voxel_size: 0.2\n")
    assert config.load_any(folder / "child.yaml").data.voxel_size == 0.2  # the neighbour wins
    (folder / "orphan.yaml").write_text("base: no_such_recipe.yaml\n")
    with pytest.raises(RecipeError, match=r"no_such_recipe.yaml \(looked in .*mine\).*no packaged recipe"):
        config.load_any(folder / "orphan.yaml")


def test_a_missing_recipe_suggests_names(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match="recipe file not found: nuscene.*close name: nuscenes"):
        find_recipe("nuscene")
    with pytest.raises(RecipeError, match="the packaged recipe of that name is `--recipe nuscenes`"):
        find_recipe("recipes/nuscenes.yaml")  # a checkout path used outside the checkout


def test_recipe_list_shows_every_recipe_with_kind_method_and_purpose() -> None:
    result = runner.invoke(app, ["recipe", "list"], terminal_width=220)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()
            if line.strip() and line.split()[0] in {n[:-5] for n in packaged_recipe_names()}}
    assert sorted(rows) == sorted(n[:-5] for n in packaged_recipe_names())
    for name, (kind, method) in KNOWN.items():
        assert rows[name][1:3] == [kind, method], rows[name]
    for name in rows:  # the purpose is the first line of the file's leading comment, cut at its first clause
        first = (RECIPES / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        assert " ".join(rows[name][3:6]) in first


def test_recipe_show_and_a_dry_run_take_a_name(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    shown = runner.invoke(app, ["recipe", "show", "--recipe", "ppkt_synthetic"])
    assert shown.exit_code == 0
    assert yaml.safe_load(shown.output) == config.to_dict(config.load_any(RECIPES / "ppkt_synthetic.yaml"))
    dry = runner.invoke(app, ["pretrain", "--recipe", "ppkt_synthetic.yaml", "--data", "P", "--dry-run"])
    assert dry.exit_code == 0 and "name: ppkt_synthetic" in dry.output
    assert list(tmp_path.iterdir()) == []


def test_the_demo_reads_the_packaged_recipes() -> None:
    from cmcr_core.demo.stages import default_recipes_dir

    assert default_recipes_dir() == packaged_recipes_dir()
