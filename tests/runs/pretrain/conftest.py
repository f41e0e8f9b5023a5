"""Tiny pretraining settings shared by the tests of `cmcr pretrain`."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import RECIPES

__all__ = ["RECIPES", "TINY"]  # the tests here import them from this conftest

# A very small student, small crops and few matches: a step takes well under a second on one core.
TINY = [
    "data.crop_size=[64,112]",
    "data.min_pairs=64",
    "data.num_workers=0",
    "loss.num_matches=256",
    "student.planes=[8,8,16,16,16,16,8,8]",
    "student.init_dim=8",
    "train.log_every=1",
    "train.checkpoint_every=0",
]


@pytest.fixture
def tiny_sets(prepared_world: Path, device) -> list[str]:
    """The tiny settings on the shared prepared world, training on the test device (CMCR_TEST_DEVICE)."""
    return [f"data.path={prepared_world}", *TINY, f"train.device={device}"]
