"""Writers for the object-dataset layouts read by ``readers`` (used for the synthetic objects and tests).

Each writer produces exactly the files and keys the corresponding reader (and the reference code) expects;
``write_synthetic_object_datasets`` generates synthetic objects and writes all four layouts at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from cmcr_core.data.objects.readers import (
    SCANOBJECTNN_CLASSES,
    SCANOBJECTNN_VARIANTS,
    ObjectSet,
    scanobjectnn_path,
)
from cmcr_core.data.objects.scans import ScanSettings, synthetic_scans
from cmcr_core.data.objects.synthetic import SHAPE_CLASSES, make_synthetic_objects


def _stack_fixed(objects: ObjectSet, what: str) -> np.ndarray:
    sizes = {p.shape[0] for p in objects.points}
    if len(sizes) > 1:
        raise ValueError(f"{what} needs the same number of points per object, got sizes {sorted(sizes)}")
    if not objects.points:
        return np.zeros((0, 0, 3), np.float32)
    return np.stack(objects.points).astype(np.float32)


def write_scanobjectnn(
    root: str | Path, train: ObjectSet, test: ObjectSet, variant: str = "obj_bg"
) -> list[Path]:
    """Write ``{training,test}_objectdataset*.h5`` (keys ``data`` n x P x 3 float32, ``label`` n int64), and
    ``shape_names.txt`` when the classes are not ScanObjectNN's own (the reader then names them right)."""
    if variant not in SCANOBJECTNN_VARIANTS:
        raise ValueError(
            f"ScanObjectNN variant must be one of {sorted(SCANOBJECTNN_VARIANTS)}, got {variant!r}"
        )
    if tuple(train.class_names) != SCANOBJECTNN_CLASSES:
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "shape_names.txt").write_text("".join(f"{n}\n" for n in train.class_names))
    paths = []
    for split, objects in (("train", train), ("test", test)):
        path = scanobjectnn_path(root, split, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=_stack_fixed(objects, f"ScanObjectNN {split}"))
            f.create_dataset("label", data=objects.labels.astype(np.int64))
        paths.append(path)
    return paths


