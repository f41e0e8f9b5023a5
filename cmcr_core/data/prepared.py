"""Read a prepared folder: merge its index parts, select a split, open shards lazily per process.

`PreparedDataset(path, split)` is a plain sequence (usable as a torch Dataset). HDF5 handles are opened
on first access in each process and never reused after a fork, so DataLoader workers are safe whatever
the start method. A read that fails its checksums (or finds the shard's token other than the index's)
raises `DamagedSampleError` naming the shard, the sample token and the dataset.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cmcr_core.data.integrity import DamagedSampleError, ShardDamage, read_checked
from cmcr_core.data.shards import CHECKSUMS, read_text_attribute

logger = logging.getLogger(__name__)

INDEX_GLOB = "index-*-of-*.json"
ALL_SAMPLES = "all"


class PreparedDataError(ValueError):
    """A prepared folder, index or split that cannot be read as asked."""


@dataclass
class PreparedIndex:
    """The merged index parts of a prepared folder (one part per `--shard i/n` job)."""

    root: Path
    header: dict[str, Any]
    shards: dict[int, dict[str, Any]]
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def splits(self) -> dict[str, list[str]]:
        return self.header["splits"]

    @property
    def camera_names(self) -> list[str]:
        return self.header["camera_names"]

    @property
    def failures(self) -> list[dict[str, str]]:
        return [f for shard_id in sorted(self.shards) for f in self.shards[shard_id]["failures"]]

    @property
    def num_prepared(self) -> int:
        return sum(shard["num_samples"] for shard in self.shards.values())

    @property
    def complete(self) -> bool:
        """Every planned shard is finished."""
        return len(self.shards) == self.header["num_shards"]

    def split_scenes(self, split: str) -> list[str]:
        """Scene names of a split (in scene.json order); "all" = every scene."""
        if split == ALL_SAMPLES:
            return [scene["name"] for scene in self.header["scenes"]]
        if split not in self.splits:
            raise PreparedDataError(
                f"unknown split {split!r} in {self.root}; available: {', '.join([ALL_SAMPLES, *self.splits])}"
            )
        return self.splits[split]

    def planned_count(self, split: str) -> int:
        wanted = set(self.split_scenes(split))
        return sum(scene["num_samples"] for scene in self.header["scenes"] if scene["name"] in wanted)

    def entries(self, split: str) -> list[tuple[str, int, str]]:
        """(shard file, row, sample token) of the prepared samples of a split, in dataset order."""
        wanted = set(self.split_scenes(split))
        found = []
        for shard_id in sorted(self.shards):
            shard = self.shards[shard_id]
            for row, (token, scene) in enumerate(zip(shard["sample_tokens"], shard["scenes"], strict=True)):
                if scene in wanted:
                    found.append((shard["file"], row, token))
        return found


def load_prepared_index(path: str | os.PathLike[str], check_files: bool = True) -> PreparedIndex:
    """Merge every `index-i-of-n.json` of a prepared folder.

    Raises:
        PreparedDataError: no index, an unreadable part, parts with different settings, or (with
            `check_files`) a listed shard whose file is missing.
    """
    root = Path(path)
    parts = sorted(root.glob(INDEX_GLOB))
    if not parts:
        raise PreparedDataError(
            f"{root} holds no prepared index ({INDEX_GLOB}); run `cmcr prepare nuscenes` first"
        )
    header: dict[str, Any] | None = None
    shards: dict[int, dict[str, Any]] = {}
    jobs = []
    for part in parts:
        try:
            payload = json.loads(part.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise PreparedDataError(f"{part}: unreadable index part ({exc})") from exc
        if payload.get("format") != "cmcr-prepared-nuscenes":
            raise PreparedDataError(f"{part}: not a cmcr prepared index")
        shared = {k: v for k, v in payload.items() if k not in ("shards", "failures", "job")}
        if header is None:
            header = shared
        elif shared["config"] != header["config"] or shared["num_shards"] != header["num_shards"]:
            raise PreparedDataError(f"{part} was prepared with other settings than {parts[0]}")
        jobs.append({"file": part.name, **payload["job"]})
        for shard in payload["shards"]:
            previous = shards.setdefault(shard["id"], shard)
            if previous["sample_tokens"] != shard["sample_tokens"]:
                raise PreparedDataError(f"{part}: shard {shard['id']} disagrees with another index part")
    for shard in shards.values() if check_files else ():
        if not (root / shard["file"]).is_file():
            raise PreparedDataError(f"{root / shard['file']} is listed in the index but missing")
    assert header is not None
    return PreparedIndex(root=root, header=header, shards=shards, jobs=jobs)


OFFSET_DATASETS = ("point_offsets", "pairing_offsets", "jpeg_offsets", "superpixel_offsets")
_UNCHECKED_WARNED: set[Path] = set()


class _OpenShard:
    """An open shard with its offset arrays in memory (they are tiny and needed for every item).

    Raises ShardDamage (file or dataset, reason) when the file or an offsets array cannot be read.
    """

    def __init__(self, path: Path) -> None:
        import h5py

        self.path = path
        try:
            self.file = h5py.File(path, "r")
        except OSError as error:
            raise ShardDamage("(file)", str(error)) from error
        self.offsets = {name: read_checked(self.file, name, slice(None), ShardDamage)
                        for name in OFFSET_DATASETS if name in self.file}
        try:
            self.num_cameras = self.file["image_hw"].shape[1]
        except (OSError, KeyError) as error:
            raise ShardDamage("image_hw", str(error)) from error
        self.checksums = read_text_attribute(self.file.attrs, "checksums") == CHECKSUMS
        if not self.checksums and path not in _UNCHECKED_WARNED:
            _UNCHECKED_WARNED.add(path)
            logger.warning("%s carries no checksums (prepared before shards had them): damage in it cannot "
                           "be detected; prepare the folder again to add them", path)


class PreparedSample:
    """One prepared keyframe. Cheap fields are read at creation; heavy ones on first access.

    Attributes:
        token, scene, lidar_token: identifiers; timestamp, lidar_timestamp: µs.
        camera_names, camera_tokens, camera_timestamps: per camera (C = 6).
        image_hw: (C, 2) int (height, width); projections: (C, 3, 4) float64 LiDAR → pixel.
    """

    def __init__(self, shard: _OpenShard, row: int, camera_names: list[str],
                 token: str | None = None) -> None:
        self._shard = shard
        self._row = row
        self.token: str = token or "(unknown)"  # the index's token names the sample in errors
        stored = self._read("sample_token", row).decode()
        if token is not None and stored != token:
            raise self._damaged("sample_token", f"the shard holds sample {stored} where the index lists it")
        self.token = stored
        self.scene: str = self._read("scene", row).decode()
        self.lidar_token: str = self._read("lidar_token", row).decode()
        self.timestamp = int(self._read("timestamp", row))
        self.lidar_timestamp = int(self._read("lidar_timestamp", row))
        self.camera_names = list(camera_names)
        self.camera_tokens = [t.decode() for t in self._read("camera_tokens", row)]
        self.camera_timestamps = self._read("camera_timestamps", row).astype(np.int64)
        self.image_hw = self._read("image_hw", row).astype(np.int64)
        self.projections = self._read("projections", row)

    def _damaged(self, dataset: str, reason: str) -> DamagedSampleError:
        return DamagedSampleError(self._shard.path, self.token, dataset, reason)

    def _read(self, dataset: str, selection: Any) -> Any:
        """`dataset[selection]` of this sample's shard; a failed checksum raises DamagedSampleError."""
        return read_checked(self._shard.file, dataset, selection,
                            lambda name, reason: self._damaged(name, reason))

    def _slice(self, offsets: str) -> slice:
        table = self._shard.offsets[offsets]
        return slice(int(table[self._row]), int(table[self._row + 1]))

    def _datasets(self) -> list[tuple[str, Any]]:
        """(dataset, selection) of every array this sample owns in its shard."""
        f, row, c = self._shard.file, self._row, self._shard.num_cameras
        per_row = ["sample_token", "scene", "lidar_token", "camera_tokens", "timestamp", "lidar_timestamp",
                   "camera_timestamps", "image_hw", "projections", "superpixel_counts"]
        found = [(name, row) for name in per_row if name in f]
        found += [(name, self._slice("point_offsets")) for name in ("points", "labels", "labels_fine")
                  if name in f]
        found.append(("pairings", self._slice("pairing_offsets")))
        for name, table in (("jpeg", "jpeg_offsets"), ("superpixels", "superpixel_offsets")):
            if name in f:
                offsets = self._shard.offsets[table]
                found.append((name, slice(int(offsets[row * c]), int(offsets[(row + 1) * c]))))
        return found

    @classmethod
    def damage_of(cls, shard: _OpenShard, row: int, token: str) -> list[tuple[str, str]]:
        """(dataset, reason) of every array of sample ``row`` of ``shard`` that fails its checksums (each is
        read in full), and of a stored token other than the index's ``token``."""
        sample = cls.__new__(cls)
        sample._shard, sample._row, sample.token = shard, row, token
        found = []
        for name, selection in sample._datasets():
            try:
                value = sample._read(name, selection)
            except DamagedSampleError as error:
                found.append((name, error.reason))
                continue
            if name == "sample_token" and value.decode() != token:
                found.append((name, f"the shard holds sample {value.decode()} where the index lists it"))
        return found

    @cached_property
    def points(self) -> np.ndarray:
        """(N, 4) float32 x, y, z, intensity in the LiDAR sensor frame."""
        return self._read("points", self._slice("point_offsets"))

    @cached_property
    def labels(self) -> np.ndarray | None:
        """(N,) uint8 coarse ids 0..16 (0 = ignore), or None without lidarseg."""
        f = self._shard.file
        return self._read("labels", self._slice("point_offsets")) if "labels" in f else None

    @cached_property
    def labels_fine(self) -> np.ndarray | None:
        """(N,) uint8 raw lidarseg category indices, or None without lidarseg."""
        f = self._shard.file
        return self._read("labels_fine", self._slice("point_offsets")) if "labels_fine" in f else None

    @cached_property
    def pairings(self) -> np.ndarray:
        """(P, 4) int64 [point_index, camera_index, row, col] in original-image pixels."""
        return self._read("pairings", self._slice("pairing_offsets")).astype(np.int64)

    def _image_rows(self) -> range:
        c = self._shard.num_cameras
        return range(self._row * c, (self._row + 1) * c)

    @cached_property
    def jpeg_bytes(self) -> list[bytes]:
        """The C original JPEG files."""
        rows = self._image_rows()
        table = self._shard.offsets["jpeg_offsets"]
        start, stop = int(table[rows[0]]), int(table[rows[-1] + 1])
        data = self._read("jpeg", slice(start, stop))
        return [data[int(table[i]) - start:int(table[i + 1]) - start].tobytes() for i in rows]

    @cached_property
    def images(self) -> np.ndarray | list[np.ndarray]:
        """Decoded RGB images: (C, H, W, 3) uint8 when all sizes agree, else a list of (H, W, 3)."""
        from PIL import Image

        decoded = []
        for data in self.jpeg_bytes:
            with Image.open(io.BytesIO(data)) as img:
                decoded.append(np.asarray(img.convert("RGB")))
        return _stack_if_equal(decoded)

    @cached_property
    def superpixels(self) -> np.ndarray | list[np.ndarray] | None:
        """(C, H, W) uint16 superpixel ids 0..n-1 per image (list if sizes differ); None if not prepared."""
        f = self._shard.file
        if "superpixels" not in f:
            return None
        rows = self._image_rows()
        table = self._shard.offsets["superpixel_offsets"]
        start, stop = int(table[rows[0]]), int(table[rows[-1] + 1])
        flat = self._read("superpixels", slice(start, stop))
        maps = []
        for camera, i in enumerate(rows):
            height, width = (int(v) for v in self.image_hw[camera])
            maps.append(flat[int(table[i]) - start:int(table[i + 1]) - start].reshape(height, width))
        return _stack_if_equal(maps)


