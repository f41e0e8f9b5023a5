"""Read SemanticKITTI scans and prepare them into HDF5 shards (one per sequence) with an index.

```
cmcr prepare semantickitti --root DIR --out OUT
```

`DIR` holds `sequences/<NN>/velodyne/*.bin` (and `labels/*.label` for labelled sequences). Every sequence
becomes `OUT/sequences/<NN>.h5`, written to a `.tmp` file, fsynced and renamed (atomic); the index
`OUT/index-semantickitti.json` is rewritten atomically after each sequence, so an interrupted run loses
nothing and a re-run skips the sequences already prepared. Format: docs/data-format.md §7.

Label files are found by replacing the directory `velodyne` with `labels` and the extension `.bin` with
`.label` (never a substring replacement anywhere in the path, D22 of docs/differences.md).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cmcr_core.data.semantickitti.labels import KITTI_CLASS_NAMES, LEARNING_MAP, learning_lut
from cmcr_core.ops.atomic import fsync_directory, write_json_atomic

logger = logging.getLogger(__name__)

INDEX_NAME = "index-semantickitti.json"
FORMAT = "cmcr-prepared-semantickitti"
FORMAT_VERSION = 1
TRAIN_SEQUENCES = ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
VAL_SEQUENCES = ("08",)
TEST_SEQUENCES = tuple(f"{i:02d}" for i in range(11, 22))
_LUT = np.asarray(learning_lut(), dtype=np.uint8)


class KittiDataError(ValueError):
    """A SemanticKITTI tree or prepared folder that cannot be read as asked."""


def label_path(scan_path: str | Path) -> Path:
    """`.../velodyne/000123.bin` -> `.../labels/000123.label` (directory and extension only, D22 of
    docs/differences.md)."""
    scan_path = Path(scan_path)
    if scan_path.parent.name != "velodyne" or scan_path.suffix != ".bin":
        raise KittiDataError(f"{scan_path}: a SemanticKITTI scan is velodyne/<scan>.bin")
    return scan_path.parent.parent / "labels" / (scan_path.stem + ".label")


def read_scan(path: str | Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance of a `.bin` scan."""
    data = np.fromfile(path, dtype=np.float32)
    if data.size % 4:
        raise KittiDataError(f"{path}: {data.size} floats is not a multiple of 4 (x, y, z, reflectance)")
    return data.reshape(-1, 4)


