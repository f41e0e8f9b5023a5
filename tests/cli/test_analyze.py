"""`cmcr analyze` end to end: structure.json against brute-force metrics of the exported features, plots,
correlation with mIoU, the toy subcommand and clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.eval.toy import vmf_s2_uniformity

runner = CliRunner()
MODELS = ("relational", "similarity", "contrastive")


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _naive_metrics(student: np.ndarray, teacher: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Brute force over all pairs (PROTOCOLS.md §13 definitions), float64."""

    def uniformity(x: np.ndarray) -> float:
        sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        upper = np.triu_indices(len(x), k=1)
        return -math.log(np.exp(-2.0 * sq[upper]).mean())

    def tolerance(x: np.ndarray) -> float:
        total, pairs = 0.0, 0
        for c in np.unique(labels):
            members = x[labels == c]
            gram = members @ members.T
            total += gram.sum() - np.trace(gram)
            pairs += len(members) * (len(members) - 1)
        return total / pairs

    s, t = _unit(student), _unit(teacher)
    return {
        "uniformity_3d": uniformity(s), "uniformity_2d": uniformity(t), "tolerance_3d": tolerance(s),
        "tolerance_2d": tolerance(t), "modality_gap": float(np.linalg.norm(t.mean(0) - s.mean(0))),
        "alignment": float(((s - t) ** 2).sum(1).mean()),
    }


def _ranks(v: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(v)).astype(float)


def test_analyze_three_models_writes_exact_metrics_plots_and_correlations(runs, prepared_world, tmp_path):
    mious = {"relational": 0.30, "similarity": 0.10, "contrastive": 0.20}
    miou_file = tmp_path / "miou.json"
    miou_file.write_text(json.dumps(mious))
    out = tmp_path / "analysis"
    args = ["analyze", "--data", str(prepared_world), "--out", str(out), "--split", "mini_val",
            "--per-class", "25", "--export-features", "--miou-file", str(miou_file), "--device", "cpu"]
    for model in MODELS:
        args += ["--weights", str(runs[model])]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for model in MODELS:
        assert model in result.output
    report = json.loads((out / "structure.json").read_text())
    assert report["shared_teacher"]  # every run rebuilt the same seeded random teacher
    for model in MODELS:
        exported = np.load(out / "features" / f"{model}.npz")
        labels = exported["labels"]
        assert np.bincount(labels, minlength=16).max() <= 25
        naive = _naive_metrics(exported["student"], exported["teacher"], labels)
        got = report["models"][model]
        for key, value in naive.items():
            assert got[key] == pytest.approx(value, abs=2e-5), key
        delta_u = naive["uniformity_3d"] - naive["uniformity_2d"]
        assert got["delta_uniformity"] == pytest.approx(delta_u, abs=3e-5)
        assert got["abs_delta_tolerance"] == pytest.approx(
            abs(naive["tolerance_3d"] - naive["tolerance_2d"]), abs=3e-5)
        assert got["num_features"] == len(labels) == report["selection"]["num_features"]
    for metric, r in report["correlation"].items():
        x, y = [report["models"][m][metric] for m in MODELS], [mious[m] for m in MODELS]
        assert r["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
        assert r["spearman"] == pytest.approx(np.corrcoef(_ranks(x), _ranks(y))[0, 1], abs=1e-9)
    pngs = ["pca.png", "structure_bars.png", "modality_gap_vs_miou.png",
            *(f"pca_joint_{m}.png" for m in MODELS)]
    for name in pngs:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100


def test_analyze_mixes_a_decoder_method_with_a_teacher_space_method(runs, prepared_world, tmp_path):
    out = tmp_path / "mixed"
    weights = ["--weights", str(runs["ppkt"]), "--weights", str(runs["relational"])]
    result = runner.invoke(app, ["analyze", *weights, "--data", str(prepared_world), "--out", str(out),
                                 "--split", "mini_val", "--per-class", "10", "--export-features",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "structure.json").read_text())
    assert not report["shared_teacher"]
    ppkt = np.load(out / "features" / "ppkt.npz")
    assert ppkt["student"].shape[1] == ppkt["teacher"].shape[1] == 64  # the trained decoder's space
    assert report["models"]["ppkt"]["method"] == "ppkt"


def test_analyze_toy_one_cluster(tmp_path):
    args = ["analyze", "toy", "--clusters", "1", "--iterations", "8", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "toy_1.json").read_text())
    # The source is one vMF cluster with κ = 5.35: its population U is the analytic value (≈ 0.89).
    assert summary["source"]["uniformity"] == pytest.approx(vmf_s2_uniformity(5.35), abs=0.02)
    assert set(summary["final"]) == set(MODELS)
    for name in ("toy_1_curves.png", "toy_1_spheres.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_analyze_errors_are_clear(runs, prepared_world, tmp_path):
    result = runner.invoke(app, ["analyze", "--data", str(prepared_world), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Missing option '--weights'" in result.output  # marked required
    bad = tmp_path / "miou.json"
    bad.write_text(json.dumps({"relational": 0.3}))
    args = ["analyze", "--data", str(prepared_world), "--out", str(tmp_path / "out"), "--miou-file", str(bad)]
    for model in MODELS:
        args += ["--weights", str(runs[model])]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "no mIoU for model(s) ['similarity', 'contrastive']" in result.output
    result = runner.invoke(app, ["analyze", "toy", "--clusters", "2"])
    assert result.exit_code == 2 and "--clusters must be 1 or 3" in result.output
