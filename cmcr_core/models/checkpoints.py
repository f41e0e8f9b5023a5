"""Load a pretrained 3D student into a downstream network, with a report and a voxelisation check.

Accepted files (docs/checkpoints.md §2.1):

* `cmcr-train` checkpoints of `cmcr pretrain`: the `student` hand-off entry; the pretraining recipe
  (`recipe.data.voxel_size`, `recipe.data.cylindrical`, `recipe.data.intensity_scale`) is checked against
  the downstream settings;
* SLidR / PPKT / CMCR reference files (`model_points` or `state_dict`, optional `config` with
  `voxel_size` and `cylindrical_coordinates`);
* a bare state dict (nothing to check: a warning says so).

Tensors are selected by `cmcr_core.models.convert` (prefix stripping on every key, codebook buffers
dropped, name and shape must match). The segmentation head (`final.*`) is always new. Every other tensor of
the target network must be provided by the checkpoint, otherwise the widths/depths of the pretraining and
downstream networks differ and loading is refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cmcr_core.models.convert import LoadReport, convert_state_dict, extract_state_dict
from cmcr_core.ops.files import load_torch_file

__all__ = ["PretrainedStudent", "VoxelMismatchError", "load_pretrained_student", "read_pretrained_student"]

log = logging.getLogger(__name__)

HEAD_PREFIX = "final."


class VoxelMismatchError(ValueError):
    """The checkpoint was pretrained with another voxelisation than the downstream recipe uses."""


@dataclass
class PretrainedStudent:
    """What was loaded from where.

    Attributes:
        path: the checkpoint file; kind: "cmcr-train", "reference" (SLidR/CMCR files) or "state_dict".
        method, step: pretraining method and optimizer steps (cmcr-train only, else None).
        voxel_size, cylindrical, intensity_scale: the pretraining voxelisation/input (None if unknown).
        report: loaded / skipped (with reason) / missing keys of the target network.
        teacher: the pretraining teacher's description (cmcr-train only).
    """

    path: Path
    kind: str
    method: str | None
    step: int | None
    voxel_size: float | None
    cylindrical: bool | None
    intensity_scale: float | None
    report: LoadReport
    teacher: dict[str, Any] | None = None

    def describe(self) -> str:
        vox = "unknown voxelisation" if self.voxel_size is None else (
            f"voxel {self.voxel_size} {'cylindrical' if self.cylindrical else 'cartesian'}")
        origin = self.kind
        if self.kind == "cmcr-train":
            origin = f"{self.method or 'unknown method'}, step {self.step}"
        return f"{self.path} ({origin}, {vox}): {self.report.summary()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (key lists included) for run folders."""
        return {"path": str(self.path), "kind": self.kind, "method": self.method, "step": self.step,
                "voxel_size": self.voxel_size, "cylindrical": self.cylindrical,
                "intensity_scale": self.intensity_scale, "loaded": list(self.report.loaded),
                "skipped": dict(self.report.skipped), "missing": list(self.report.missing),
                "teacher": self.teacher}


