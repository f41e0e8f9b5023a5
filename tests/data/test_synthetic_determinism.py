"""Same arguments -> byte-identical files (also across worker counts); another seed -> another world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmcr_core.data.synthetic import write_nuscenes_world

ARGS = {"scenes": 2, "samples_per_scene": 2, "image_size": (96, 54)}


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("first")
    write_nuscenes_world(root, seed=5, **ARGS)
    return contents(root)


def test_same_arguments_give_identical_bytes(first, tmp_path: Path):
    summary = write_nuscenes_world(tmp_path, seed=5, **ARGS)
    second = contents(tmp_path)
    assert second.keys() == first.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert summary.bytes_written == sum(len(b) for b in second.values())
    assert sum(name.endswith(".jpg") for name in first) == 2 * 2 * 6


def test_parallel_workers_write_the_same_bytes(first, tmp_path: Path):
    write_nuscenes_world(tmp_path, seed=5, workers=2, **ARGS)
    assert contents(tmp_path) == first


def test_another_seed_gives_another_world(first, tmp_path: Path):
    write_nuscenes_world(tmp_path, seed=6, **ARGS)
    other = contents(tmp_path)
    clouds = sorted(name for name in first if name.endswith(".pcd.bin"))
    other_clouds = sorted(name for name in other if name.endswith(".pcd.bin"))
    for a, b in zip(clouds, other_clouds, strict=True):
        pa = np.frombuffer(first[a], np.float32).reshape(-1, 5)
        pb = np.frombuffer(other[b], np.float32).reshape(-1, 5)
        assert len(pa) != len(pb) or not np.allclose(pa, pb)
    assert first["v1.0-mini/ego_pose.json"] != other["v1.0-mini/ego_pose.json"]
    assert first["v1.0-mini/sample.json"] != other["v1.0-mini/sample.json"]  # tokens depend on the seed


def test_overwrite_is_explicit(tmp_path: Path):
    write_nuscenes_world(tmp_path, scenes=1, samples_per_scene=1, image_size=(32, 18))
    with pytest.raises(FileExistsError, match="already contains v1.0-mini"):
        write_nuscenes_world(tmp_path, scenes=1, samples_per_scene=1, image_size=(32, 18))
    (tmp_path / "notes.txt").write_text("kept")
    summary = write_nuscenes_world(tmp_path, scenes=1, samples_per_scene=2, image_size=(32, 18),
                                   overwrite=True)
    assert summary.samples == 2 and (tmp_path / "notes.txt").read_text() == "kept"
    assert len(list((tmp_path / "lidarseg" / "v1.0-mini").iterdir())) == 2
