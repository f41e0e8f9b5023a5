"""Confusion matrix, IoU and mIoU against a naive loop and nuscenes-devkit's ConfusionMatrix (the confusions
of points held on the test device, CMCR_TEST_DEVICE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nuscenes.eval.lidarseg.utils import ConfusionMatrix

from cmcr_core.data.labels import COARSE_CLASS_NAMES
from cmcr_core.eval.segmentation import (
    ConfusionAccumulator,
    compute_metrics,
    confusion_matrix,
    seed_summary,
)


def naive_confusion(gt: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    for g, p in zip(gt.tolist(), pred.tolist(), strict=True):
        if g != 0 and p != 0:
            cm[g, p] += 1
    return cm


def random_scan(rng: np.random.Generator, n: int, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    gt = rng.choice([0, *classes], size=n)
    pred = np.where(rng.random(n) < 0.6, np.maximum(gt, 1), rng.choice(classes, size=n))
    return gt.astype(np.uint8), pred.astype(np.uint8)


def on(device, *arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).to(device) for a in arrays)


def test_confusion_matches_naive_loop_and_accumulates(device) -> None:
    rng = np.random.default_rng(0)
    acc = ConfusionAccumulator(17)
    total = np.zeros((17, 17), dtype=np.int64)
    for _ in range(3):
        gt, pred = random_scan(rng, 500, list(range(1, 17)))
        single = confusion_matrix(*on(device, gt, pred), 17)
        np.testing.assert_array_equal(single, naive_confusion(gt, pred, 17))
        acc.update(*on(device, gt, pred))
        total += single
    np.testing.assert_array_equal(acc.matrix, total)
    assert acc.num_scans == 3


def test_metrics_equal_devkit_with_absent_classes(device) -> None:
    """Classes 5, 9 and 12 never occur in GT or predictions: NaN IoU, excluded, listed as absent."""
    rng = np.random.default_rng(1)
    classes = [c for c in range(1, 17) if c not in (5, 9, 12)]
    devkit = ConfusionMatrix(17, 0)
    acc = ConfusionAccumulator(17)
    for _ in range(4):
        gt, pred = random_scan(rng, 800, classes)
        devkit.update(gt, pred)
        acc.update(*on(device, gt, pred))
    metrics = compute_metrics(acc.matrix, COARSE_CLASS_NAMES, acc.num_scans, "mini_val")
    np.testing.assert_array_equal(metrics.confusion, devkit.global_cm)
    assert metrics.miou == pytest.approx(devkit.get_mean_iou(), abs=1e-6)
    assert metrics.freq_weighted_iou == pytest.approx(devkit.get_freqweighted_iou(), abs=1e-6)
    np.testing.assert_allclose(metrics.iou[1:], np.asarray(devkit.get_per_class_iou())[1:], atol=1e-6)
    assert set(metrics.absent) == {COARSE_CLASS_NAMES[c] for c in (5, 9, 12)}
    naive = [metrics.confusion[c, c] / (metrics.confusion[c].sum() + metrics.confusion[:, c].sum()
                                         - metrics.confusion[c, c]) for c in classes]
    assert metrics.miou == pytest.approx(float(np.mean(naive)), abs=1e-12)
    as_dict = metrics.to_dict()
    assert as_dict["iou_per_class"]["construction_vehicle"] is None  # never counted as 1 (defect D3)
    assert len(as_dict["confusion_matrix"]) == 17


def test_a_class_predicted_but_absent_from_gt_counts_as_zero() -> None:
    gt = np.array([1, 1, 2, 2], dtype=np.uint8)
    pred = np.array([1, 3, 2, 2], dtype=np.uint8)
    metrics = compute_metrics(confusion_matrix(gt, pred, 4), ["ignore", "a", "b", "c"], 1, "x")
    assert metrics.iou[3] == 0.0 and metrics.present == (1, 2, 3)
    assert metrics.miou == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_prediction_zero_or_out_of_range_is_refused(device) -> None:
    with pytest.raises(ValueError, match=r"class 0 is never predicted\), got 0\.\.2"):
        confusion_matrix(*on(device, np.array([1, 2]), np.array([0, 2])), 17)
    with pytest.raises(ValueError, match=r"ground truth must lie in 0\.\.16, got 2\.\.17"):
        confusion_matrix(*on(device, np.array([17, 2]), np.array([1, 2])), 17)


def test_seed_summary_mean_and_sample_std() -> None:
    pairs = ((0.5, 0.2), (0.6, 0.4), (0.7, 0.9))
    runs = [{"miou": m, "iou_per_class": {"a": a, "b": None}} for m, a in pairs]
    summary = seed_summary(runs)
    assert summary["miou"]["mean"] == pytest.approx(0.6)
    assert summary["miou"]["std"] == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1))
    assert summary["iou_per_class"]["a"]["std"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert summary["iou_per_class"]["b"] == {"mean": None, "std": None, "n": 0}
    assert math.isclose(seed_summary(runs[:1])["miou"]["std"], 0.0)
