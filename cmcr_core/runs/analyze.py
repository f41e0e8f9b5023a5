"""`cmcr analyze`: structure of pretrained 3D features next to their 2D teacher (docs/analysis.md).

For each checkpoint: the sampled points of ``cmcr_core.eval.features`` (the same points for every model),
their student and paired teacher features, then uniformity (t = 2, exact, streamed), tolerance (closed
form per class), modality gap and alignment of ``cmcr_core.eval.structure`` for both sides and their
differences (ΔU, ΔT, |ΔU|, |ΔT|; no weighted "structural gap" is invented). Writes ``structure.json``, PCA
scatters coloured by class (``pca.png``: the teacher and every student; ``pca_joint_<model>.png``: one PCA
fitted on teacher and student together, which shows the gap), U/T/G bars (``structure_bars.png``, with
the teacher's U and T as reference lines), optionally the sampled features (``features/<model>.npz``)
and, given mIoUs, the Pearson/Spearman correlation of every metric with mIoU across models.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcr_core.data.labels import EVALUATED_CLASS_NAMES
from cmcr_core.eval.features import PointSelection, extract_features, select_points
from cmcr_core.runs.pretrain import load_pretraining_run
from cmcr_core.runs.run_folder import STRUCTURE_JSON, write_json

__all__ = ["CORRELATED_METRICS", "AnalysisResult", "analyze_runs", "read_miou_file", "run_toy"]

logger = logging.getLogger(__name__)

CORRELATED_METRICS: tuple[str, ...] = (
    "uniformity_3d", "tolerance_3d", "delta_uniformity", "delta_tolerance", "abs_delta_uniformity",
    "abs_delta_tolerance", "modality_gap", "alignment",
)


@dataclass(frozen=True)
class AnalysisResult:
    """What `cmcr analyze` computed and wrote (``report`` is the content of structure.json)."""

    out_dir: Path
    report: dict[str, Any]
    files: tuple[Path, ...]


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for path in paths:
        base = path.parent.name or path.stem
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def read_miou_file(path: str | Path, names: Sequence[str]) -> dict[str, float]:
    """``{model name: mIoU}`` from a JSON object whose values are numbers or paths of metrics.json files.

    A metrics.json path (of ``cmcr finetune``/``probe``/``zeroshot``) contributes its ``miou`` (or the
    ``miou.mean`` of a multi-seed summary). Every analysed model must be listed.
    """
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--miou-file {path}: unreadable JSON ({error})") from error
    if not isinstance(table, dict):
        raise ValueError(f"--miou-file {path}: expected a JSON object {{model name: mIoU or metrics.json}}")
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(f"--miou-file {path}: no mIoU for model(s) {missing}; it lists {sorted(table)}")
    out = {}
    for name in names:
        value = table[name]
        if isinstance(value, str):
            metrics = json.loads((path.parent / value).read_text(encoding="utf-8"))
            value = metrics["miou"]["mean"] if isinstance(metrics["miou"], dict) else metrics["miou"]
        if not isinstance(value, int | float):
            raise ValueError(f"--miou-file {path}: the mIoU of {name!r} is not a number: {value!r}")
        out[name] = float(value)
    return out


def analyze_runs(
    weights: Sequence[str | Path],
    data: str | Path,
    out_dir: str | Path,
    split: str = "val",
    per_class: int = 5000,
    seed: int = 0,
    teacher_input_size: tuple[int, int] | None | str = "crop",
    export_features: bool = False,
    miou_file: str | Path | None = None,
    device: str | torch.device = "cpu",
    block_size: int = 4096,
) -> AnalysisResult:
    """Sample, measure U/T/G/A per model and against its teacher, plot, export; write structure.json.

    Args:
        weights: one or more ``cmcr-train`` checkpoints.
        data: prepared folder; ``split`` names the analysed split.
        out_dir: output folder (structure.json, PNGs, features/*.npz).
        per_class, seed: the selection (see the module docstring).
        teacher_input_size: see :func:`extract_features`.
        export_features: write ``features/<model>.npz`` (student, teacher, labels, class_names, scan, point).
        miou_file: see :func:`read_miou_file`; adds Pearson/Spearman correlations (needs ≥ 3 models).
        device: where networks and metrics run.
        block_size: block rows of the streamed uniformity.

    Returns:
        AnalysisResult.
    """
    from cmcr_core.data.prepared import PreparedDataset
    from cmcr_core.eval import plots
    from cmcr_core.eval.structure import compare_to_teacher, correlation, per_class_tolerance

    if not weights:
        raise ValueError("no model: pass at least one --weights CHECKPOINT")
    out, paths = Path(out_dir), [Path(w) for w in weights]
    names = _unique_names(paths)
    mious = read_miou_file(miou_file, names) if miou_file is not None else None
    if mious is not None and len(names) < 3:
        raise ValueError(f"--miou-file: a correlation needs at least 3 models, got {len(names)}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source = PreparedDataset(data, split)
    selection = select_points(source, per_class, seed, split)
    wall: dict[str, Any] = {"selection_s": time.perf_counter() - t0, "models": {}}
    report: dict[str, Any] = {"data": str(data), "selection": selection.summary(),
                              "teacher_input_size": teacher_input_size, "models": {}}
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    files: list[Path] = []
    for path, name in zip(paths, names, strict=True):
        t1 = time.perf_counter()
        run = load_pretraining_run(path, name, device=device)
        student, teacher = extract_features(run, source, selection, teacher_input_size, device)
        t2 = time.perf_counter()
        x3, x2 = torch.from_numpy(student).to(device), torch.from_numpy(teacher).to(device)
        labels = torch.from_numpy(selection.label).to(device)
        classes = len(EVALUATED_CLASS_NAMES)
        metrics = compare_to_teacher(x3, x2, labels, classes, block_size=block_size).as_dict()
        tol3, _ = per_class_tolerance(x3, labels, classes)
        tol2, _ = per_class_tolerance(x2, labels, classes)
        per_class_t = {n: [None if np.isnan(a) else float(a), None if np.isnan(b) else float(b)]
                       for n, a, b in zip(EVALUATED_CLASS_NAMES, tol3.tolist(), tol2.tolist(), strict=True)}
        size = list(run.recipe.data.crop_size) if teacher_input_size == "crop" else teacher_input_size
        report["models"][name] = {"checkpoint": str(path), "method": run.recipe.method, "step": run.step,
                                  "teacher": run.teacher, "teacher_input_size": size, **metrics,
                                  "tolerance_per_class_3d_2d": per_class_t}
        wall["models"][name] = {"features_s": t2 - t1, "metrics_s": time.perf_counter() - t2}
        features[name] = (student, teacher)
        del run
        if export_features:
            path_npz = out / "features" / f"{name}.npz"
            path_npz.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path_npz, student=student, teacher=teacher, labels=selection.label,
                                class_names=np.asarray(EVALUATED_CLASS_NAMES), scan=selection.scan,
                                point=selection.point)
            files.append(path_npz)
    first_teacher = features[names[0]][1]
    report["shared_teacher"] = all(
        t.shape == first_teacher.shape and np.allclose(t, first_teacher, atol=1e-5)
        for _, t in features.values()
    )
    if mious is not None:
        report["miou"] = mious
        report["correlation"] = {
            m: correlation([report["models"][n][m] for n in names], [mious[n] for n in names])
            for m in CORRELATED_METRICS
        }
    t3 = time.perf_counter()
    files += _plots(out, names, features, selection, report, mious, plots)
    wall["plots_s"] = time.perf_counter() - t3
    report["wall_time_s"] = wall
    write_json(out / STRUCTURE_JSON, report)
    return AnalysisResult(out, report, (out / STRUCTURE_JSON, *files))


def _plots(out: Path, names: list[str], features: dict[str, tuple[np.ndarray, np.ndarray]],
           selection: PointSelection, report: dict[str, Any], mious: dict[str, float] | None,
           plots: Any) -> list[Path]:
    files = []
    labels, models = selection.label, report["models"]
    teacher_title = "teacher (2D)" if report["shared_teacher"] else f"teacher of {names[0]} (2D)"
    sets = {teacher_title: features[names[0]][1], **{f"{n} (3D)": features[n][0] for n in names}}
    files.append(plots.plot_pca_scatter(sets, labels, out / "pca.png", EVALUATED_CLASS_NAMES,
                                        title="PCA of sampled features, coloured by class"))
    for name in names:
        student, teacher = features[name]
        gap = models[name]["modality_gap"]
        files.append(plots.plot_pca_scatter({"teacher (2D)": teacher, f"{name} (3D)": student}, labels,
                                            out / f"pca_joint_{name}.png", EVALUATED_CLASS_NAMES, joint=True,
                                            title=f"{name}: joint PCA (modality gap {gap:.3f})"))
    bars = {n: {"U": models[n]["uniformity_3d"], "T": models[n]["tolerance_3d"],
                "G": models[n]["modality_gap"]} for n in names}
    reference = {"U": models[names[0]]["uniformity_2d"], "T": models[names[0]]["tolerance_2d"]}
    files.append(plots.plot_structure_bars(bars, out / "structure_bars.png", reference=reference,
                                           reference_name=teacher_title, title="uniformity, tolerance, gap"))
    if mious is not None:
        for metric in ("abs_delta_uniformity", "abs_delta_tolerance", "modality_gap"):
            files.append(plots.plot_metric_vs_performance(
                [models[n][metric] for n in names], [100 * mious[n] for n in names], names,
                out / f"{metric}_vs_miou.png", xlabel=metric))
    return files


def run_toy(num_clusters: int, out_dir: str | Path, iterations: int = 400, seed: int = 0) -> dict[str, Any]:
    """`cmcr analyze toy`: the toy distillation (docs/analysis.md) with every loss; curves, spheres, toy.json.

    Returns:
        The summary written to ``toy.json`` (source U/T, final U/T and loss per loss, files).
    """
    from cmcr_core.eval import plots
    from cmcr_core.eval.toy import ToyConfig, toy_setups
    from cmcr_core.runs.toy import run_toy_experiment

    if num_clusters not in (1, 3):
        raise ValueError(f"--clusters must be 1 or 3 (the paper's two setups), got {num_clusters}")
    base = toy_setups(seed, iterations)["one_cluster" if num_clusters == 1 else "three_clusters"]
    config = ToyConfig(**{**base.__dict__, "snapshot_iterations": (0, iterations // 4)})
    result = run_toy_experiment(config)
    out = Path(out_dir)
    files = [plots.plot_toy_curves(result, out / f"toy_{num_clusters}_curves.png"),
             plots.plot_toy_spheres(result, out / f"toy_{num_clusters}_spheres.png")]
    summary = {
        "clusters": num_clusters, "iterations": iterations, "seed": seed,
        "source": {"uniformity": result.source_uniformity, "tolerance": result.source_tolerance},
        "final": {name: {"uniformity": float(c.uniformity[-1]), "tolerance": float(c.tolerance[-1]),
                         "loss": float(c.loss[-1])} for name, c in result.curves.items()},
        "files": [str(f) for f in files],
    }
    write_json(out / f"toy_{num_clusters}.json", summary)
    return summary