def read_labels(path: str | Path, num_points: int) -> np.ndarray:
    """(N,) uint16 raw semantic ids of a `.label` file (`value & 0xFFFF`; the instance id is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise KittiDataError(f"label file missing: {path}")
    raw = np.fromfile(path, dtype=np.uint32)
    if raw.size != num_points:
        raise KittiDataError(f"{path}: {raw.size} labels for {num_points} points")
    return (raw & 0xFFFF).astype(np.uint16)


def to_train_ids(raw: np.ndarray) -> np.ndarray:
    """Raw semantic ids -> train ids 0..19 (LEARNING_MAP; unknown ids -> 0)."""
    return _LUT[raw.astype(np.int64)]


def find_sequences(root: str | Path) -> dict[str, list[Path]]:
    """{sequence name: sorted scan paths} under `<root>/sequences`."""
    base = Path(root) / "sequences"
    if not base.is_dir():
        raise KittiDataError(f"{root} holds no sequences/ folder (expected sequences/<NN>/velodyne/*.bin)")
    found = {}
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        scans = sorted((folder / "velodyne").glob("*.bin"))
        if scans:
            found[folder.name] = scans
    if not found:
        raise KittiDataError(f"{base}: no sequence has velodyne/*.bin scans")
    return found


def split_of(sequence: str) -> str:
    """The official split of a sequence name: train (00-07, 09, 10), val (08), test (11-21), else other."""
    for name, members in (("train", TRAIN_SEQUENCES), ("val", VAL_SEQUENCES), ("test", TEST_SEQUENCES)):
        if sequence in members:
            return name
    return "other"


def _write_sequence(out: Path, name: str, scans: list[Path]) -> dict[str, Any]:
    import h5py

    labelled = label_path(scans[0]).is_file()
    points, labels, raw_labels, offsets = [], [], [], [0]
    for scan in scans:
        cloud = read_scan(scan)
        points.append(cloud)
        offsets.append(offsets[-1] + len(cloud))
        if labelled:
            raw = read_labels(label_path(scan), len(cloud))
            raw_labels.append(raw)
            labels.append(to_train_ids(raw))
    final = out / "sequences" / f"{name}.h5"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("points", data=np.concatenate(points), compression="gzip", compression_opts=1,
                         shuffle=True)
        f.create_dataset("point_offsets", data=np.asarray(offsets, dtype=np.int64))
        f.create_dataset("scan", data=np.asarray([s.stem for s in scans], dtype="S"))
        if labelled:
            for key, values in (("labels", labels), ("labels_raw", raw_labels)):
                f.create_dataset(key, data=np.concatenate(values), compression="gzip", compression_opts=1,
                                 shuffle=True)
        f.attrs.update({"format": FORMAT + "-shard", "format_version": FORMAT_VERSION, "sequence": name,
                        "num_scans": len(scans), "has_labels": labelled})
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_directory(final.parent)
    return {"name": name, "file": f"sequences/{name}.h5", "num_scans": len(scans),
            "scans": [s.stem for s in scans], "has_labels": labelled, "num_points": int(offsets[-1]),
            "bytes": final.stat().st_size}


@dataclass(frozen=True)
class KittiPrepareReport:
    """Sequences written in this run, sequences kept from an earlier run, the index path."""

    written: tuple[str, ...]
    kept: tuple[str, ...]
    index_path: Path


def prepare_semantickitti(root: str | Path, out: str | Path) -> KittiPrepareReport:
    """Prepare every sequence under `<root>/sequences` into `out` (resumable, atomic per sequence)."""
    sequences = find_sequences(root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX_NAME
    previous = {}
    if index_path.is_file():
        payload = json.loads(index_path.read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            raise KittiDataError(f"{index_path}: not a prepared SemanticKITTI index")
        previous = {s["name"]: s for s in payload["sequences"]}
    entries, written, kept = [], [], []
    for name, scans in sequences.items():
        old = previous.get(name)
        if old and old["scans"] == [s.stem for s in scans] and (out / old["file"]).is_file():
            entries.append(old)
            kept.append(name)
        else:
            entries.append(_write_sequence(out, name, scans))
            written.append(name)
        names = [e["name"] for e in entries]
        splits = {split: [n for n in names if split_of(n) == split] for split in ("train", "val", "test")}
        write_json_atomic(index_path, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "root": str(Path(root).resolve()),
            "class_names": list(KITTI_CLASS_NAMES),
            "learning_map": {str(k): v for k, v in LEARNING_MAP.items()},
            "splits": splits, "sequences": entries, "complete": len(entries) == len(sequences),
        })
    return KittiPrepareReport(tuple(written), tuple(kept), index_path)


class KittiScan:
    """One prepared scan: token = lidar_token = "<NN>/<scan>", scene = sequence name."""

    def __init__(self, file: Any, row: int, sequence: str, scan: str) -> None:
        self._file, self._row = file, row
        self.scene = sequence
        self.token = self.lidar_token = f"{sequence}/{scan}"

    def _slice(self) -> slice:
        offsets = self._file["point_offsets"]
        return slice(int(offsets[self._row]), int(offsets[self._row + 1]))

    @cached_property
    def points(self) -> np.ndarray:
        """(N, 4) float32 x, y, z, reflectance (0..1)."""
        return self._file["points"][self._slice()]

    @cached_property
    def labels(self) -> np.ndarray | None:
        """(N,) uint8 train ids 0..19, or None for an unlabelled sequence."""
        return self._file["labels"][self._slice()] if "labels" in self._file else None


class PreparedKitti:
    """Prepared SemanticKITTI scans of one split ("train", "val", "test" or "all"), sorted by path.

    Raises:
        KittiDataError: no index, an unknown or empty split.
    """

    def __init__(self, path: str | Path, split: str) -> None:
        self.root = Path(path)
        index_path = self.root / INDEX_NAME
        if not index_path.is_file():
            raise KittiDataError(f"{self.root} holds no {INDEX_NAME}; run `cmcr prepare semantickitti` first")
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        splits = self.index["splits"]
        if split == "all":
            names = [s["name"] for s in self.index["sequences"]]
        elif split in splits:
            names = splits[split]
        else:
            raise KittiDataError(
                f"unknown split {split!r} in {index_path}; available: all, {', '.join(splits)}"
            )
        if not names:
            raise KittiDataError(f"split {split!r} of {self.root} has no prepared sequence")
        self.split = split
        by_name = {s["name"]: s for s in self.index["sequences"]}
        self._entries = [(by_name[n]["file"], row, n, scan) for n in sorted(names)
                         for row, scan in enumerate(by_name[n]["scans"])]
        self._open: dict[str, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> list[str]:
        """"<NN>/<scan>" of every scan, in dataset (sorted path) order."""
        return [f"{seq}/{scan}" for _, _, seq, scan in self._entries]

    def __getitem__(self, i: int) -> KittiScan:
        import h5py

        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} scans")
        if os.getpid() != self._pid:  # a forked worker opens its own handles
            self._open, self._pid = {}, os.getpid()
        file, row, seq, scan = self._entries[i]
        if file not in self._open:
            self._open[file] = h5py.File(self.root / file, "r")
        return KittiScan(self._open[file], row, seq, scan)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}
