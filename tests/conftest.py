"""Session-wide fixtures shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The test machines have 2 cores; CMCR_TEST_THREADS=1 avoids oversubscription when other jobs share them.
torch.set_num_threads(int(os.environ.get("CMCR_TEST_THREADS", "2")))

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


@pytest.fixture(scope="session")
def prepared_world(synthetic_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synthetic_world` prepared once (with SLIC superpixels at the default scale), read-only."""
    from cmcr_core.data.prepare_nuscenes import PrepareOptions, prepare_nuscenes

    out = tmp_path_factory.mktemp("prepared_world")
    report = prepare_nuscenes(synthetic_world, "v1.0-mini", out, PrepareOptions(superpixels="slic"))
    assert not report.failures, report.failures
    return out
