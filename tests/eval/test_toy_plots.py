"""Toy figures: curves and sphere scatters are written as valid PNGs without touching pyplot."""

from __future__ import annotations

import sys

import pytest
from PIL import Image

from cmcr_core.eval.plots import plot_toy_curves, plot_toy_spheres
from cmcr_core.eval.toy import ToyConfig
from cmcr_core.runs.toy import run_toy_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_result():
    return run_toy_experiment(
        ToyConfig(num_clusters=3, points_per_cluster=24, iterations=15, snapshot_iterations=(0, 10))
    )


def _assert_png(path, min_width: int, min_height: int) -> None:
    assert path.exists() and path.stat().st_size > 5_000
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= min_width and img.height >= min_height


def test_toy_curves_png(tmp_path, toy_result):
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    out = plot_toy_curves(toy_result, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    _assert_png(out, 800, 300)
    # Drawing must not import pyplot (no global figure state).
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded


def test_toy_spheres_png(tmp_path, toy_result):
    _assert_png(plot_toy_spheres(toy_result, tmp_path / "final.png"), 1000, 300)
    _assert_png(plot_toy_spheres(toy_result, tmp_path / "snap.png", iteration=10), 1000, 300)
    with pytest.raises(ValueError, match="no snapshot at iteration 5"):
        plot_toy_spheres(toy_result, tmp_path / "missing.png", iteration=5)