def _stack_if_equal(arrays: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    return arrays


class PreparedDataset:
    """Prepared keyframes of one split, in dataset order (scene.json order, then time).

    Args:
        path: prepared folder (the `--out` of `cmcr prepare nuscenes`).
        split: a split of the index (train, val, test, mini_train, mini_val, parametrize, verifying) or "all".
        allow_incomplete: accept a split whose preparation is unfinished (by default that is an error;
            samples that failed to prepare are always left out, with a warning).

    Raises:
        PreparedDataError: unknown split, a split with no scenes or no prepared samples, or (unless
            allow_incomplete) a split with planned samples that are neither prepared nor failed.
    """

    def __init__(self, path: str | os.PathLike[str], split: str, allow_incomplete: bool = False) -> None:
        self.index = load_prepared_index(path)
        self.root = self.index.root
        self.split = split
        scenes = self.index.split_scenes(split)
        if not scenes:
            raise PreparedDataError(
                f"split {split!r} is empty: none of its scenes are in {self.index.header['version']} at "
                f"{self.index.header['dataroot']}"
            )
        self._entries = self.index.entries(split)
        wanted = set(scenes)
        failed = [f for f in self.index.failures if f["scene"] in wanted]
        missing = self.index.planned_count(split) - len(self._entries) - len(failed)
        if not self._entries:
            raise PreparedDataError(
                f"split {split!r} has no prepared samples in {self.root} "
                f"({missing} not prepared yet, {len(failed)} failed)"
            )
        if missing and not allow_incomplete:
            raise PreparedDataError(
                f"split {split!r} in {self.root} is incomplete: {missing} samples not prepared yet "
                "(finish `cmcr prepare nuscenes`, or pass allow_incomplete=True)"
            )
        if failed:
            logger.warning("split %r: %d samples failed to prepare and are left out", split, len(failed))
        self.camera_names: list[str] = list(self.index.camera_names)
        self._open: dict[str, _OpenShard] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> list[str]:
        """Sample tokens in dataset order."""
        return [token for _, _, token in self._entries]

    def _shard(self, file: str) -> _OpenShard:
        if os.getpid() != self._pid:
            # A forked child must not use the parent's HDF5 handles: forget them, open its own.
            self._open = {}
            self._pid = os.getpid()
        shard = self._open.get(file)
        if shard is None:
            shard = self._open[file] = _OpenShard(self.root / file)
        return shard

    def __getitem__(self, i: int) -> PreparedSample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        file, row, token = self._entries[i]
        try:
            shard = self._shard(file)
        except ShardDamage as damage:
            raise DamagedSampleError(self.root / file, token, damage.dataset, damage.reason) from damage
        return PreparedSample(shard, row, self.camera_names, token)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    def close(self) -> None:
        """Close the shards opened by this process."""
        if os.getpid() == self._pid:
            for shard in self._open.values():
                shard.file.close()
        self._open = {}


def prepared_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a prepared folder holds: settings, shards, bytes, per-split counts and failures.

    Returns:
        {"version", "dataroot", "config", "shards_done", "shards_total", "bytes", "samples_planned",
         "samples_prepared", "jobs", "splits": {name: {"scenes", "planned", "prepared", "failed"}},
         "failures": [{"sample_token", "scene", "path", "reason"}]}
    """
    index = load_prepared_index(path)
    failures = index.failures
    splits = {}
    for name in [ALL_SAMPLES, *index.splits]:
        scenes = set(index.split_scenes(name))
        splits[name] = {
            "scenes": len(scenes),
            "planned": index.planned_count(name),
            "prepared": len(index.entries(name)),
            "failed": sum(f["scene"] in scenes for f in failures),
        }
    return {
        "version": index.header["version"],
        "dataroot": index.header["dataroot"],
        "config": index.header["config"],
        "shards_done": len(index.shards),
        "shards_total": index.header["num_shards"],
        "bytes": sum(shard["bytes"] for shard in index.shards.values()),
        "samples_planned": index.header["num_samples"],
        "samples_prepared": index.num_prepared,
        "jobs": index.jobs,
        "splits": splits,
        "failures": failures,
    }
