"""Training over damaged prepared data: by default the first damaged scan stops the run naming it; with
`data.skip_damaged` the run replaces it, finishes, and counts what it left out in metrics.jsonl."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import pytest

from cmcr_core.data.integrity import DamagedSampleError, SkipDamaged
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.runs.finetune import label_subset, run_finetune


def _damage_one_training_scan(root: Path, recipe) -> str:
    """Damage the chunk of `points` that holds points of exactly one scan of the labelled subset and of no
    validation scan; returns that scan's token."""
    (shard,) = sorted((root / "shards").glob("*.h5"))
    train = PreparedDataset(root, recipe.data.train_split)
    subset = {train.tokens[i] for i in label_subset(recipe, train)[0].indices}
    val = set(PreparedDataset(root, recipe.data.val_split).tokens)
    with h5py.File(shard, "r") as f:
        tokens = [t.decode() for t in f["sample_token"][:]]
        offsets, rows = f["point_offsets"][:], f["points"].chunks[0]
        chunks = [f["points"].id.get_chunk_info(k) for k in range(f["points"].id.get_num_chunks())]
    for info in chunks:
        start = info.chunk_offset[0]
        hit = {tokens[r] for r in range(len(tokens)) if offsets[r] < start + rows and offsets[r + 1] > start}
        if len(hit & subset) == 1 and not hit & val:
            with open(shard, "r+b") as handle:
                at = info.byte_offset + (info.size // 2 & ~1)
                handle.seek(at)
                word = handle.read(2)
                handle.seek(at)
                handle.write(bytes(b ^ 0x5A for b in word))
            return (hit & subset).pop()
    raise AssertionError("no chunk holds exactly one training scan")


def test_a_damaged_scan_stops_training_or_is_skipped_and_counted(tiny_recipe, prepared_world: Path,
                                                                  tmp_path: Path) -> None:
    root = Path(shutil.copytree(prepared_world, tmp_path / "prepared"))
    recipe = replace(tiny_recipe, data=replace(tiny_recipe.data, path=str(root)))
    token = _damage_one_training_scan(root, recipe)

    with pytest.raises(DamagedSampleError, match=f"sample {token}, dataset 'points'"):
        run_finetune(recipe, tmp_path / "stopped")

    skipping = replace(recipe, data=replace(recipe.data, skip_damaged=True))
    run = run_finetune(skipping, tmp_path / "skipped")
    records = [json.loads(line) for line in (tmp_path / "skipped" / "metrics.jsonl").read_text().splitlines()]
    epochs = recipe.train.epochs
    assert run.result.position.step == len(records) == epochs  # one step per epoch, each logged
    assert [r["skipped_samples"] for r in records] == list(range(1, epochs + 1))  # once per epoch


class _Scans:
    """Items 0..n-1; those in `damaged` raise as a damaged prepared sample does."""

    def __init__(self, n: int, damaged: set[int]) -> None:
        self.n, self.damaged = n, damaged

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i in self.damaged:
            raise DamagedSampleError("shard.h5", f"t{i}", "points", "checksum mismatch")
        return i


def test_skipping_takes_the_next_readable_scan_and_wraps_around() -> None:
    items = SkipDamaged(_Scans(5, {1, 2, 4}))
    assert [items[i] for i in range(5)] == [(0, 0), (3, 1), (3, 1), (3, 0), (0, 1)]
    with pytest.raises(ValueError, match="every one of the 2 samples is damaged"):
        SkipDamaged(_Scans(2, {0, 1}))[0]
