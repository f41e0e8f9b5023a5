"""Session-wide fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The test machines have 2 cores shared with other jobs.
torch.set_num_threads(2)

SYNTHETIC_WORLD_ARGS = {"scenes": 5, "samples_per_scene": 2, "seed": 0, "image_size": (320, 180)}
"""The shared world: scene-0061, scene-0103, scene-1094, scene-0916, scene-0553 (both mini_val scenes, a
held-out "parametrize" scene, an official-val mini_train scene), 2 keyframes each, 320x180 images."""


@pytest.fixture(scope="session")
def synthetic_world_args() -> dict:
    """The arguments `synthetic_world` was written with (a copy)."""
    return dict(SYNTHETIC_WORLD_ARGS)


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic nuScenes v1.0-mini world (with lidarseg and truth/), written once per session.

    Read-only: copy it before modifying any file. Arguments: SYNTHETIC_WORLD_ARGS.
    """
    from cmcr_core.data.synthetic import write_nuscenes_world

    root = tmp_path_factory.mktemp("synthetic_world")
    write_nuscenes_world(root, **SYNTHETIC_WORLD_ARGS)
    return root
