"""Loading pretrained students: report, voxelisation check (defect D5), fresh head, reference formats."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from support.checkpoints import TINY_UNET as TINY
from support.checkpoints import write_pretraining_checkpoint

from cmcr_core.engine import load_checkpoint
from cmcr_core.models.checkpoints import VoxelMismatchError, load_pretrained_student
from cmcr_core.models.minkunet import MinkUNet34C


def downstream_model(seed: int = 0) -> MinkUNet34C:
    model = MinkUNet34C(1, 17, bn_momentum=0.02, **TINY)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def test_trunk_loaded_head_fresh_and_reported(cylindrical_checkpoint: Path) -> None:
    student = load_checkpoint(cylindrical_checkpoint)["student"]
    model = downstream_model()
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("final.")}
    loaded = load_pretrained_student(model, cylindrical_checkpoint, voxel_size=0.1, cylindrical=True)
    state = model.state_dict()
    trunk = [k for k in state if not k.startswith("final.")]
    assert sorted(loaded.report.loaded) == sorted(trunk)
    for key in trunk:  # weights, BN running statistics and counters
        assert torch.equal(state[key], student[key]), key
    for key, value in head_before.items():
        assert torch.equal(state[key], value)
        assert "head" in loaded.report.skipped[key]
    assert loaded.kind == "cmcr-train" and loaded.method == "ppkt" and loaded.step == 2
    assert loaded.cylindrical is True and loaded.voxel_size == 0.1


def test_cartesian_checkpoint_refused_unless_overridden(cartesian_checkpoint: Path, caplog) -> None:
    with pytest.raises(VoxelMismatchError, match="cartesian.*cylindrical.*--allow-voxel-mismatch"):
        load_pretrained_student(downstream_model(), cartesian_checkpoint, voxel_size=0.1, cylindrical=True)
    with caplog.at_level(logging.WARNING):
        loaded = load_pretrained_student(downstream_model(), cartesian_checkpoint, 0.1, True,
                                         allow_voxel_mismatch=True)
    assert loaded.report.loaded and "allowed by --allow-voxel-mismatch" in caplog.text
    with pytest.raises(VoxelMismatchError, match="voxel_size 0.1"):
        load_pretrained_student(downstream_model(), cartesian_checkpoint, voxel_size=0.05, cylindrical=False)


def test_other_widths_are_refused(tmp_path: Path) -> None:
    wide = write_pretraining_checkpoint(tmp_path, cylindrical=True, planes=(8, 8, 8, 8, 8, 8, 16, 16))
    with pytest.raises(ValueError, match="does not match this network"):
        load_pretrained_student(downstream_model(), wide, voxel_size=0.1, cylindrical=True)


def test_reference_file_with_prefixes_and_codebook(cylindrical_checkpoint: Path, tmp_path: Path) -> None:
    """A SLidR/CMCR-style file: `model_points` with `module.` prefixes, a codebook buffer, its config."""
    student = load_checkpoint(cylindrical_checkpoint)["student"]
    payload = {"model_points": {f"module.{k}": v for k, v in student.items()},
               "config": {"voxel_size": 0.1, "cylindrical_coordinates": False}, "epoch": 10}
    payload["model_points"]["module.codebook.embedding"] = torch.zeros(4, 8)
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    with pytest.raises(VoxelMismatchError):
        load_pretrained_student(downstream_model(), path, voxel_size=0.1, cylindrical=True)
    model = downstream_model()
    loaded = load_pretrained_student(model, path, voxel_size=0.1, cylindrical=False)
    assert loaded.kind == "reference"
    assert loaded.report.skipped["codebook.embedding"] == "codebook buffer"
    assert torch.equal(model.state_dict()["conv0p1s1.kernel"], student["conv0p1s1.kernel"])
