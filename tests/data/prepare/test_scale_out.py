"""`--shard i/n` jobs and `--workers N` give exactly the content of one plain run."""

from __future__ import annotations

import json

from cmcr_core.data.prepare_nuscenes import prepare_nuscenes
from cmcr_core.data.prepared import load_prepared_index

from .conftest import NO_SUPERPIXELS, VERSION, assert_same_contents, dataset_contents


def test_shard_jobs_cover_every_sample_exactly_once(world, prepared_plain, tmp_path):
    out = tmp_path / "out"
    jobs = 3
    for i in range(jobs):
        prepare_nuscenes(world, VERSION, out, NO_SUPERPIXELS, job=(i, jobs))
        part = json.loads((out / f"index-{i}-of-{jobs}.json").read_text())
        assert all(shard["id"] % jobs == i for shard in part["shards"])  # each job writes only its shards
        assert part["job"]["complete"]
    tokens = [t for i in range(jobs)
              for shard in json.loads((out / f"index-{i}-of-{jobs}.json").read_text())["shards"]
              for t in shard["sample_tokens"]]
    reference = load_prepared_index(prepared_plain)
    everything = [t for sid in sorted(reference.shards) for t in reference.shards[sid]["sample_tokens"]]
    assert sorted(tokens) == sorted(everything) and len(set(tokens)) == len(tokens)
    merged = load_prepared_index(out)
    assert merged.complete and merged.num_prepared == reference.header["num_samples"]
    assert_same_contents(dataset_contents(out), dataset_contents(prepared_plain))


def test_two_workers_give_the_same_content_as_one(world, prepared_plain, tmp_path):
    out = tmp_path / "out"
    seen = []
    report = prepare_nuscenes(world, VERSION, out, NO_SUPERPIXELS, workers=2, progress=seen.append)
    assert not report.failures
    assert sum(seen) == report.samples_written == load_prepared_index(prepared_plain).header["num_samples"]
    assert_same_contents(dataset_contents(out), dataset_contents(prepared_plain))
    ours = json.loads((out / "index-0-of-1.json").read_text())
    theirs = json.loads((prepared_plain / "index-0-of-1.json").read_text())
    for key in ("splits", "scenes", "num_shards", "config"):
        assert ours[key] == theirs[key]
    assert [s["sample_tokens"] for s in ours["shards"]] == [s["sample_tokens"] for s in theirs["shards"]]
