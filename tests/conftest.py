"""Session-wide fixtures shared by every test folder: the synthetic world and its prepared copies here, the
families of artefacts of `support/` (teacher, pretraining runs, checkpoints, objects, transformers models)
registered below, and the device of the device-aware tests (`support/device.py`: CMCR_TEST_DEVICE, the
`device` and `tolerance` fixtures, the `gpu` marking of the tests that take `device`)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `support` is importable from every test

from support import device as device_support  # noqa: E402
from support.checkpoints import cartesian_checkpoint, cylindrical_checkpoint  # noqa: E402, F401
from support.device import device, tolerance  # noqa: E402, F401
from support.hf import clip_dir, dinov2_dir  # noqa: E402, F401
from support.objects import objects_root, pretrain_run, runner, small_objects  # noqa: E402, F401
from support.pretraining import runs  # noqa: E402, F401
from support.teacher import trained  # noqa: E402, F401
from support.threads import one_thread  # noqa: E402, F401

# The test machines have 2 cores; CMCR_TEST_THREADS=1 avoids oversubscription when other jobs share them.
torch.set_num_threads(int(os.environ.get("CMCR_TEST_THREADS", "2")))


def pytest_configure(config: pytest.Config) -> None:
    device_support.configure(config)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    device_support.mark_device_tests(items)


def pytest_runtest_setup(item: pytest.Item) -> None:
    device_support.skip_gpu_without_cuda(item)


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


@pytest.fixture(scope="session")
def nosp_prepared_world(synthetic_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synthetic_world` prepared without superpixels (fine-tuning and CMCR do not read them), read-only."""
    from cmcr_core.data.prepare_nuscenes import PrepareOptions, prepare_nuscenes

    out = tmp_path_factory.mktemp("prepared_nosp")
    report = prepare_nuscenes(synthetic_world, "v1.0-mini", out, PrepareOptions(superpixels="none"))
    assert not report.failures
    return out


@pytest.fixture(scope="session")
def world(synthetic_world: Path) -> Path:
    """The shared synthetic world (read-only: copy it before changing any file)."""
    return Path(synthetic_world)


@pytest.fixture
def world_copy(world: Path, tmp_path: Path) -> Path:
    """A private copy of the world whose files a test may corrupt."""
    return Path(shutil.copytree(world, tmp_path / "world"))
