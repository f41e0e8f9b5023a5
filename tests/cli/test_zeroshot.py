"""`cmcr zeroshot` end to end against a naive evaluation: cosine argmax per point and hand-counted IoUs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.eval.features import extract_features, select_points
from cmcr_core.runs.pretrain import load_pretraining_run
from cmcr_core.sparse import SparseTensor
from cmcr_core.sparse.voxelize import voxelize

from .conftest import ABSENT, DIM

runner = CliRunner()


@pytest.fixture(scope="module")
def val_points(run: Path, prepared_world: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D) of every val point, coarse labels (N,)), computed without the evaluator."""
    loaded = load_pretraining_run(run)
    d = loaded.recipe.data
    feats, labels = [], []
    with torch.no_grad():
        for item in PreparedDataset(prepared_world, "mini_val"):
            points = torch.from_numpy(np.asarray(item.points, dtype=np.float32))
            vox = voxelize(points, d.voxel_size, d.cylindrical)
            coords = torch.cat([torch.zeros(len(vox.coords), 1, dtype=torch.int32), vox.coords.int()], 1)
            out = loaded.method.student(SparseTensor(points[vox.representative, 3:4] * d.intensity_scale,
                                                     coords)).features
            feats.append(out[vox.inverse].double().numpy())
            labels.append(np.asarray(item.labels, dtype=np.int64))
    return np.concatenate(feats), np.concatenate(labels)


def _naive_miou(feats: np.ndarray, labels: np.ndarray, classes: np.ndarray, valid: np.ndarray) -> dict:
    """Predicted coarse id = 1 + argmax cosine over valid classes; IoU over points with a label."""
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    c = np.zeros_like(classes, dtype=np.float64)
    c[valid] = classes[valid] / np.linalg.norm(classes[valid], axis=1, keepdims=True)
    cos = f @ c.T
    cos[:, ~valid] = -np.inf
    pred = cos.argmax(1) + 1
    keep = labels > 0
    ious = {}
    for k in range(1, 17):
        tp = int(((pred == k) & (labels == k) & keep).sum())
        fp = int(((pred == k) & (labels != k) & keep).sum())
        fn = int(((pred != k) & (labels == k)).sum())
        if tp + fp + fn:
            ious[k] = tp / (tp + fp + fn)
    return {"miou": float(np.mean(list(ious.values()))), "ious": ious, "pred": pred}


def _invoke(run: Path, data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["zeroshot", "--weights", str(run), "--data", str(data), "--out", str(out),
                               "--split", "mini_val", "--device", "cpu", *extra])


def test_identical_embeddings_predict_the_first_class_everywhere(run, prepared_world, val_points, tmp_path):
    embeddings = tmp_path / "same.npy"
    np.save(embeddings, np.ones((16, DIM), dtype=np.float32))
    result = _invoke(run, prepared_world, tmp_path / "out", "--text-embeddings", str(embeddings))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # All cosines tie, argmax takes the first class: every labelled point is predicted "barrier" (id 1).
    _, labels = val_points
    labelled = labels[labels > 0]
    present = np.unique(labelled)
    iou_barrier = float((labelled == 1).sum()) / len(labelled)
    assert metrics["iou_per_class"]["barrier"] == pytest.approx(iou_barrier)
    assert metrics["miou"] == pytest.approx((iou_barrier) / len(set(present.tolist()) | {1}))
    assert metrics["classifier"]["kind"] == "text_embeddings"
    assert "mIoU" in result.output


def test_class_mean_embeddings_give_the_naive_miou(run, prepared_world, val_points, tmp_path):
    feats, labels = val_points
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    means = np.stack([unit[labels == k].mean(0) if (labels == k).any() else np.zeros(DIM)
                      for k in range(1, 17)])
    path = tmp_path / "means.npz"
    np.savez(path, embeddings=means.astype(np.float32))
    result = _invoke(run, prepared_world, tmp_path / "out", "--text-embeddings", str(path))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    naive = _naive_miou(feats, labels, means, np.linalg.norm(means, axis=1) > 0)
    # The command scores in float32, the reference in float64: a handful of near-tie points out of ~10⁵
    # may flip, hence the small tolerances.
    assert metrics["miou"] == pytest.approx(naive["miou"], abs=2e-5)
    for k, iou in naive["ious"].items():
        assert metrics["iou_per_class"][metrics["class_names"][k]] == pytest.approx(iou, abs=2e-4)


def test_default_classifier_is_the_teacher_files_prototypes(run, prepared_world, val_points, teacher_file,
                                                            tmp_path):
    result = _invoke(run, prepared_world, tmp_path / "out")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["classifier"] == {"kind": "teacher_prototypes", "path": str(teacher_file),
                                     "never_predicted": ["bicycle", "trailer"]}
    meta = torch.load(teacher_file, weights_only=True)["meta"]
    valid = np.asarray(meta["prototype_present"])
    feats, labels = val_points
    naive = _naive_miou(feats, labels, meta["prototypes"].double().numpy(), valid)
    assert metrics["miou"] == pytest.approx(naive["miou"], abs=2e-5)  # float32 vs float64, as above
    confusion = np.asarray(metrics["confusion_matrix"])
    for c in ABSENT:
        assert confusion[:, c + 1].sum() == 0  # absent prototypes are never predicted
    saved = np.load(tmp_path / "out" / "class_embeddings.npy")
    np.testing.assert_allclose(saved[valid], meta["prototypes"].numpy()[valid], atol=1e-6)


def test_data_prototypes_are_class_means_of_the_teacher_features(run, prepared_world, tmp_path):
    result = _invoke(run, prepared_world, tmp_path / "out", "--prototypes", "data", "--prototype-split",
                     "mini_train", "--per-class", "20")
    assert result.exit_code == 0, result.output
    source = PreparedDataset(prepared_world, "mini_train")
    selection = select_points(source, 20, 0)
    _, teacher = extract_features(load_pretraining_run(run), source, selection)
    unit = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    saved = np.load(tmp_path / "out" / "class_embeddings.npy")
    for c in range(16):
        if (selection.label == c).any():
            mean = unit[selection.label == c].mean(0)
            np.testing.assert_allclose(saved[c], mean / np.linalg.norm(mean), atol=1e-5)


def test_errors_name_the_problem(run, prepared_world, tmp_path):
    wrong_dim = tmp_path / "wrong.npy"
    np.save(wrong_dim, np.ones((16, DIM + 3), dtype=np.float32))
    result = _invoke(run, prepared_world, tmp_path / "a", "--text-embeddings", str(wrong_dim))
    assert result.exit_code == 2 and f"D = {DIM + 3}" in result.output
    wrong_rows = tmp_path / "rows.npy"
    np.save(wrong_rows, np.ones((15, DIM), dtype=np.float32))
    result = _invoke(run, prepared_world, tmp_path / "b", "--text-embeddings", str(wrong_rows))
    assert result.exit_code == 2 and "must be (16, D)" in result.output
    plain = tmp_path / "plain.pt"
    torch.save({"format": "cmcr-teacher", "meta": {}}, plain)
    result = _invoke(run, prepared_world, tmp_path / "c", "--teacher", str(plain))
    assert result.exit_code == 2 and "holds no class prototypes" in result.output
    result = _invoke(run, prepared_world, tmp_path / "d", "--prototypes", "data", "--text-embeddings",
                     str(plain))
    assert result.exit_code == 2 and "choose one of" in result.output
