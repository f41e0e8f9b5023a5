"""Fixtures of the data tests: the shared synthetic world loaded by nuscenes-devkit."""

from __future__ import annotations

from pathlib import Path

import pytest
from nuscenes.nuscenes import NuScenes


@pytest.fixture(scope="session")
def nusc(synthetic_world: Path) -> NuScenes:
    return NuScenes(version="v1.0-mini", dataroot=str(synthetic_world), verbose=False)
