"""HDF5 shards of prepared keyframes: atomic writing, summaries, and the index JSON helpers.

A shard holds consecutive samples; variable-length arrays are concatenated with an offsets array
(CSR layout) so one sample is a contiguous slice. The schema is documented in docs/data-format.md.
A shard is written to `<name>.h5.tmp`, flushed, fsynced and renamed with `os.replace`, so a `.h5` file
is always complete; a leftover `.tmp` is garbage from an interrupted run.

Checksums (attribute `checksums = "fletcher32"`): every dataset carries HDF5's Fletcher-32 filter, so each
chunk is checked when it is read; the file is written in the HDF5 1.10 format, whose metadata (object
headers, chunk indexes, the superblock) carries checksums too; texts (tokens, names, the JSON attributes)
are fixed-length strings, stored inside checksummed chunks and headers rather than in HDF5's unchecked
global heap. A damaged byte anywhere a read uses therefore fails the read instead of returning garbage
(`cmcr_core.data.integrity` names the shard, sample and dataset).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmcr_core.ops.atomic import fsync_directory

SHARD_FORMAT = "cmcr-prepared-nuscenes-shard"
FORMAT_VERSION = 1
SHARD_DIR = "shards"
CHECKSUMS = "fletcher32"  # the `checksums` attribute of shards written with checksums (absent before)
TOKEN_BYTES = 64  # fixed length of the stored tokens and scene names (nuScenes tokens have 32 characters)
# HDF5 1.10 file format: checksummed metadata (readable by any HDF5 >= 1.10, every h5py wheel since 2.10)
LIBVER = ("v110", "v110")
CHECKED = {"fletcher32": True}  # keyword of every create_dataset


def text_attribute(text: str) -> np.bytes_:
    """A text attribute stored as a fixed-length string (inside the checksummed object header)."""
    return np.bytes_(text.encode("utf-8"))


def read_text_attribute(attrs: Any, name: str, default: str | None = None) -> str | None:
    """An attribute written by `text_attribute` or, in shards without checksums, as a variable-length str."""
    value = attrs.get(name, default)
    return value.decode("utf-8") if isinstance(value, bytes) else value


def shard_file_name(shard_id: int) -> str:
    """Relative path of a shard inside a prepared folder, e.g. shards/shard-00003.h5."""
    return f"{SHARD_DIR}/shard-{shard_id:05d}.h5"


@dataclass
class SampleRecord:
    """Everything stored for one keyframe (C cameras, N points, P pairings)."""

    sample_token: str
    scene: str
    timestamp: int
    lidar_token: str
    lidar_timestamp: int
    camera_tokens: list[str]
    camera_timestamps: list[int]
    points: np.ndarray  # (N, 4) float32 x, y, z, intensity in the LiDAR frame
    labels_fine: np.ndarray | None  # (N,) uint8 raw lidarseg indices
    labels: np.ndarray | None  # (N,) uint8 coarse ids 0..16
    jpegs: list[bytes]  # C original JPEG files
    image_hw: np.ndarray  # (C, 2) int32 (height, width)
    projections: np.ndarray  # (C, 3, 4) float64 LiDAR -> pixel
    pairings: np.ndarray  # (P, 4) int32 [point_index, camera_index, row, col]
    superpixels: list[np.ndarray] | None  # C arrays (H, W) uint16, ids 0..n-1


@dataclass
class ShardSummary:
    """What the index records about a finished shard."""

    shard_id: int
    file: str
    sample_tokens: list[str]
    scenes: list[str]
    failures: list[dict[str, str]] = field(default_factory=list)
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.shard_id,
            "file": self.file,
            "bytes": self.bytes,
            "num_samples": len(self.sample_tokens),
            "sample_tokens": self.sample_tokens,
            "scenes": self.scenes,
            "failures": self.failures,
        }


_COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


class ShardWriter:
    """Append samples to `<out>/<shard file>.tmp`, then `commit()` makes the shard visible atomically.

    Args:
        out: prepared folder.
        shard_id: shard number.
        config: preparation settings (stored as JSON; a resumed run must match them).
        planned_tokens: sample tokens the plan assigns to this shard, in order.
        camera_names: C camera channels in storage order.
        with_labels: whether lidarseg labels are stored.
        with_superpixels: whether superpixels are stored.
    """

    def __init__(
        self,
        out: Path,
        shard_id: int,
        config: dict[str, Any],
        planned_tokens: Sequence[str],
        camera_names: Sequence[str],
        with_labels: bool,
        with_superpixels: bool,
    ) -> None:
        import h5py

        self.final_path = Path(out) / shard_file_name(shard_id)
        self.tmp_path = self.final_path.with_name(self.final_path.name + ".tmp")
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        self.shard_id = shard_id
        self.num_cameras = len(camera_names)
        self.with_labels = with_labels
        self.with_superpixels = with_superpixels
        self.sample_tokens: list[str] = []
        self.scenes: list[str] = []
        self.failures: list[dict[str, str]] = []
        self._file = h5py.File(self.tmp_path, "w", libver=LIBVER)
        attrs = self._file.attrs
        attrs["format"] = text_attribute(SHARD_FORMAT)
        attrs["format_version"] = FORMAT_VERSION
        attrs["checksums"] = text_attribute(CHECKSUMS)
        attrs["shard_id"] = shard_id
        attrs["config"] = text_attribute(json.dumps(config, sort_keys=True))
        attrs["planned_tokens"] = text_attribute(json.dumps(list(planned_tokens)))
        attrs["camera_names"] = text_attribute(json.dumps(list(camera_names)))
        attrs["has_labels"] = with_labels
        attrs["has_superpixels"] = with_superpixels
        self._create_datasets()

    def _create_datasets(self) -> None:
        c = self.num_cameras
        text = f"S{TOKEN_BYTES}"
        f = self._file

        def growing(name: str, tail: tuple[int, ...], dtype: Any, chunk_rows: int = 64,
                    compress: bool = False) -> None:
            # Explicit chunks: h5py's guess for an empty growing dataset is tiny, which makes reading
            # a 1.4 M-pixel superpixel map thousands of chunk lookups.
            f.create_dataset(
                name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype, chunks=(chunk_rows, *tail),
                **(_COMPRESSION if compress else {}), **CHECKED,
            )

        for name in ("sample_token", "scene", "lidar_token"):
            growing(name, (), text)
        growing("camera_tokens", (c,), text)
        for name in ("timestamp", "lidar_timestamp"):
            growing(name, (), np.int64)
        growing("camera_timestamps", (c,), np.int64)
        growing("points", (4,), np.float32, chunk_rows=1 << 15, compress=True)
        if self.with_labels:
            growing("labels_fine", (), np.uint8, chunk_rows=1 << 16, compress=True)
            growing("labels", (), np.uint8, chunk_rows=1 << 16, compress=True)
        growing("pairings", (4,), np.int32, chunk_rows=1 << 15, compress=True)
        growing("image_hw", (c, 2), np.int32)
        growing("projections", (c, 3, 4), np.float64)
        growing("jpeg", (), np.uint8, chunk_rows=1 << 16)  # already compressed: no filter
        if self.with_superpixels:
            growing("superpixels", (), np.uint16, chunk_rows=1 << 18, compress=True)
            growing("superpixel_counts", (c,), np.int32)
        for name in ("point_offsets", "pairing_offsets", "jpeg_offsets", "superpixel_offsets"):
            if name != "superpixel_offsets" or self.with_superpixels:
                f.create_dataset(name, data=np.zeros(1, dtype=np.int64), maxshape=(None,), chunks=(1024,),
                                 **CHECKED)

    def _append(self, name: str, values: Any) -> None:
        dataset = self._file[name]
        if dataset.dtype.kind == "S":
            values = _fixed_texts(name, values, dataset.dtype.itemsize)
        values = np.asarray(values, dtype=dataset.dtype)
        start = dataset.shape[0]
        count = len(values)
        dataset.resize(start + count, axis=0)
        if count:
            dataset[start:] = values

    def _append_offsets(self, name: str, lengths: Sequence[int]) -> None:
        dataset = self._file[name]
        last = int(dataset[-1])
        self._append(name, last + np.cumsum(np.asarray(lengths, dtype=np.int64)))

    def add(self, record: SampleRecord) -> None:
        """Append one sample (all arrays as documented on SampleRecord)."""
        if len(record.jpegs) != self.num_cameras:
            raise ValueError(
                f"sample {record.sample_token}: {len(record.jpegs)} images, expected {self.num_cameras}"
            )
        self._append("sample_token", [record.sample_token])
        self._append("scene", [record.scene])
        self._append("lidar_token", [record.lidar_token])
        self._append("camera_tokens", [record.camera_tokens])
        self._append("timestamp", [record.timestamp])
        self._append("lidar_timestamp", [record.lidar_timestamp])
        self._append("camera_timestamps", [record.camera_timestamps])
        self._append("points", record.points.astype(np.float32))
        self._append_offsets("point_offsets", [len(record.points)])
        if self.with_labels:
            self._append("labels_fine", record.labels_fine)
            self._append("labels", record.labels)
        self._append("pairings", record.pairings.astype(np.int32))
        self._append_offsets("pairing_offsets", [len(record.pairings)])
        self._append("image_hw", record.image_hw[None].astype(np.int32))
        self._append("projections", record.projections[None])
        self._append("jpeg", np.frombuffer(b"".join(record.jpegs), dtype=np.uint8))
        self._append_offsets("jpeg_offsets", [len(data) for data in record.jpegs])
        if self.with_superpixels:
            maps = record.superpixels or []
            self._append("superpixels", np.concatenate([m.ravel() for m in maps]).astype(np.uint16))
            self._append_offsets("superpixel_offsets", [m.size for m in maps])
            self._append("superpixel_counts", [[int(m.max()) + 1 for m in maps]])
        self.sample_tokens.append(record.sample_token)
        self.scenes.append(record.scene)

    def add_failure(self, failure: dict[str, str]) -> None:
        """Record a sample that could not be prepared (sample_token, scene, path, reason)."""
        self.failures.append(dict(failure))

    def commit(self) -> ShardSummary:
        """Close, fsync and atomically rename the shard into place; returns its summary."""
        self._file.attrs["failures"] = text_attribute(json.dumps(self.failures))
        self._file.attrs["num_samples"] = len(self.sample_tokens)
        self._file.close()
        fd = os.open(self.tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp_path, self.final_path)
        fsync_directory(self.final_path.parent)
        return ShardSummary(
            shard_id=self.shard_id,
            file=shard_file_name(self.shard_id),
            sample_tokens=list(self.sample_tokens),
            scenes=list(self.scenes),
            failures=list(self.failures),
            bytes=self.final_path.stat().st_size,
        )

    def abort(self) -> None:
        """Close and delete the temporary file (the shard stays absent)."""
        try:
            self._file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


def _fixed_texts(name: str, values: Any, size: int) -> np.ndarray:
    """Texts as bytes for a fixed-length string dataset; a text that does not fit is an error, not cut."""
    array = np.asarray(values, dtype=object)
    encoded = np.empty(array.shape, dtype=object)
    for index, text in np.ndenumerate(array):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if len(data) > size or data.endswith(b"\0"):
            raise ValueError(f"{name}: {text!r} does not fit the {size}-byte text field of the shard schema")
        encoded[index] = data
    return encoded


@dataclass
class ExistingShard:
    """Header of a committed shard, read back to decide whether a resumed run can keep it."""

    summary: ShardSummary
    config: dict[str, Any]
    planned_tokens: list[str]


def read_shard_header(out: Path, shard_id: int) -> ExistingShard:
    """Read the attributes and token lists of a committed shard.

    Raises:
        ValueError: the file is not a readable cmcr shard (the message names the file).
    """
    import h5py

    path = Path(out) / shard_file_name(shard_id)
    try:
        with h5py.File(path, "r") as f:
            if read_text_attribute(f.attrs, "format") != SHARD_FORMAT:
                raise ValueError(f"{path}: not a {SHARD_FORMAT} file")
            summary = ShardSummary(
                shard_id=int(f.attrs["shard_id"]),
                file=shard_file_name(shard_id),
                sample_tokens=[t.decode() for t in f["sample_token"][:]],
                scenes=[s.decode() for s in f["scene"][:]],
                failures=json.loads(read_text_attribute(f.attrs, "failures")),
                bytes=path.stat().st_size,
            )
            planned = json.loads(read_text_attribute(f.attrs, "planned_tokens"))
            return ExistingShard(summary, json.loads(read_text_attribute(f.attrs, "config")), planned)
    except (OSError, KeyError) as exc:
        raise ValueError(f"{path}: unreadable shard ({exc})") from exc
