"""Readers for the object-level datasets used by ReCon (the file formats of qizekun/ReCon's loaders).

Every reader returns an ``ObjectSet``: raw xyz as stored (no normalisation, no sampling; the dataset does
that), integer labels, object ids and class names. Layouts:

* ScanObjectNN ``h5_files``: ``main_split[_nobg]/{training,test}_objectdataset[_augmentedrot_scale75].h5``,
  keys ``data`` (n x 2048 x 3) and ``label`` (n,); the 15 classes of ``SCANOBJECTNN_CLASSES``, unless a
  ``shape_names.txt`` in the root names others (the synthetic objects written in this layout have one).
* ModelNet40 resampled: ``modelnet40_shape_names.txt``, ``modelnet40_{train,test}.txt`` (ids such as
  ``airplane_0001``), ``{class}/{id}.txt`` with comma-separated x,y,z,nx,ny,nz per line.
* ModelNet40 ``ply_hdf5_2048``: ``{train,test}_files.txt`` listing ``ply_data_*.h5`` (keys ``data``
  n x 2048 x 3, ``label`` n x 1), ``shape_names.txt``.
* ShapeNet-55: ``shapenet_pc/{synset}-{model}.npy``, ``ShapeNet-55/{train,test}.txt``,
  ``shapenet_img/{synset}-{model}.png``, ``shapenet55.json`` (rows with ``catalogue``, ``describe``; the
  label of an object is the row index of its synset, as in the reference loader).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

SCANOBJECTNN_CLASSES = (
    "bag",
    "bin",
    "box",
    "cabinet",
    "chair",
    "desk",
    "display",
    "door",
    "shelf",
    "table",
    "bed",
    "pillow",
    "sink",
    "sofa",
    "toilet",
)
SCANOBJECTNN_VARIANTS = {
    "obj_bg": ("main_split", ""),
    "obj_only": ("main_split_nobg", ""),
    "hardest": ("main_split", "_augmentedrot_scale75"),
}
SPLITS = ("train", "test")


@dataclass
class ObjectSet:
    """A list of objects: ``points[i]`` is P_i x 3 float32, ``labels`` n int64, ``ids`` n names.

    ``normals`` (P_i x 3 each) is filled where the layout stores them.
    """

    points: list[np.ndarray]
    labels: np.ndarray
    ids: list[str]
    class_names: list[str]
    normals: list[np.ndarray] | None = field(default=None)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not len(self.points) == len(self.labels) == len(self.ids):
            raise ValueError(
                f"ObjectSet sizes differ: {len(self.points)} clouds, {len(self.labels)} labels, "
                f"{len(self.ids)} ids"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(
                f"labels must lie in [0, {len(self.class_names)}), got range "
                f"[{self.labels.min()}, {self.labels.max()}]"
            )

    def __len__(self) -> int:
        return len(self.labels)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing list file {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_h5_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"missing HDF5 file {path}")
    with h5py.File(path, "r") as f:
        for key in ("data", "label"):
            if key not in f:
                raise KeyError(f"{path} has no dataset {key!r} (keys: {sorted(f.keys())})")
        data = np.asarray(f["data"][:], dtype=np.float32)
        label = np.asarray(f["label"][:]).reshape(-1).astype(np.int64)
    if data.ndim != 3 or data.shape[2] < 3 or data.shape[0] != label.shape[0]:
        raise ValueError(f"{path}: expected data n x P x 3 and label n, got {data.shape} and {label.shape}")
    return data[:, :, :3], label


def scanobjectnn_path(root: str | Path, split: str, variant: str = "obj_bg") -> Path:
    """ScanObjectNN h5 path for ``split`` (train/test) and ``variant`` (obj_bg, obj_only, hardest)."""
    _check_split(split)
    if variant not in SCANOBJECTNN_VARIANTS:
        raise ValueError(
            f"ScanObjectNN variant must be one of {sorted(SCANOBJECTNN_VARIANTS)}, got {variant!r}"
        )
    folder, suffix = SCANOBJECTNN_VARIANTS[variant]
    name = "training" if split == "train" else "test"
    return Path(root) / folder / f"{name}_objectdataset{suffix}.h5"


def read_scanobjectnn(
    root: str | Path,
    split: str,
    variant: str = "obj_bg",
    class_names: tuple[str, ...] | list[str] | None = None,
) -> ObjectSet:
    """ScanObjectNN split as stored (no normalisation). Ids are ``{variant}_{split}_{row}``; class names:
    ``class_names``, else ``root/shape_names.txt`` where it exists, else ``SCANOBJECTNN_CLASSES``."""
    path = scanobjectnn_path(root, split, variant)
    if class_names is None:
        names_file = Path(root) / "shape_names.txt"
        class_names = _read_lines(names_file) if names_file.is_file() else SCANOBJECTNN_CLASSES
    data, label = _read_h5_arrays(path)
    ids = [f"{variant}_{split}_{i:05d}" for i in range(len(label))]
    return ObjectSet(list(data), label, ids, list(class_names))


def read_modelnet_resampled(root: str | Path, split: str, prefix: str = "modelnet40") -> ObjectSet:
    """ModelNet (``modelnet40_normal_resampled`` layout) split: xyz and normals of every listed shape."""
    _check_split(split)
    root = Path(root)
    class_names = _read_lines(root / f"{prefix}_shape_names.txt")
    class_index = {name: i for i, name in enumerate(class_names)}
    ids = _read_lines(root / f"{prefix}_{split}.txt")
    points, normals, labels = [], [], []
    for shape_id in ids:
        # class names contain underscores (night_stand), the id is "{class}_{4 digits}"
        class_name = shape_id.rsplit("_", 1)[0]
        if class_name not in class_index:
            raise ValueError(
                f"{root / f'{prefix}_{split}.txt'}: id {shape_id!r} has unknown class {class_name!r}"
            )
        path = root / class_name / f"{shape_id}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"missing ModelNet shape file {path}")
        rows = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        if rows.shape[1] < 3:
            raise ValueError(
                f"{path}: expected comma-separated x,y,z[,nx,ny,nz] rows, got {rows.shape[1]} columns"
            )
        points.append(rows[:, :3])
        normals.append(rows[:, 3:6] if rows.shape[1] >= 6 else np.zeros_like(rows[:, :3]))
        labels.append(class_index[class_name])
    return ObjectSet(points, np.asarray(labels), ids, class_names, normals)


def read_modelnet_h5(root: str | Path, split: str) -> ObjectSet:
    """ModelNet40 ``ply_hdf5_2048`` split; shards are looked up under ``root`` by file name."""
    _check_split(split)
    root = Path(root)
    class_names = _read_lines(root / "shape_names.txt")
    points, labels, ids = [], [], []
    for entry in _read_lines(root / f"{split}_files.txt"):
        shard = Path(entry).name
        data, label = _read_h5_arrays(root / shard)
        points.extend(data)
        labels.append(label)
        ids.extend(f"{Path(shard).stem}_{i:04d}" for i in range(len(label)))
    all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return ObjectSet(points, all_labels, ids, class_names)


def read_shapenet55_classes(root: str | Path) -> tuple[list[str], list[str]]:
    """Synsets (with the leading 0 restored) and descriptions from ``shapenet55.json``, in label order.

    Accepts a list of records (``[{"catalogue": ..., "describe": ...}]``) or pandas' column orientation.
    """
    path = Path(root) / "shapenet55.json"
    if not path.is_file():
        raise FileNotFoundError(f"missing ShapeNet-55 category file {path}")
    table = json.loads(path.read_text())
    if isinstance(table, dict):
        if "catalogue" not in table or "describe" not in table:
            raise KeyError(f"{path}: expected columns 'catalogue' and 'describe', got {sorted(table)}")
        keys = sorted(table["catalogue"], key=int)
        rows = [{"catalogue": table["catalogue"][k], "describe": table["describe"][k]} for k in keys]
    else:
        rows = table
    try:
        synsets = ["0" + str(row["catalogue"]) for row in rows]
        descriptions = [str(row["describe"]) for row in rows]
    except (KeyError, TypeError) as err:
        raise KeyError(f"{path}: every row needs 'catalogue' and 'describe' ({err})") from err
    return synsets, descriptions


def read_shapenet55(root: str | Path, split: str = "train") -> ObjectSet:
    """ShapeNet-55 objects of ``split`` (``train``, ``test`` or ``whole`` = test + train as in the runner).

    Ids are ``{synset}-{model}``; class names are the category descriptions.
    """
    root = Path(root)
    if split not in ("train", "test", "whole"):
        raise ValueError(f"ShapeNet-55 split must be train, test or whole, got {split!r}")
    synsets, descriptions = read_shapenet55_classes(root)
    label_of = {s: i for i, s in enumerate(synsets)}
    lists = ["test", "train"] if split == "whole" else [split]
    names = [n for s in lists for n in _read_lines(root / "ShapeNet-55" / f"{s}.txt")]
    points, labels, ids = [], [], []
    for name in names:
        synset = name.split("-")[0]
        if synset not in label_of:
            raise ValueError(
                f"{root / 'ShapeNet-55'}: object {name!r} has synset {synset!r} not in shapenet55.json"
            )
        path = root / "shapenet_pc" / name
        if not path.is_file():
            raise FileNotFoundError(f"missing ShapeNet-55 cloud {path}")
        cloud = np.load(path).astype(np.float32)
        if cloud.ndim != 2 or cloud.shape[1] < 3:
            raise ValueError(f"{path}: expected P x 3 array, got shape {cloud.shape}")
        points.append(cloud[:, :3])
        labels.append(label_of[synset])
        ids.append(name[:-4] if name.endswith(".npy") else name)
    return ObjectSet(points, np.asarray(labels), ids, descriptions)


def read_shapenet_image(root: str | Path, object_id: str) -> np.ndarray:
    """Rendered view of a ShapeNet-55 object as H x W x 3 uint8 RGB (alpha dropped)."""
    path = Path(root) / "shapenet_img" / f"{object_id}.png"
    if not path.is_file():
        raise FileNotFoundError(f"missing render {path} for object {object_id!r}")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
