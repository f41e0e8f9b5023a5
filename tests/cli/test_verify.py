"""`cmcr prepare verify`: a damaged prepared folder is listed with what to rebuild (exit 1), `--retry-failed`
rebuilds it from the raw dataset into the bytes a fresh prepare writes (exit 0)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.data.prepared import PreparedDataset

runner = CliRunner()


def _damage(shard: Path) -> None:
    import h5py

    with h5py.File(shard, "r") as f:
        info = f["points"].id.get_chunk_info(1)
    with open(shard, "r+b") as handle:  # one 16-bit word of the second chunk of points
        at = info.byte_offset + (info.size // 2 & ~1)
        handle.seek(at)
        word = handle.read(2)
        handle.seek(at)
        handle.write(bytes(b ^ 0x5A for b in word))


def test_verify_lists_the_damage_and_retry_failed_rebuilds_it(nosp_prepared_world: Path, tmp_path: Path):
    copy = Path(shutil.copytree(nosp_prepared_world, tmp_path / "prepared"))
    (shard,) = sorted((copy / "shards").glob("*.h5"))
    clean = runner.invoke(app, ["prepare", "verify", "--data", str(copy)])
    assert clean.exit_code == 0, clean.output
    assert "10 samples checked; 0 damaged samples" in " ".join(clean.output.split())

    _damage(shard)
    found = runner.invoke(app, ["prepare", "verify", "--data", str(copy)])
    text = " ".join(found.output.split())
    assert found.exit_code == 1, found.output
    assert "to rebuild: shards/" + shard.name in text and "--retry-failed" in text
    assert "points" in text and "Traceback" not in found.output

    fixed = runner.invoke(app, ["prepare", "verify", "--data", str(copy), "--retry-failed"])
    assert fixed.exit_code == 0, fixed.output
    assert "no damage left" in " ".join(fixed.output.split())
    rebuilt, original = PreparedDataset(copy, "all"), PreparedDataset(nosp_prepared_world, "all")
    assert rebuilt.tokens == original.tokens
    for i in range(len(original)):
        np.testing.assert_array_equal(rebuilt[i].points, original[i].points)
        np.testing.assert_array_equal(rebuilt[i].labels, original[i].labels)


def test_verify_of_a_folder_that_is_not_prepared_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["prepare", "verify", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
