"""Interrupted runs resume with nothing lost or duplicated; shards appear only when complete."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import cmcr_core.data.prepare_nuscenes as prep
from cmcr_core.data.prepare_nuscenes import PrepareError, PrepareOptions, prepare_nuscenes
from cmcr_core.data.prepared import load_prepared_index

from .conftest import NO_SUPERPIXELS, VERSION, assert_same_contents, dataset_contents


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way may swallow it."""


def interrupt_after(monkeypatch: pytest.MonkeyPatch, samples: int) -> None:
    real = prep.process_sample
    calls = {"n": 0}

    def flaky(task, context):
        calls["n"] += 1
        if calls["n"] > samples:
            raise Interrupt()
        return real(task, context)

    monkeypatch.setattr(prep, "process_sample", flaky)


def shard_datasets(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in f}


def test_interrupted_run_resumes_to_the_uninterrupted_result(world, prepared_plain, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupt_after(monkeypatch, samples=5)  # 2 samples per shard: dies inside the third shard
    with pytest.raises(Interrupt):
        prepare_nuscenes(world, VERSION, out, NO_SUPERPIXELS)
    monkeypatch.undo()

    index = json.loads((out / "index-0-of-1.json").read_text())
    assert [s["id"] for s in index["shards"]] == [0, 1]
    assert not index["job"]["complete"]
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.h5", "shard-00001.h5"]

    # A killed process would also leave a half-written temporary shard behind.
    (out / "shards" / "shard-00002.h5.tmp").write_bytes(b"partial garbage")
    report = prepare_nuscenes(world, VERSION, out, NO_SUPERPIXELS)
    assert report.shards_kept == 2 and not report.failures
    assert not list((out / "shards").glob("*.tmp"))
    assert_same_contents(dataset_contents(out), dataset_contents(prepared_plain))
    for shard in sorted((prepared_plain / "shards").glob("*.h5")):
        expected, got = shard_datasets(shard), shard_datasets(out / "shards" / shard.name)
        assert expected.keys() == got.keys()
        for name in expected:
            np.testing.assert_array_equal(expected[name], got[name], err_msg=f"{shard.name}:{name}")


def test_shard_committed_before_the_index_update_is_adopted(world, tmp_path):
    out = tmp_path / "out"
    prepare_nuscenes(world, VERSION, out, NO_SUPERPIXELS)
    reference = dataset_contents(out)
    # Crash window: shards renamed into place, index not yet rewritten.
    (out / "index-0-of-1.json").unlink()
    report = prepare_nuscenes(world, VERSION, out, NO_SUPERPIXELS)
    assert report.shards_built == 0 and report.shards_kept == load_prepared_index(out).header["num_shards"]
    assert_same_contents(dataset_contents(out), reference)


def test_rerun_with_other_settings_is_refused(world, prepared_plain):
    out = prepared_plain
    with pytest.raises(PrepareError, match="superpixels"):
        prep.plan_prepare(world, VERSION, out, PrepareOptions(superpixels="slic", samples_per_shard=2))
    with pytest.raises(PrepareError, match="samples_per_shard"):
        prep.plan_prepare(world, VERSION, out, PrepareOptions(superpixels="none", samples_per_shard=3))
