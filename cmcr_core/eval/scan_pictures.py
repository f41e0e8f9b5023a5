"""Pictures of one LiDAR scan (`cmcr render`): bird's-eye views coloured by class, by error or by feature,
side by side, and the points projected on each camera image.

A bird's-eye view draws every point at (x, y) seen from above, within `extent` metres of the sensor, in
draw order by height so that the top of an object hides the ground under it. Classes take fixed colours
(`class_colours`: matplotlib's tab20 by id, ignore in light grey) so pictures of different runs compare;
an error view draws correct points grey, wrong ones red and unlabelled ones pale. A feature view is an
(N, 3) array of RGB values in [0, 1] (`feature_colours`: the first three principal components of the
point features). Figures use their own Agg canvas, never pyplot (as `cmcr_core.eval.plots`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["BevPanel", "CameraPanel", "class_colours", "error_colours", "feature_colours",
           "write_scan_picture"]

IGNORE_GREY = (0.85, 0.85, 0.85)
CORRECT_GREY = (0.55, 0.55, 0.55)
WRONG_RED = (0.85, 0.1, 0.1)


@dataclass(frozen=True)
class BevPanel:
    """One bird's-eye view: a title and an (N, 3) RGB colour per point of the scan."""

    title: str
    colours: np.ndarray


@dataclass(frozen=True)
class CameraPanel:
    """One camera image (H, W, 3) uint8 with points drawn at pixels (P, 2) [row, col] in `colours` (P, 3)."""

    title: str
    image: np.ndarray
    pixels: np.ndarray
    colours: np.ndarray


def class_colours(ids: np.ndarray) -> np.ndarray:
    """(N,) class ids -> (N, 3) RGB: tab20 by id (ids 1..20), id 0 (ignore) light grey."""
    palette = np.asarray(colormaps["tab20"].colors, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    out = palette[(ids - 1) % len(palette)]
    out[ids == 0] = IGNORE_GREY
    return out


def error_colours(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(N, 3) RGB: grey where the prediction equals the truth, red where it does not, pale where the truth
    is ignore (0)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    out = np.where((truth == predicted)[:, None], CORRECT_GREY, WRONG_RED).astype(np.float64)
    out[truth == 0] = IGNORE_GREY
    return out


def feature_colours(features: np.ndarray) -> np.ndarray:
    """(N, D) features -> (N, 3) RGB in [0, 1]: the first three principal components, each stretched from
    its 1st to its 99th percentile (fewer than 3 dimensions repeat the last component)."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:3] if len(vt) >= 3 else np.concatenate([vt, np.repeat(vt[-1:], 3 - len(vt), axis=0)])
    projected = x @ axes.T
    low, high = np.percentile(projected, 1, axis=0), np.percentile(projected, 99, axis=0)
    return np.clip((projected - low) / np.maximum(high - low, 1e-12), 0.0, 1.0)


def _bev(ax: Any, points: np.ndarray, colours: np.ndarray, extent: float, title: str) -> None:
    inside = (np.abs(points[:, 0]) <= extent) & (np.abs(points[:, 1]) <= extent)
    order = np.argsort(points[inside, 2], kind="stable")  # higher points drawn last
    xy, rgb = points[inside][order, :2], colours[inside][order]
    ax.scatter(xy[:, 0], xy[:, 1], c=rgb, s=1.5, marker=".", linewidths=0)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def write_scan_picture(path: str | Path, points: np.ndarray, bev: Sequence[BevPanel],
                       cameras: Sequence[CameraPanel] = (), legend: Sequence[tuple[int, str]] = (),
                       title: str = "", extent: float = 40.0) -> Path:
    """Write a PNG (or any format the suffix names): the bird's-eye views in a row, the cameras below in
    rows of three, and a legend of the classes given as (id, name).

    Args:
        points: (N, 3+) x, y, z in the LiDAR frame; every panel colours these points.
        bev: the bird's-eye views (each `colours` (N, 3)).
        cameras: camera images with projected points.
        legend: classes to name, in `class_colours`.
        extent: half-width in metres of the bird's-eye views.
    """
    points = np.asarray(points)
    for panel in bev:
        if panel.colours.shape != (len(points), 3):
            raise ValueError(f"panel {panel.title!r}: colours of shape {panel.colours.shape} for "
                             f"{len(points)} points")
    columns = max(len(bev), 3 if cameras else 1)
    camera_rows = -(-len(cameras) // 3)
    fig = Figure(figsize=(4.2 * columns, 4.2 + 2.4 * camera_rows + (0.6 if legend else 0)), dpi=100,
                 layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + camera_rows, 3 * columns, height_ratios=[4.2] + [2.4] * camera_rows)
    width = 3 * columns // len(bev)
    for i, panel in enumerate(bev):
        _bev(fig.add_subplot(grid[0, i * width:(i + 1) * width]), points, panel.colours, extent, panel.title)
    span = columns  # a camera takes a third of the figure's width
    for i, camera in enumerate(cameras):
        ax = fig.add_subplot(grid[1 + i // 3, (i % 3) * span:(i % 3 + 1) * span])
        ax.imshow(camera.image)
        if len(camera.pixels):
            ax.scatter(camera.pixels[:, 1], camera.pixels[:, 0], c=camera.colours, s=3.0, marker=".",
                       linewidths=0)
        ax.set_title(camera.title, fontsize=8)
        ax.set_axis_off()
    if legend:
        ids = np.array([c for c, _ in legend])
        handles = [_patch(colour) for colour in class_colours(ids)]
        fig.legend(handles, [name for _, name in legend], loc="outside lower center",
                   ncol=min(len(legend), 9), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _patch(colour: np.ndarray) -> Any:
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor="none")