def write_modelnet_resampled(
    root: str | Path, train: ObjectSet, test: ObjectSet, prefix: str = "modelnet40"
) -> dict[str, list[str]]:
    """Write the ``modelnet40_normal_resampled`` layout; returns the ids written per split.

    Ids are ``{class}_{k:04d}`` numbered per class over train then test (as in the real lists); normals
    are written where ``normals`` is set, zeros otherwise.
    """
    if train.class_names != test.class_names:
        raise ValueError("train and test sets must share class_names")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = train.class_names
    (root / f"{prefix}_shape_names.txt").write_text("".join(f"{n}\n" for n in names))
    counter = dict.fromkeys(names, 0)
    written: dict[str, list[str]] = {}
    for split, objects in (("train", train), ("test", test)):
        ids = []
        for i, label in enumerate(objects.labels):
            name = names[label]
            counter[name] += 1
            shape_id = f"{name}_{counter[name]:04d}"
            normals = objects.normals[i] if objects.normals is not None else np.zeros_like(objects.points[i])
            (root / name).mkdir(exist_ok=True)
            rows = np.concatenate([objects.points[i], normals], axis=1)
            np.savetxt(root / name / f"{shape_id}.txt", rows, fmt="%.6f", delimiter=",")
            ids.append(shape_id)
        (root / f"{prefix}_{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        written[split] = ids
    return written


def write_modelnet_h5(
    root: str | Path, train: ObjectSet, test: ObjectSet, per_file: int = 2048
) -> list[Path]:
    """Write the ``modelnet40_ply_hdf5_2048`` layout: shards of ``per_file`` objects + list files.

    ``label`` is n x 1 uint8 as in the original shards; the list files carry the original
    ``data/modelnet40_ply_hdf5_2048/`` prefix, which readers strip.
    """
    if len(train.class_names) > 256:
        raise ValueError(f"uint8 labels hold at most 256 classes, got {len(train.class_names)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "shape_names.txt").write_text("".join(f"{n}\n" for n in train.class_names))
    paths = []
    for split, objects in (("train", train), ("test", test)):
        data = _stack_fixed(objects, f"ModelNet h5 {split}")
        entries = []
        for shard, start in enumerate(range(0, max(len(objects), 1), per_file)):
            path = root / f"ply_data_{split}{shard}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset("data", data=data[start : start + per_file])
                f.create_dataset(
                    "label", data=objects.labels[start : start + per_file, None].astype(np.uint8)
                )
                if objects.normals is not None:
                    f.create_dataset(
                        "normal",
                        data=np.stack(objects.normals[start : start + per_file]).astype(np.float32)
                        if len(objects)
                        else np.zeros((0, 0, 3), np.float32),
                    )
            entries.append(f"data/modelnet40_ply_hdf5_2048/{path.name}")
            paths.append(path)
        (root / f"{split}_files.txt").write_text("".join(f"{e}\n" for e in entries))
    return paths


def write_shapenet55(
    root: str | Path,
    objects: ObjectSet,
    splits: list[str],
    synsets: list[str],
    images: np.ndarray | None = None,
) -> list[str]:
    """Write the ShapeNet-55 layout (clouds, split lists, renders, ``shapenet55.json``).

    Args:
        objects: clouds, labels (index into ``synsets``) and class names (written as ``describe``).
        splits: per object ``train`` or ``test``.
        synsets: per class an 8-character synset starting with ``0`` (the json stores it without the 0).
        images: optional n x H x W x 3 uint8 renders, saved as PNG.

    Returns:
        the file names ``{synset}-{model}.npy`` in object order; the model part is the object's id.
    """
    root = Path(root)
    if len(synsets) != len(objects.class_names):
        raise ValueError(
            f"need one synset per class: {len(synsets)} synsets, {len(objects.class_names)} classes"
        )
    if any(not s.startswith("0") or not s[1:].isdigit() for s in synsets):
        raise ValueError(f"synsets must be digits with a leading 0 (stored as an int without it): {synsets}")
    if len(splits) != len(objects) or set(splits) - {"train", "test"}:
        raise ValueError("splits needs one 'train'/'test' entry per object")
    if any("-" in i for i in objects.ids):
        raise ValueError("object ids must not contain '-' (the reference splits names on it)")
    for sub in ("shapenet_pc", "ShapeNet-55", "shapenet_img"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = [
        {"catalogue": int(s[1:]), "describe": d} for s, d in zip(synsets, objects.class_names, strict=True)
    ]
    (root / "shapenet55.json").write_text(json.dumps(rows, indent=1))
    names = []
    for i, obj_id in enumerate(objects.ids):
        name = f"{synsets[objects.labels[i]]}-{obj_id}.npy"
        np.save(root / "shapenet_pc" / name, objects.points[i].astype(np.float32))
        if images is not None:
            Image.fromarray(images[i]).save(root / "shapenet_img" / name.replace(".npy", ".png"))
        names.append(name)
    for split in ("train", "test"):
        chosen = [n for n, s in zip(names, splits, strict=True) if s == split]
        (root / "ShapeNet-55" / f"{split}.txt").write_text("".join(f"{n}\n" for n in chosen))
    return names


def synthetic_synsets(num_classes: int) -> list[str]:
    """Stand-in synsets ``09000000``, ``09000001``, ... (never real ShapeNet ids)."""
    return [f"0{9000000 + i}" for i in range(num_classes)]


PRETRAIN_FIRST_INDEX = 1_000_000  # pretraining objects are numbered apart from the downstream ones


def write_synthetic_object_datasets(
    root: str | Path,
    train_per_class: int = 16,
    test_per_class: int = 4,
    num_points: int = 1024,
    seed: int = 0,
    image_size: int = 32,
    classes: tuple[str, ...] | list[str] = SHAPE_CLASSES,
    pretrain_per_class: int = 0,
    scans: bool = False,
    scan_settings: ScanSettings = ScanSettings(),
) -> dict[str, Path]:
    """Generate synthetic train/test objects and write them in every layout under ``root``.

    Sub-folders: ``ShapeNet55-34`` (with renders), ``ScanObjectNN/h5_files`` (obj_bg: the clean objects),
    ``modelnet40_normal_resampled`` and ``modelnet40_ply_hdf5_2048``. Returns the layout roots by name.

    ``pretrain_per_class`` > 0: the ShapeNet-55 copy holds objects of its own (all in its train list,
    numbered from ``PRETRAIN_FIRST_INDEX``), so pretraining never sees the downstream objects; otherwise it
    holds the train + test objects (train and test lists). ``scans``: ScanObjectNN's hardest variant is
    written too, holding a scan of every train / test object (``cmcr_core.data.objects.scans``).
    """
    root = Path(root)
    train = make_synthetic_objects(train_per_class, num_points, seed, classes, image_size, first_index=0)
    first_test = train_per_class * len(classes)
    test = make_synthetic_objects(test_per_class, num_points, seed, classes, image_size,
                                  first_index=first_test)
    layout = {
        "shapenet55": root / "ShapeNet55-34",
        "scanobjectnn": root / "ScanObjectNN" / "h5_files",
        "modelnet_resampled": root / "modelnet40_normal_resampled",
        "modelnet_h5": root / "modelnet40_ply_hdf5_2048",
    }
    if pretrain_per_class > 0:
        pre = make_synthetic_objects(pretrain_per_class, num_points, seed, classes, image_size,
                                     first_index=PRETRAIN_FIRST_INDEX, id_prefix="pre")
        write_shapenet55(layout["shapenet55"], pre.objects, ["train"] * len(pre.objects),
                         synthetic_synsets(len(classes)), pre.images)
    else:
        both = ObjectSet(
            train.objects.points + test.objects.points,
            np.concatenate([train.objects.labels, test.objects.labels]),
            train.objects.ids + test.objects.ids,
            list(classes),
            train.objects.normals + test.objects.normals,
        )
        write_shapenet55(
            layout["shapenet55"],
            both,
            ["train"] * len(train.objects) + ["test"] * len(test.objects),
            synthetic_synsets(len(classes)),
            np.concatenate([train.images, test.images]),
        )
    write_scanobjectnn(layout["scanobjectnn"], train.objects, test.objects)
    if scans:
        scanned = []
        for objects, first in ((train.objects, 0), (test.objects, first_test)):
            clouds = synthetic_scans(classes, objects.labels, first, seed, num_points, scan_settings)
            scanned.append(ObjectSet(clouds, objects.labels, objects.ids, list(classes)))
        write_scanobjectnn(layout["scanobjectnn"], *scanned, variant="hardest")
    write_modelnet_resampled(layout["modelnet_resampled"], train.objects, test.objects)
    write_modelnet_h5(layout["modelnet_h5"], train.objects, test.objects)
    return layout
