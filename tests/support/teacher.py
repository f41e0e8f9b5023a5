"""One tiny semantic teacher trained once on the shared synthetic world (`trained`), and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmcr_core import config
from cmcr_core.runs.teacher import TeacherRun, run_teacher_training
from support import RECIPES

TEACHER_RECIPE = RECIPES / "semantic_teacher_synthetic.yaml"

# A narrow network and small crops: a few seconds on a CPU, enough to learn road, buildings and sky.
TINY_TEACHER = [
    "data.crop_size=[96, 160]", "data.batch_size=4", "data.num_workers=0",
    "model.widths=[16, 24, 32, 32]", "train.max_steps=40", "train.checkpoint_every=0", "train.log_every=2",
    "optim.warmup_steps=4", "optim.lr=0.01", "loss.class_weighting=none",
]


def tiny_teacher_recipe(world: Path, *sets: str) -> config.TeacherTrainRecipe:
    """The shipped recipe on ``world`` with the tiny settings above plus ``sets``."""
    return config.load_recipe(TEACHER_RECIPE, [f"data.world={world}", *TINY_TEACHER, *sets],
                              kind=config.TeacherTrainRecipe)


@pytest.fixture(scope="session")
def trained(synthetic_world: Path, tmp_path_factory: pytest.TempPathFactory, device) -> TeacherRun:
    """A teacher trained on the shared world (scene-0553 held out), also scored on the same world whole;
    trained and scored on the test device (CMCR_TEST_DEVICE)."""
    out = tmp_path_factory.mktemp("teacher_run")
    recipe = tiny_teacher_recipe(synthetic_world, f"data.eval_worlds=[{synthetic_world}]",
                                 f"train.device={device}")
    run = run_teacher_training(recipe, out)
    assert run.teacher is not None
    return run
