"""Atomic writes: the content lands whole, an interrupted write leaves the old file and no temporary, and
new files get ordinary permissions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from cmcr_core.ops.atomic import atomic_copy, atomic_torch_save, atomic_write_text, write_json_atomic

torch.set_num_threads(1)


def test_each_writer_writes_its_content(tmp_path: Path) -> None:
    text = atomic_write_text(tmp_path / "a" / "b.txt", "héllo\n")  # missing folders are created
    assert text.read_text(encoding="utf-8") == "héllo\n"
    plain = write_json_atomic(tmp_path / "p.json", {"x": [1, 2]})
    assert plain.read_text() == json.dumps({"x": [1, 2]}, indent=1)
    assert write_json_atomic(tmp_path / "n.json", {}, newline=True).read_text() == "{}\n"
    saved = atomic_torch_save({"t": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(saved, weights_only=True)["t"], torch.arange(3))
    copy = atomic_copy(text, tmp_path / "c.txt")
    assert copy.read_bytes() == text.read_bytes()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "f.json", "old")

    class Boom:  # json.dumps raises before anything is written; torch.save raises half-way
        pass

    with pytest.raises(TypeError):
        write_json_atomic(target, Boom())
    with pytest.raises(Exception):  # noqa: B017 - any pickling error will do
        atomic_torch_save({"f": lambda: 0}, target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_new_files_get_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write_text(tmp_path / "r.yaml", "x: 1\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
