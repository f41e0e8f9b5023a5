"""Figures of the structure analysis (docs/analysis.md): PCA scatters, U/T/G bars, toy curves and spheres.

Every figure is built on its own ``matplotlib.figure.Figure`` with an Agg canvas and written straight to
a file; pyplot is never imported, so no global figure state, backend switch or open-figure leak can
reach the caller. Each function returns the path it wrote (PNG by default; the suffix picks the format).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cmcr_core.eval.structure import correlation
from cmcr_core.eval.toy import ToyResult

__all__ = [
    "pca_project",
    "plot_metric_vs_performance",
    "plot_pca_scatter",
    "plot_structure_bars",
    "plot_toy_curves",
    "plot_toy_spheres",
]

_LOSS_COLOURS = {"contrastive": "tab:red", "similarity": "tab:blue", "relational": "tab:green"}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _unit_rows(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(torch.as_tensor(x).detach().cpu().to(torch.float64))
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"plots: feature set {name!r} must be a non-empty (N, D) array, got shape {a.shape}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError(f"plots: feature set {name!r} has zero or non-finite rows")
    return a / norms


def pca_project(x: np.ndarray, num_components: int = 2, fit_on: np.ndarray | None = None) -> np.ndarray:
    """Project rows of ``x`` on the top principal axes of ``fit_on`` (default ``x``), float64.

    Args:
        x: (N, D) data.
        num_components: k ≤ D.
        fit_on: (M, D) data whose mean and covariance define the axes.

    Returns:
        (N, k) coordinates; each axis's sign is fixed so its largest-magnitude loading is positive.
    """
    ref = x if fit_on is None else fit_on
    mean = ref.mean(axis=0)
    centred = ref - mean
    cov = centred.T @ centred / max(ref.shape[0] - 1, 1)
    eigval, eigvec = np.linalg.eigh(cov)
    axes = eigvec[:, np.argsort(eigval)[::-1][:num_components]]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    return (x - mean) @ (axes * np.where(signs == 0, 1.0, signs))


def plot_pca_scatter(
    feature_sets: Mapping[str, torch.Tensor | np.ndarray],
    labels: torch.Tensor | np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    joint: bool = False,
    max_points: int = 20000,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """2-D PCA scatter of L2-normalised features coloured by class.

    Args:
        feature_sets: name → (N, D) features; all share ``labels`` (row-paired, e.g. 3D and 2D).
        labels: (N,) integer classes.
        path: output file.
        class_names: legend names indexed by label (default: the label numbers).
        joint: False → one panel per set, each with its own PCA; True → one panel, one PCA fitted on all
            sets together (same D needed), marker per set, so the modality gap is visible.
        max_points: random subsample size per set (same rows for every set).
        seed: seed of the subsample.
        title: figure title.

    Returns:
        The path written.
    """
    if not feature_sets:
        raise ValueError("plot_pca_scatter: no feature sets given")
    lab = np.asarray(torch.as_tensor(labels).cpu()).astype(np.int64)
    sets = {name: _unit_rows(x, name) for name, x in feature_sets.items()}
    for name, x in sets.items():
        if x.shape[0] != lab.shape[0]:
            raise ValueError(
                f"plot_pca_scatter: set {name!r} has {x.shape[0]} rows but labels has {lab.shape[0]}"
            )
    rows = np.arange(lab.shape[0])
    if rows.shape[0] > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_points, replace=False))
    lab = lab[rows]
    sets = {name: x[rows] for name, x in sets.items()}
    classes = np.unique(lab)
    colours = _class_colours(len(classes))

    def scatter(ax, xy: np.ndarray, marker: str, with_labels: bool) -> None:
        for colour, c in zip(colours, classes, strict=True):
            sel = lab == c
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            label = name if with_labels else "_nolegend_"
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.6, color=colour, marker=marker, label=label)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")

    if joint:
        dims = {x.shape[1] for x in sets.values()}
        if len(dims) != 1:
            raise ValueError(f"plot_pca_scatter: joint PCA needs equal feature sizes, got {sorted(dims)}")
        fig = _new_figure(7.5, 6.0)
        ax = fig.add_subplot(1, 1, 1)
        stacked = np.concatenate(list(sets.values()))
        markers = ["o", "^", "s", "x", "D", "v"]
        for i, (name, x) in enumerate(sets.items()):
            scatter(ax, pca_project(x, 2, fit_on=stacked), markers[i % len(markers)], i == 0)
            # Marker key: one grey proxy entry per feature set.
            ax.scatter([], [], s=12, color="grey", marker=markers[i % len(markers)], label=f"[{name}]")
        ax.set_title("joint PCA: " + ", ".join(sets))
    else:
        fig = _new_figure(4.5 * len(sets) + 1.5, 4.5)
        for i, (name, x) in enumerate(sets.items()):
            ax = fig.add_subplot(1, len(sets), i + 1)
            scatter(ax, pca_project(x, 2), "o", True)
            ax.set_title(name)
    handles, names = fig.axes[-1].get_legend_handles_labels()
    if len(classes) <= 20:
        fig.legend(handles, names, loc="outside right center", markerscale=3, fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _class_colours(num: int) -> list[tuple[float, float, float, float]]:
    cmap = colormaps["tab20" if num > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(num)]


def plot_structure_bars(
    metrics: Mapping[str, Mapping[str, float]],
    path: str | Path,
    metric_names: Sequence[str] = ("U", "T", "G"),
    reference: Mapping[str, float] | None = None,
    reference_name: str = "teacher",
    title: str | None = None,
) -> Path:
    """One bar panel per metric, one bar per model, with an optional reference line (e.g. the teacher).

    Args:
        metrics: model name → {metric name → value}; a missing metric leaves that bar out.
        path: output file.
        metric_names: which metrics to draw, one panel each.
        reference: metric name → value of the reference representation (dashed line).
        reference_name: legend text of the reference line.
        title: figure title.

    Returns:
        The path written.
    """
    if not metrics:
        raise ValueError("plot_structure_bars: no models given")
    models = list(metrics)
    fig = _new_figure(3.6 * len(metric_names), 3.8)
    colours = _class_colours(len(models))
    for i, metric in enumerate(metric_names):
        ax = fig.add_subplot(1, len(metric_names), i + 1)
        values = [metrics[m].get(metric, math.nan) for m in models]
        bars = ax.bar(np.arange(len(models)), values, color=colours)
        ax.bar_label(bars, fmt="%.3f", fontsize="small")
        ax.set_xticks(np.arange(len(models)), models, rotation=30, ha="right")
        ax.set_title(metric)
        if reference is not None and metric in reference:
            ax.axhline(reference[metric], color="black", linestyle="--", label=reference_name)
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_toy_curves(result: ToyResult, path: str | Path, title: str | None = None) -> Path:
    """U and T over training for every loss of a toy run, with the source's values as dashed lines.

    Args:
        result: output of :func:`cmcr_core.runs.toy.run_toy_experiment`.
        path: output file.
        title: figure title (default: the number of clusters).

    Returns:
        The path written.
    """
    fig = _new_figure(10.0, 3.8)
    panels = (
        ("uniformity U", "uniformity", result.source_uniformity),
        ("tolerance T", "tolerance", result.source_tolerance),
    )
    for i, (label, attr, source_value) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, curves in result.curves.items():
            ax.plot(getattr(curves, attr), color=_LOSS_COLOURS.get(name), label=name, linewidth=1.2)
        ax.axhline(source_value, color="black", linestyle="--", label=f"source ({source_value:.2f})")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
    clusters = result.config.num_clusters
    fig.suptitle(title or f"toy distillation, {clusters} cluster{'s' if clusters > 1 else ''}")
    return _save(fig, path)


def plot_toy_spheres(result: ToyResult, path: str | Path, iteration: int | None = None) -> Path:
    """3-D scatter on S² of the source and of each loss's student (final, or a stored snapshot).

    Args:
        result: a toy run.
        path: output file.
        iteration: a value of ``config.snapshot_iterations`` to draw instead of the final features.

    Returns:
        The path written.
    """
    panels = [("source", result.targets)]
    for name, curves in result.curves.items():
        if iteration is None:
            panels.append((name, curves.final_features))
        elif iteration in curves.snapshots:
            panels.append((f"{name} @ {iteration}", curves.snapshots[iteration]))
        else:
            raise ValueError(
                f"plot_toy_spheres: no snapshot at iteration {iteration} for {name!r}; stored: "
                f"{sorted(curves.snapshots)} (set ToyConfig.snapshot_iterations)"
            )
    colours = np.asarray(_class_colours(max(int(result.labels.max()) + 1, 1)))[result.labels]
    fig = _new_figure(3.4 * len(panels), 4.0)
    for i, (name, pts) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=4, c=colours, depthshade=False)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_zlim(-1, 1)
        ax.set_box_aspect((1, 1, 1))
        ax.set_title(name)
    return _save(fig, path)


def plot_metric_vs_performance(
    metric_values: Sequence[float],
    performance: Sequence[float],
    names: Sequence[str],
    path: str | Path,
    xlabel: str = "structural gap",
    ylabel: str = "mIoU (%)",
) -> Path:
    """Scatter of a structure metric against a performance figure, one labelled point per model.

    Args:
        metric_values: (M,) metric per model.
        performance: (M,) performance per model.
        names: (M,) model names.
        path: output file.
        xlabel: x-axis label.
        ylabel: y-axis label.

    Returns:
        The path written; the title carries Pearson r and Spearman ρ when M ≥ 3.
    """
    if not len(metric_values) == len(performance) == len(names) or len(names) == 0:
        raise ValueError(
            "plot_metric_vs_performance: metric_values, performance and names need the same non-zero "
            f"length, got {len(metric_values)}, {len(performance)}, {len(names)}"
        )
    fig = _new_figure(5.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(metric_values, performance)
    for x, y, name in zip(metric_values, performance, names, strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(names) >= 3:
        r = correlation(list(metric_values), list(performance))
        ax.set_title(f"Pearson r = {r['pearson']:.2f}, Spearman ρ = {r['spearman']:.2f}")
    return _save(fig, path)
