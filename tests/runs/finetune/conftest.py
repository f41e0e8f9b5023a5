"""Fixtures of the fine-tuning runs: the shared world prepared without superpixels, and a tiny recipe (the
pretraining checkpoints they start from are in `support.checkpoints`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from support.checkpoints import TINY_UNET as TINY

from cmcr_core.config import FinetuneRecipe


@pytest.fixture(scope="session")
def prepared_world(nosp_prepared_world: Path) -> Path:
    """The shared 5-scene world (mini_train: scene-0061, scene-1094, scene-0553; mini_val: scene-0103,
    scene-0916; 2 keyframes each) prepared without superpixels."""
    return nosp_prepared_world


@pytest.fixture(scope="session")
def tiny_recipe(prepared_world: Path, device) -> FinetuneRecipe:
    """Fine-tuning on the 3rd mini_train scene (skip 3 for fraction 0.01), 2 steps, batch 2, training and
    evaluating on the test device (CMCR_TEST_DEVICE)."""
    base = FinetuneRecipe()
    return replace(
        base,
        name="tiny",
        data=replace(base.data, path=str(prepared_world), train_split="mini_train", val_split="mini_val",
                     fraction_skips=(3, 2, 1, 1, 1), batch_size=2, eval_batch_size=2, num_workers=0),
        model=replace(base.model, **TINY),
        train=replace(base.train, epochs=2, checkpoint_every=0, log_every=1, device=str(device)),
    )
