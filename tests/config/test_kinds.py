"""The one recipe-kind detection: markers first, then the first schema that accepts every key; one read."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import RECIPES

from cmcr_core import config
from cmcr_core.config import RecipeError, detect_kind, kind_of, load_any


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("name", "kind"), [
    ("ppkt_synthetic", "pretrain"), ("cmcr_synthetic", "pretrain"), ("finetune_synthetic", "finetune"),
    ("probe_synthetic", "finetune"), ("semantic_teacher_synthetic", "teacher"), ("recon_synthetic", "recon"),
    ("recon_probe_synthetic", "classification"), ("recon_finetune_synthetic", "classification"),
])
def test_every_shipped_recipe_is_detected_as_its_kind(name: str, kind: str) -> None:
    path = RECIPES / f"{name}.yaml"
    assert detect_kind(path) == kind
    recipe = load_any(path)
    assert kind_of(recipe) == kind
    # independent reference: the file loaded with the class named by hand
    assert recipe == config.load_recipe(path, kind=config.RECIPE_KINDS[kind].recipe)


def test_markers_win_and_the_candidate_kinds_narrow_the_choice(tmp_path: Path) -> None:
    recon = write(tmp_path, "method: recon\n")
    assert detect_kind(recon) == "recon"
    # `cmcr finetune` looks only among finetune and classification: a recon file is for another command
    with pytest.raises(RecipeError, match=r"is a ReCon pretraining recipe; use `cmcr pretrain` with it"):
        detect_kind(recon, kinds=("finetune", "classification"))
    finetune_keys = write(tmp_path, "data:\n  label_fraction: 0.25\n")
    assert detect_kind(finetune_keys) == "finetune"
    assert detect_kind(finetune_keys, ["data.label_fraction=0.05"]) == "finetune"
    # detection reads keys and types; a value that breaks its rule is then reported against that schema
    assert detect_kind(finetune_keys, ["data.label_fraction=0.5"]) == "finetune"
    with pytest.raises(RecipeError, match=r"'data.label_fraction' \(given on the command line\) must be one"):
        load_any(finetune_keys, ["data.label_fraction=0.5"])
    assert detect_kind(None) == "pretrain" and detect_kind(None, kinds=("teacher",)) == "teacher"


def test_an_invalid_file_reports_against_the_first_candidate(tmp_path: Path) -> None:
    bad = write(tmp_path, "data:\n  voxelsize: 0.2\n")
    assert detect_kind(bad) == "pretrain"
    with pytest.raises(RecipeError, match=r"data\.voxelsize.*data\.voxel_size"):
        load_any(bad)
    with pytest.raises(RecipeError, match="not valid YAML"):
        detect_kind(write(tmp_path, "data: [\n"))
    with pytest.raises(ValueError, match="recipe kinds"):
        detect_kind(bad, kinds=("nonsense",))


def test_load_any_reads_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cmcr_core.config import kinds

    path = write(tmp_path, "optim:\n  lr: 0.01\n")
    reads = []
    original = kinds.read_overrides
    monkeypatch.setattr(kinds, "read_overrides", lambda p: reads.append(p) or original(p))
    recipe = load_any(path, ["train.seed=3"])
    assert reads == [path] and recipe.optim.lr == 0.01 and recipe.train.seed == 3
