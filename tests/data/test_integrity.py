"""Prepared data that cannot rot silently: every dataset of a shard carries checksums, a damaged read names
shard, sample and dataset, `verify_prepared` finds the damage of a whole folder, training can leave damaged
samples out and count them.

Damage is done the way a disk does it: bytes of one stored chunk are overwritten in the file. Which
samples a damaged chunk touches is computed here from the chunk's extent and the index's offsets, not by
the code under test.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cmcr_core.data.integrity import DamagedSampleError
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.data.semantickitti import PreparedKitti, prepare_semantickitti
from cmcr_core.data.semantickitti.writer import write_semantickitti_world
from cmcr_core.data.synthetic import LidarModel
from cmcr_core.data.verify import verify_prepared

PER_ROW = ("sample_token", "scene", "lidar_token", "camera_tokens", "timestamp", "lidar_timestamp",
           "camera_timestamps", "image_hw", "projections", "superpixel_counts")
OFFSETS = {"points": "point_offsets", "labels": "point_offsets", "labels_fine": "point_offsets",
           "pairings": "pairing_offsets", "jpeg": "jpeg_offsets", "superpixels": "superpixel_offsets"}
TABLES = ("point_offsets", "pairing_offsets", "jpeg_offsets", "superpixel_offsets")


def shard_of(root: Path) -> Path:
    (shard,) = sorted((root / "shards").glob("*.h5"))  # the shared world fits one shard
    return shard


def overwrite_chunk(path: Path, dataset: str, chunk: int) -> tuple[int, int]:
    """Change one 16-bit word in the middle of stored chunk `chunk` of `dataset`; returns the chunk's first
    and last element along axis 0 (exclusive end). (XOR 0x5A5A: Fletcher-32 sums words modulo 65535, so
    it cannot tell a 0x0000 word from 0xFFFF; any other change of a single word it always sees.)"""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
        rows, length = f[dataset].chunks[0], f[dataset].shape[0]
    start = info.chunk_offset[0]
    at = info.byte_offset + (info.size // 2 & ~1)  # an even offset from the chunk's start: one word
    with open(path, "r+b") as handle:
        handle.seek(at)
        data = handle.read(2)
        handle.seek(at)
        handle.write(bytes(b ^ 0x5A for b in data))
    return start, min(start + rows, length)


def samples_touched(path: Path, dataset: str, extent: tuple[int, int]) -> list[int]:
    """Rows (samples) of the shard that own an element of `dataset` in [start, stop)."""
    with h5py.File(path, "r") as f:
        count = f["sample_token"].shape[0]
        if dataset in PER_ROW or dataset in TABLES:
            if dataset in TABLES:  # an offsets table is read whole: every sample of the shard needs it
                return list(range(count))
            return [r for r in range(count) if extent[0] <= r < extent[1]]
        table = f[OFFSETS[dataset]][:]
        per = f["image_hw"].shape[1] if dataset in ("jpeg", "superpixels") else 1
    return [r for r in range(count)
            if int(table[r * per]) < extent[1] and int(table[(r + 1) * per]) > extent[0]]


def read_everything(sample) -> None:
    for name in ("points", "labels", "labels_fine", "pairings", "jpeg_bytes", "superpixels"):
        getattr(sample, name)


@pytest.fixture
def copy(prepared_world: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared_world, tmp_path / "prepared"))


def test_a_clean_folder_verifies_and_every_dataset_is_checksummed(prepared_world: Path) -> None:
    report = verify_prepared(prepared_world)
    assert report.damage == [] and report.unchecked == [] and report.to_rebuild == []
    assert (report.files, report.samples) == (1, 10)
    with h5py.File(shard_of(prepared_world), "r") as f:
        assert {name: f[name].fletcher32 for name in f} == {name: True for name in f}
        assert set(OFFSETS) | set(PER_ROW) | set(TABLES) >= set(f)


@pytest.mark.parametrize("dataset", [*PER_ROW, *OFFSETS, *TABLES])
def test_damage_in_any_dataset_is_found_and_named(copy: Path, dataset: str) -> None:
    shard = shard_of(copy)
    with h5py.File(shard, "r") as f:
        tokens = [t.decode() for t in f["sample_token"][:]]
        num_chunks = f[dataset].id.get_num_chunks()
    chunk = num_chunks // 2  # a chunk in the middle for the long arrays, the only one for the short
    touched = samples_touched(shard, dataset, overwrite_chunk(shard, dataset, chunk))
    assert touched

    report = verify_prepared(copy)
    found = {(d.token, d.dataset) for d in report.damage}
    assert found == {(tokens[r], dataset) for r in touched}
    assert report.to_rebuild == [f"shards/{shard.name}"] and report.damaged_samples == len(touched)

    if dataset == "superpixel_counts":  # no reader uses it (verify checks it all the same)
        return
    data = PreparedDataset(copy, "all")
    row = touched[0]
    with pytest.raises(DamagedSampleError) as caught:
        read_everything(data[data.tokens.index(tokens[row])])
    error = caught.value
    assert (error.shard, error.token, error.dataset) == (shard, tokens[row], dataset)
    assert str(shard) in str(error) and tokens[row] in str(error) and repr(dataset) in str(error)
    assert "cmcr prepare verify" in str(error)
    same = pickle.loads(pickle.dumps(error))  # crosses DataLoader worker processes intact
    assert (same.shard, same.token, same.dataset, str(same)) == (shard, tokens[row], dataset, str(error))


def test_untouched_samples_read_as_before(copy: Path, prepared_world: Path) -> None:
    shard = shard_of(copy)
    touched = samples_touched(shard, "points", overwrite_chunk(shard, "points", 2))
    damaged, clean = PreparedDataset(copy, "all"), PreparedDataset(prepared_world, "all")
    spared = [i for i, t in enumerate(damaged.tokens)
              if clean.index.shards[0]["sample_tokens"].index(t) not in touched]
    assert spared
    for i in spared:
        np.testing.assert_array_equal(damaged[i].points, clean[i].points)


def test_four_kilobytes_of_garbage_do_not_pass_silently(copy: Path) -> None:
    """The case of the issue: 4 KB in the middle of a shard overwritten with random bytes."""
    shard = shard_of(copy)
    size = shard.stat().st_size
    with open(shard, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    report = verify_prepared(copy)
    assert report.damage and report.to_rebuild == [f"shards/{shard.name}"]


def test_a_missing_shard_is_listed_whole(copy: Path) -> None:
    shard_of(copy).unlink()
    report = verify_prepared(copy)
    assert [(d.token, d.reason) for d in report.damage] == [("", "missing")]


# --- SemanticKITTI ---------------------------------------------------------------------------------------

SMALL_LIDAR = LidarModel(elevations_deg=tuple(np.linspace(-24.9, 2.0, 8).tolist()), azimuth_steps=128)


@pytest.fixture(scope="module")
def kitti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    write_semantickitti_world(root / "raw", ("00", "08"), scans_per_sequence=3, seed=2, lidar=SMALL_LIDAR)
    prepare_semantickitti(root / "raw", root / "prepared")
    return root / "prepared"


@pytest.mark.parametrize("dataset", ["points", "labels", "labels_raw", "scan"])
def test_kitti_sequence_files_carry_checksums_too(kitti: Path, tmp_path: Path, dataset: str) -> None:
    root = Path(shutil.copytree(kitti, tmp_path / "k"))
    file = root / "sequences" / "08.h5"
    assert verify_prepared(root).damage == []
    with h5py.File(file, "r") as f:
        assert all(f[name].fletcher32 for name in f)
        offsets = f["point_offsets"][:]
    extent = overwrite_chunk(file, dataset, 0)
    if dataset == "scan":
        touched = list(range(extent[0], extent[1]))
    else:
        touched = [r for r in range(len(offsets) - 1)
                   if offsets[r] < extent[1] and offsets[r + 1] > extent[0]]
    expected = {(f"08/{r:06d}", dataset) for r in touched}
    report = verify_prepared(root)
    assert {(d.token, d.dataset) for d in report.damage} == expected
    assert report.to_rebuild == ["sequences/08.h5"]
    if dataset in ("points", "labels"):
        val = PreparedKitti(root, "val")
        with pytest.raises(DamagedSampleError, match=f"08/{touched[0]:06d}.*'{dataset}'"):
            getattr(val[touched[0]], dataset)
