"""Few-shot folds: sampled folds on hand-built object sets, and Point-BERT's fold files read safely."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from cmcr_core.data.objects import ObjectSet
from cmcr_core.data.objects.fewshot import read_published_fold, sample_fold

NAMES = ["a", "b", "c", "d", "e", "f"]


def _set(counts: list[int], prefix: str) -> ObjectSet:
    """counts[c] objects of class c; object k's cloud is filled with k (so rows can be traced)."""
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    points = [np.full((5, 3), k, np.float32) for k in range(len(labels))]
    return ObjectSet(points, np.asarray(labels), [f"{prefix}{k}" for k in range(len(labels))], list(NAMES))


TRAIN = _set([4, 4, 4, 4, 4, 1], "tr")  # class f has too few training objects
TEST = _set([3, 3, 1, 3, 3, 3], "te")  # class c has too few test objects


def test_a_fold_has_way_classes_shot_and_queries_each_renumbered() -> None:
    fold = sample_fold(TRAIN, TEST, way=3, shot=2, queries=2, seed=5, fold=1)
    assert len(set(fold.classes)) == 3 and not {2, 5} & set(fold.classes)  # c and f are not eligible
    assert fold.train.class_names == [NAMES[c] for c in fold.classes]
    for objects, full, count in ((fold.train, TRAIN, 2), (fold.test, TEST, 2)):
        assert list(objects.labels) == [0, 0, 1, 1, 2, 2]
        assert len(set(objects.ids)) == 3 * count
        for new, obj_id, cloud in zip(objects.labels, objects.ids, objects.points, strict=True):
            row = full.ids.index(obj_id)
            assert full.labels[row] == fold.classes[new]  # the original class of each new label
            np.testing.assert_array_equal(cloud, full.points[row])
    record = fold.record()
    assert record["classes"] == fold.classes and record["test_ids"] == fold.test.ids


def test_folds_are_seeded_independent_and_different() -> None:
    first = sample_fold(TRAIN, TEST, 3, 2, 2, seed=5, fold=1)
    again = sample_fold(TRAIN, TEST, 3, 2, 2, seed=5, fold=1)
    assert first.record() == again.record()
    others = [sample_fold(TRAIN, TEST, 3, 2, 2, seed=5, fold=f).record() for f in range(6)]
    assert others[1] == first.record()  # fold 1 does not depend on the folds drawn before it
    assert len({str(r) for r in others}) > 1
    assert sample_fold(TRAIN, TEST, 3, 2, 2, seed=6, fold=1).record() != first.record()


def test_impossible_folds_are_refused() -> None:
    with pytest.raises(ValueError, match="only 4 classes"):
        sample_fold(TRAIN, TEST, way=5, shot=2, queries=2, seed=0, fold=0)
    with pytest.raises(ValueError, match="way >= 2"):
        sample_fold(TRAIN, TEST, way=1, shot=2, queries=2, seed=0, fold=0)


def _write_fold(path: Path) -> None:
    rng = np.random.default_rng(0)
    train = [(rng.normal(size=(50, 6)).astype(np.float32), new, np.array([orig], np.int32))
             for new, orig in ((0, 17), (0, 17), (1, 3), (1, 3))]
    test = [(rng.normal(size=(50, 6)).astype(np.float32), new, np.array([orig], np.int32))
            for new, orig in ((1, 3), (0, 17))]
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        pickle.dump({"train": train, "test": test}, f)


def test_published_fold_files_are_read_as_xyz_with_their_labels(tmp_path: Path) -> None:
    _write_fold(tmp_path / "2way2shot" / "4.pkl")
    fold = read_published_fold(tmp_path, way=2, shot=2, fold=4)
    assert fold.classes == [17, 3] and fold.train.class_names == ["class17", "class3"]
    assert list(fold.train.labels) == [0, 0, 1, 1] and list(fold.test.labels) == [1, 0]
    assert all(p.shape == (50, 3) for p in fold.train.points + fold.test.points)
    with pytest.raises(FileNotFoundError, match="5.pkl"):
        read_published_fold(tmp_path, way=2, shot=2, fold=5)


def test_fold_files_cannot_unpickle_anything_but_arrays(tmp_path: Path) -> None:
    path = tmp_path / "2way2shot" / "0.pkl"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        pickle.dump({"train": OrderedDict(), "test": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="numpy arrays only"):
        read_published_fold(tmp_path, way=2, shot=2, fold=0)
