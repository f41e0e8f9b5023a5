"""Recipes: strict keys, type checking, --set syntax, inheritance and a lossless round trip."""

from __future__ import annotations

import dataclasses

import pytest

from cmcr_core import config
from cmcr_core.config import RecipeError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_come_from_code():
    recipe = config.load_recipe(None)
    assert recipe == config.PretrainRecipe()
    assert recipe.data.crop_size == (224, 416)
    assert recipe.student.planes == (32, 64, 128, 256, 256, 128, 96, 96)


def test_yaml_holds_overrides_only(tmp_path):
    path = write(tmp_path, "r.yaml", "optim:\n  name: adamw\n  lr: 1e-3\ndata:\n  cylindrical: false\n")
    recipe = config.load_recipe(path)
    assert recipe.optim.name == "adamw" and recipe.optim.lr == pytest.approx(1e-3)
    assert recipe.data.cylindrical is False
    # untouched fields keep their code defaults
    assert recipe.optim.momentum == config.OptimConfig().momentum
    assert recipe.train == config.TrainConfig()


def test_unknown_key_names_key_file_and_closest(tmp_path):
    path = write(tmp_path, "bad.yaml", "optim:\n  lrr: 0.1\n")
    with pytest.raises(RecipeError) as info:
        config.load_recipe(path)
    message = str(info.value)
    assert "optim.lrr" in message and str(path) in message and "'optim.lr'" in message


def test_unknown_section_suggests_closest(tmp_path):
    path = write(tmp_path, "bad.yaml", "optimizer:\n  lr: 0.1\n")
    with pytest.raises(RecipeError, match=r"unknown recipe key 'optimizer'.*did you mean 'optim'"):
        config.load_recipe(path)


def test_key_in_wrong_section_suggests_the_right_one(tmp_path):
    path = write(tmp_path, "bad.yaml", "train:\n  voxel_size: 0.05\n")
    with pytest.raises(RecipeError, match=r"'train.voxel_size'.*did you mean 'data.voxel_size'"):
        config.load_recipe(path)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("optim:\n  lr: fast\n", r"optim.lr.*expects float, got 'fast'"),
        ("train:\n  epochs: 2.5\n", r"train.epochs.*expects int, got 2.5"),
        ("train:\n  epochs: true\n", r"train.epochs.*expects int"),
        ("data:\n  cylindrical: 'yes'\n", r"data.cylindrical.*expects bool"),
        ("data:\n  crop_size: [224]\n", r"data.crop_size.*expects 2 values"),
        ("optim:\n  name: adam\n", r"optim.name.*must be one of \['sgd', 'adamw'\].*did you mean 'adamw'"),
        ("optim: 3\n", r"'optim'.*is a section"),
        ("- just\n- a list\n", r"must be a mapping"),
    ],
)
def test_wrong_types_are_named(tmp_path, text, pattern):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(RecipeError, match=pattern):
        config.load_recipe(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        config.load_recipe(write(tmp_path, "broken.yaml", "optim: [unclosed\n"))
    with pytest.raises(RecipeError, match="recipe file not found"):
        config.load_recipe(tmp_path / "absent.yaml")


def test_set_overrides_with_type_checking(tmp_path):
    path = write(tmp_path, "r.yaml", "optim:\n  lr: 0.1\n")
    recipe = config.load_recipe(path, ["optim.lr=0.25", "data.crop_size=[112, 208]", "train.seed=7"])
    assert recipe.optim.lr == 0.25 and recipe.data.crop_size == (112, 208) and recipe.train.seed == 7
    later_wins = config.load_recipe(path, ["optim.lr=0.25", "optim.lr=1e-4"])
    assert later_wins.optim.lr == pytest.approx(1e-4)
    with pytest.raises(RecipeError, match=r"'train.epochs' in --set expects int, got 'many'"):
        config.load_recipe(path, ["train.epochs=many"])
    with pytest.raises(RecipeError, match=r"key 'optim.lrate' in --set; did you mean 'optim.lr'"):
        config.load_recipe(path, ["optim.lrate=1"])


@pytest.mark.parametrize("bad", ["optim.lr", "=3", "optim..lr=3", "optim.l r=3", "optim.lr=[1,"])
def test_bad_set_syntax(bad):
    with pytest.raises(RecipeError, match="--set"):
        config.load_recipe(None, [bad])


def test_base_inheritance_and_cycle(tmp_path):
    write(tmp_path, "parent.yaml", "optim:\n  name: adamw\n  lr: 1e-3\ntrain:\n  epochs: 10\n")
    child = write(tmp_path, "child.yaml", "base: parent.yaml\ntrain:\n  epochs: 1\n")
    recipe = config.load_recipe(child)
    assert (recipe.optim.name, recipe.optim.lr, recipe.train.epochs) == ("adamw", 1e-3, 1)
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        config.load_recipe(tmp_path / "a.yaml")


def test_resolved_recipe_round_trips(tmp_path):
    recipe = config.load_recipe(None, ["optim.lr=3e-4", "data.cylindrical=false", "name=roundtrip"])
    saved = config.save(recipe, tmp_path / "run" / "recipe.yaml")
    again = config.load_recipe(saved)
    assert again == recipe
    # every field of the schema is written, not only the overrides
    text = saved.read_text()
    for section in dataclasses.fields(recipe):
        assert f"{section.name}:" in text


def test_recipes_are_frozen():
    recipe = config.load_recipe(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.optim.lr = 1.0  # type: ignore[misc]
