"""CMCR tests: few threads, this folder importable (helpers in cmcr_toys.py), a prepared synthetic world."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # 2 shared cores: one thread avoids OpenMP waits on busy cores
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def cmcr_prepared(nosp_prepared_world: Path) -> Path:
    """The shared synthetic world prepared without superpixels (CMCR does not use them, defect D16)."""
    return nosp_prepared_world
