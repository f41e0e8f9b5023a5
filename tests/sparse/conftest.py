"""Fixtures of the sparse-engine tests: helper modules on sys.path and the optional MinkowskiEngine oracle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1] / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test of this folder on one torch thread (support/threads.py)."""


@pytest.fixture(scope="session")
def minkowski():
    """MinkowskiEngine module, or skip the test when it is not installed."""
    from minkowski_reference import import_minkowski

    me = import_minkowski()
    if me is None:
        pytest.skip("MinkowskiEngine is not installed (optional oracle)")
    return me
