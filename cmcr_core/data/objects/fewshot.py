"""Few-shot folds: ``way`` classes, ``shot`` training and ``queries`` test objects per class.

ReCon (Qi et al., ICML 2023; qizekun/ReCon) evaluates 5-way and 10-way × 10-shot and 20-shot on ModelNet40
over 10 folds, with the fold files Point-BERT published (``ModelNetFewshot/{way}way{shot}shot/{fold}.pkl``,
20 queries per class). ``sample_fold`` draws a fold from any pair of train / test object sets instead (the
fold files are not part of every installation, and the synthetic objects have none): training objects from
the train set, queries from the test set, so they never overlap; ``read_published_fold`` reads the files.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmcr_core.data.objects.readers import ObjectSet

__all__ = ["FewShotFold", "read_published_fold", "sample_fold"]


@dataclass
class FewShotFold:
    """One episode: ``train`` / ``test`` with labels 0 … way − 1, and the original class of each new label."""

    train: ObjectSet
    test: ObjectSet
    classes: list[int]

    def record(self) -> dict[str, Any]:
        """What was drawn (JSON-friendly): original classes and names in label order, object ids."""
        return {"classes": self.classes, "class_names": self.train.class_names,
                "train_ids": self.train.ids, "test_ids": self.test.ids}


def _subset(objects: ObjectSet, rows: list[int], labels: list[int], names: list[str]) -> ObjectSet:
    normals = None if objects.normals is None else [objects.normals[i] for i in rows]
    return ObjectSet([objects.points[i] for i in rows], np.asarray(labels, np.int64),
                     [objects.ids[i] for i in rows], names, normals)


def sample_fold(train: ObjectSet, test: ObjectSet, way: int, shot: int, queries: int, seed: int,
                fold: int) -> FewShotFold:
    """Fold ``fold``: ``way`` classes drawn without replacement among those with at least ``shot`` training
    and ``queries`` test objects, then ``shot`` / ``queries`` objects of each, all from
    ``np.random.default_rng([seed, fold])`` (so fold f is the same whatever the number of folds run)."""
    if way < 2 or shot < 1 or queries < 1:
        raise ValueError(f"few-shot needs way >= 2, shot >= 1, queries >= 1; got {way}, {shot}, {queries}")
    if train.class_names != test.class_names:
        raise ValueError("few-shot: the train and test sets name different classes")
    eligible = [c for c in range(len(train.class_names))
                if (train.labels == c).sum() >= shot and (test.labels == c).sum() >= queries]
    if len(eligible) < way:
        raise ValueError(f"few-shot {way}-way {shot}-shot with {queries} queries: only {len(eligible)} "
                         f"classes have {shot} training and {queries} test objects")
    rng = np.random.default_rng([seed, fold])
    classes = [int(c) for c in rng.choice(eligible, way, replace=False)]
    names = [train.class_names[c] for c in classes]
    picked = {}
    for split, objects, count in (("train", train, shot), ("test", test, queries)):
        rows, labels = [], []
        for new, c in enumerate(classes):
            members = np.flatnonzero(objects.labels == c)
            rows += [int(i) for i in np.sort(rng.choice(members, count, replace=False))]
            labels += [new] * count
        picked[split] = _subset(objects, rows, labels, names)
    return FewShotFold(picked["train"], picked["test"], classes)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, tuples, dicts and numbers only: a fold file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"fold files hold numpy arrays only, not {module}.{name}")
        return super().find_class(module, name)


def read_published_fold(root: str | Path, way: int, shot: int, fold: int) -> FewShotFold:
    """Point-BERT's fold file ``root/{way}way{shot}shot/{fold}.pkl``: a dict with ``train`` and ``test`` lists
    of (points P × 6, new label, original label); xyz is kept, class names are ``class{original}``."""
    path = Path(root) / f"{way}way{shot}shot" / f"{fold}.pkl"
    if not path.is_file():
        raise FileNotFoundError(f"few-shot fold file {path} not found")
    with open(path, "rb") as f:
        content = _ArrayUnpickler(f).load()
    if not isinstance(content, dict) or not {"train", "test"} <= set(content):
        raise ValueError(f"{path}: expected a dict with 'train' and 'test' lists")
    originals: dict[int, int] = {}
    for _, new, original in content["train"]:
        originals[int(new)] = int(np.asarray(original).reshape(-1)[0])
    classes = [originals[i] for i in range(len(originals))]
    names = [f"class{c}" for c in classes]
    sets = {}
    for split in ("train", "test"):
        rows = content[split]
        points = [np.asarray(p, np.float32)[:, :3] for p, _, _ in rows]
        labels = [int(np.asarray(label).reshape(-1)[0]) for _, label, _ in rows]
        ids = [f"fold{fold}_{split}_{i:04d}" for i in range(len(rows))]
        sets[split] = ObjectSet(points, np.asarray(labels), ids, names)
    return FewShotFold(sets["train"], sets["test"], classes)