def read_pretrained_student(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(student tensors, metadata) of a checkpoint file; metadata keys as in `PretrainedStudent`."""
    path = Path(path)
    payload = load_torch_file(path, "pretrained checkpoint not found: {path}")
    if not isinstance(payload, Mapping):
        raise ValueError(f"{path}: expected a checkpoint mapping, got {type(payload).__name__}")
    meta: dict[str, Any] = {"kind": "state_dict", "method": None, "step": None, "voxel_size": None,
                            "cylindrical": None, "intensity_scale": None, "teacher": None}
    if payload.get("format") == "cmcr-train":
        if not isinstance(payload.get("student"), Mapping):
            raise ValueError(f"{path}: a cmcr training checkpoint without a 'student' hand-off entry "
                             "(written by a method whose handoff() returns no student)")
        recipe = payload.get("recipe") or {}
        data = recipe.get("data") or {}
        meta.update(kind="cmcr-train", method=recipe.get("method"), step=payload.get("step"),
                    voxel_size=data.get("voxel_size"), cylindrical=data.get("cylindrical"),
                    intensity_scale=data.get("intensity_scale"), teacher=payload.get("teacher"))
        state = extract_state_dict(payload["student"])
    else:
        config = payload.get("config")
        if isinstance(config, Mapping) or "model_points" in payload or "state_dict" in payload:
            meta["kind"] = "reference"
        if isinstance(config, Mapping):
            meta["voxel_size"] = config.get("voxel_size")
            meta["cylindrical"] = config.get("cylindrical_coordinates")
        state = extract_state_dict(payload)
    if not state:
        raise ValueError(
            f"{path}: no tensors found (looked in 'student', 'model_points', 'state_dict', top level)"
        )
    return state, meta


def check_voxelisation(meta: Mapping[str, Any], voxel_size: float, cylindrical: bool, source: str,
                       allow_mismatch: bool = False) -> None:
    """Refuse (or, when allowed, warn about) a pretraining voxelisation that differs (D5 of
    docs/differences.md)."""
    if meta.get("voxel_size") is None or meta.get("cylindrical") is None:
        log.warning("%s does not record its voxelisation: cannot check it against voxel %s %s", source,
                    voxel_size, "cylindrical" if cylindrical else "cartesian")
        return
    same_size = math.isclose(float(meta["voxel_size"]), float(voxel_size), rel_tol=1e-9)
    if same_size and bool(meta["cylindrical"]) == bool(cylindrical):
        return

    def name(size: Any, cyl: Any) -> str:
        return f"voxel_size {size}, {'cylindrical' if cyl else 'cartesian'}"

    message = (f"{source} was pretrained with {name(meta['voxel_size'], meta['cylindrical'])} but this "
               f"recipe uses {name(voxel_size, cylindrical)} (data.voxel_size / data.cylindrical)")
    if not allow_mismatch:
        raise VoxelMismatchError(message + "; pass --allow-voxel-mismatch to load it anyway")
    log.warning("%s (allowed by --allow-voxel-mismatch)", message)


def load_pretrained_student(model: nn.Module, path: str | Path, voxel_size: float, cylindrical: bool,
                            allow_voxel_mismatch: bool = False, intensity_scale: float | None = None
                            ) -> PretrainedStudent:
    """Copy a pretrained student's trunk into `model` (e.g. `MinkUNet34C(1, 17)`), leaving its head new.

    Args:
        model: the downstream network; keys starting with "final." form its head.
        path: checkpoint file.
        voxel_size, cylindrical: the downstream voxelisation, compared with the pretraining one.
        allow_voxel_mismatch: warn instead of raising `VoxelMismatchError`.
        intensity_scale: the downstream input scaling; a different pretraining one is logged as a warning.
    Raises:
        VoxelMismatchError, FileNotFoundError, ValueError (the trunk does not match the network).
    """
    path = Path(path)
    state, meta = read_pretrained_student(path)
    check_voxelisation(meta, voxel_size, cylindrical, str(path), allow_voxel_mismatch)
    pre_scale = meta.get("intensity_scale")
    if intensity_scale is not None and pre_scale is not None and not math.isclose(pre_scale, intensity_scale):
        log.warning("%s was pretrained with intensity_scale %s, this recipe feeds %s", path, pre_scale,
                    intensity_scale)
    target = model.state_dict()
    selected, report = convert_state_dict(state, target)
    for key in list(report.skipped):
        if key.startswith(HEAD_PREFIX) and report.skipped[key].startswith("shape mismatch"):
            report.skipped[key] = f"pretraining head ({report.skipped[key]}): the segmentation head is new"
    trunk_missing = [k for k in report.missing if not k.startswith(HEAD_PREFIX)]
    if trunk_missing:
        mismatched = [f"{k} ({r})" for k, r in report.skipped.items() if r.startswith("shape mismatch")]
        raise ValueError(
            f"{path}: the pretrained student does not match this network: {len(trunk_missing)} of "
            f"{len(target)} tensors have no counterpart (e.g. {trunk_missing[:3]}; shape mismatches: "
            f"{mismatched[:3]}). Use the pretraining recipe's student widths (model.planes/layers/init_dim)."
        )
    # The head is never taken from the checkpoint, even when its shape happens to fit.
    for key in [k for k in selected if k.startswith(HEAD_PREFIX)]:
        del selected[key]
        report.loaded.remove(key)
        report.skipped[key] = "segmentation head: freshly initialised"
        report.missing.append(key)
    model.load_state_dict(selected, strict=False)
    result = PretrainedStudent(path, meta["kind"], meta["method"], meta["step"], meta["voxel_size"],
                               meta["cylindrical"], meta["intensity_scale"], report, meta["teacher"])
    log.info("pretrained student: %s", result.describe())
    for key, reason in report.skipped.items():
        log.info("  skipped %s: %s", key, reason)
    return result
