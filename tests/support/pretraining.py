"""Tiny pretraining runs of the relational, similarity, contrastive and PPKT methods on the shared synthetic
world (session-scoped: each is trained once, for two steps), for the method, feature and analysis tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmcr_core.config import PretrainRecipe, load_recipe
from cmcr_core.runs.pretrain import run_pretraining
from support import RECIPES

TINY_PRETRAIN = [
    "data.crop_size=[64,112]",
    "data.min_pairs=64",
    "data.num_workers=0",
    "data.split=mini_train",
    "loss.num_matches=256",
    "student.planes=[8,8,16,16,16,16,8,8]",
    "student.init_dim=8",
    "train.log_every=1",
    "train.checkpoint_every=0",
    "train.max_steps=2",
    "train.device=cpu",
]


def tiny_pretrain_recipe(name: str, prepared: Path,
                         extra: list[str] | tuple[str, ...] = ()) -> PretrainRecipe:
    """recipes/<name>.yaml with the tiny settings above and the prepared world."""
    return load_recipe(RECIPES / f"{name}.yaml", [f"data.path={prepared}", *TINY_PRETRAIN, *extra])


@pytest.fixture(scope="session")
def runs(prepared_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """method name → checkpoint of a 2-step run (relational, similarity, contrastive: random semantic
    teacher, 128-d students; ppkt: random ResNet-18 + trained decoder, 64-d)."""
    root = tmp_path_factory.mktemp("analysis_runs")
    out = {}
    for method in ("relational", "similarity", "contrastive", "ppkt"):
        run_pretraining(tiny_pretrain_recipe(f"{method}_synthetic", prepared_world), root / method)
        out[method] = root / method / "checkpoint.pt"
    return out
