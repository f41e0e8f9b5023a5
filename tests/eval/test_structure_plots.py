"""Structure figures: PCA scatters, U/T/G bars and metric-vs-performance scatter; PCA against SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cmcr_core.eval.plots import (
    pca_project,
    plot_metric_vs_performance,
    plot_pca_scatter,
    plot_structure_bars,
)
from cmcr_core.eval.zeroshot import NUSCENES_CLASSES

pytestmark = pytest.mark.usefixtures("one_thread")


def _assert_png(path, min_width: int, min_height: int) -> None:
    assert path.exists() and path.stat().st_size > 5_000
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= min_width and img.height >= min_height


def _features(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(16, 24, generator=g)
    labels = torch.randint(0, 16, (1500,), generator=g)
    x3 = means[labels] + 0.4 * torch.randn(1500, 24, generator=g)
    x2 = 0.8 * means[labels] + 1.0 + 0.4 * torch.randn(1500, 24, generator=g)
    return x3, x2, labels


def test_pca_projection_matches_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    proj = pca_project(x, 2)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    ref = (x - x.mean(0)) @ vt[:2].T
    for k in range(2):  # equal up to the sign of each axis
        assert min(np.abs(proj[:, k] - ref[:, k]).max(), np.abs(proj[:, k] + ref[:, k]).max()) < 1e-9


def test_pca_scatter_pngs(tmp_path):
    x3, x2, labels = _features()
    sets = {"3D": x3, "2D": x2}
    _assert_png(plot_pca_scatter(sets, labels, tmp_path / "pca.png", class_names=NUSCENES_CLASSES), 900, 400)
    joint = plot_pca_scatter(sets, labels, tmp_path / "joint.png", joint=True, max_points=500, seed=1)
    _assert_png(joint, 600, 500)
    with pytest.raises(ValueError, match="has 10 rows but labels has 1500"):
        plot_pca_scatter({"bad": x3[:10]}, labels, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="equal feature sizes"):
        plot_pca_scatter({"a": x3, "b": x2[:, :10]}, labels, tmp_path / "bad.png", joint=True)


def test_structure_bars_and_correlation_pngs(tmp_path):
    metrics = {
        "contrastive": {"U": 3.1, "T": 0.42, "G": 0.5},
        "similarity": {"U": 1.2, "T": 0.81, "G": 0.3},
        "relational": {"U": 1.5, "T": 0.70},
    }
    bars = plot_structure_bars(metrics, tmp_path / "bars.png", reference={"U": 1.54, "T": 0.73})
    _assert_png(bars, 900, 300)
    scatter = plot_metric_vs_performance(
        [0.1, 0.3, 0.5], [31.0, 27.0, 20.0], list(metrics), tmp_path / "r.png"
    )
    _assert_png(scatter, 400, 300)
    with pytest.raises(ValueError, match="same non-zero length"):
        plot_metric_vs_performance([0.1], [1.0, 2.0], ["a"], tmp_path / "bad.png")
