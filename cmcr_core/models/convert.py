"""Load MinkowskiEngine-format Res16UNet34C checkpoints (SLidR, PPKT, CMCR) into `MinkUNet34C`.

As Eaphan/CMCR `downstream/model_builder.py`: take `checkpoint["model_points"]` if present, else
`checkpoint["state_dict"]`, else the mapping itself; drop codebook buffers; strip leading `model.`,
`model_points.`, `module.`, `encoder.` prefixes from EVERY key (the reference looks only at the first key);
keep keys whose name and shape match the target network.  MinkowskiEngine kernels are already in our layout,
so no tensor is reshaped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from cmcr_core.ops.files import load_torch_file

log = logging.getLogger(__name__)

PREFIXES = ("model_points.", "model.", "module.", "encoder.")
CODEBOOK_BUFFERS = frozenset({"embedding", "ema_weight", "ema_count", "unactivated_count"})


@dataclass
class LoadReport:
    """What a checkpoint load did: students (`load_minkowski_checkpoint`, `load_pretrained_student`) and
    teachers (`cmcr_core.models.teacher.copy_matching_tensors`).

    Attributes:
        loaded: target keys copied from the checkpoint.
        skipped: checkpoint key (after prefix stripping) -> reason (unknown key, shape mismatch, codebook).
        missing: target keys the checkpoint did not provide (left as initialised).
        checkpoint_format, prefix: the detected file layout and the stripped key prefix (teachers).
    """

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    checkpoint_format: str = ""
    prefix: str = ""

    def summary(self) -> str:
        return f"loaded {len(self.loaded)}, skipped {len(self.skipped)}, missing {len(self.missing)}"


def extract_state_dict(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """The network's state dict inside a checkpoint: `model_points` > `state_dict` > the mapping itself."""
    for name in ("model_points", "state_dict"):
        inner = checkpoint.get(name)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    out = {}
    for key, value in checkpoint.items():
        if not isinstance(key, str):
            raise ValueError(f"checkpoint: non-string key {key!r}")
        if isinstance(value, Tensor):
            out[key] = value
    return out


def strip_prefix(key: str) -> str:
    """Remove every leading wrapper prefix (`module.model.conv0p1s1.kernel` -> `conv0p1s1.kernel`)."""
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def is_codebook_key(key: str) -> bool:
    """CMCR codebook buffers (docs/cmcr.md): `embedding`, `ema_weight`, `ema_count`, `unactivated_count`,
    or anything under a `codebook` module."""
    parts = key.split(".")
    return parts[-1] in CODEBOOK_BUFFERS or "codebook" in parts[:-1]


def convert_state_dict(state: Mapping[str, Tensor], target: Mapping[str, Tensor]
                       ) -> tuple[dict[str, Tensor], LoadReport]:
    """Select and rename checkpoint tensors for a target state dict.

    Args:
        state: checkpoint tensors (any of the supported prefixes).
        target: the model's `state_dict()` (names and shapes to match).
    Returns:
        (tensors to load keyed by target names, report).
    """
    report = LoadReport()
    selected: dict[str, Tensor] = {}
    for raw_key, value in state.items():
        key = strip_prefix(raw_key)
        if is_codebook_key(key):
            report.skipped[key] = "codebook buffer"
            continue
        if key not in target:
            report.skipped[key] = "unknown key"
            continue
        if key in selected:
            raise ValueError(
                f"checkpoint: two keys map to {key!r} after prefix stripping (one is {raw_key!r})"
            )
        if tuple(value.shape) != tuple(target[key].shape):
            report.skipped[key] = (f"shape mismatch: checkpoint {tuple(value.shape)} vs model "
                                   f"{tuple(target[key].shape)}")
            continue
        selected[key] = value
        report.loaded.append(key)
    report.missing = [k for k in target if k not in selected]
    return selected, report


def load_minkowski_checkpoint(model: nn.Module, checkpoint: Mapping[str, object] | str | Path,
                              weights_only: bool = True) -> LoadReport:
    """Copy the matching tensors of a MinkowskiEngine-format checkpoint into `model` (in place).

    Args:
        model: e.g. `MinkUNet34C(1, 17)`; its head stays freshly initialised when shapes differ.
        checkpoint: a loaded checkpoint mapping or a path for `torch.load` (on CPU).
        weights_only: passed to `torch.load`; set False only for trusted files holding Python objects.
    Returns:
        `LoadReport` listing loaded, skipped (with reason) and missing keys.
    """
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        checkpoint = load_torch_file(path, "checkpoint not found: {path}", trusted=not weights_only,
                                     expected="a MinkowskiEngine-format checkpoint (SLidR, PPKT, CMCR)")
        if not isinstance(checkpoint, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {type(checkpoint).__name__}")
    state = extract_state_dict(checkpoint)
    if not state:
        raise ValueError("checkpoint holds no tensors (looked in 'model_points', 'state_dict', top level)")
    selected, report = convert_state_dict(state, model.state_dict())
    model.load_state_dict(selected, strict=False)
    log.info("MinkowskiEngine checkpoint: %s", report.summary())
    for key, reason in report.skipped.items():
        log.debug("skipped %s: %s", key, reason)
    return report
