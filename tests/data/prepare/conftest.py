"""Fixtures for the prepare tests: prepared folders made from the synthetic world (`world`, `world_copy`:
the root conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support import VERSION

from cmcr_core.data.prepare_nuscenes import PrepareOptions, prepare_nuscenes
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.data.superpixels import SlicParams

__all__ = ["VERSION"]  # re-exported: the tests here import it from this conftest


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


NO_SUPERPIXELS = PrepareOptions(superpixels="none", samples_per_shard=2)


@pytest.fixture(scope="session")
def prepared_plain(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world prepared once without superpixels, 2 samples per shard."""
    out = tmp_path_factory.mktemp("prepared_plain")
    report = prepare_nuscenes(world, VERSION, out, NO_SUPERPIXELS)
    assert not report.failures
    return out


@pytest.fixture(scope="session")
def prepared_slic(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shard 0 only (2 samples, as job 0 of 16) prepared with full-resolution SLIC (scale 1)."""
    out = tmp_path_factory.mktemp("prepared_slic")
    options = PrepareOptions(superpixels="slic", slic=SlicParams(scale=1.0), samples_per_shard=2)
    report = prepare_nuscenes(world, VERSION, out, options, job=(0, 16))
    assert not report.failures
    return out


def dataset_contents(out: Path, split: str = "all") -> dict[str, dict[str, object]]:
    """Every stored field of every sample, keyed by sample token (for run-vs-run comparisons)."""
    dataset = PreparedDataset(out, split)
    contents = {}
    for i in range(len(dataset)):
        s = dataset[i]
        contents[s.token] = {
            "scene": s.scene, "lidar_token": s.lidar_token, "camera_tokens": s.camera_tokens,
            "timestamp": s.timestamp, "points": s.points, "labels": s.labels, "labels_fine": s.labels_fine,
            "pairings": s.pairings, "jpeg": s.jpeg_bytes, "projections": s.projections,
            "superpixels": s.superpixels, "image_hw": s.image_hw,
        }
    dataset.close()
    return contents


def assert_same_contents(a: dict[str, dict[str, object]], b: dict[str, dict[str, object]]) -> None:
    assert list(a) == list(b)
    for token in a:
        for key, value in a[token].items():
            other = b[token][key]
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, other, err_msg=f"{token} {key}")
            else:
                assert value == other, f"{token} {key}"
