"""Training checkpoints: RNG capture/restore, save and resume (format: docs/checkpoints.md).

A checkpoint is written with ``cmcr_core.ops.atomic.atomic_torch_save`` (temporary file in the destination
folder, fsync, ``os.replace``): a reader sees either the previous complete file or the new one, never a
partial file, even if the process dies during the write.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmcr_core.engine.method import load_trainable_state_dict, trainable_state_dict
from cmcr_core.ops.atomic import atomic_torch_save
from cmcr_core.ops.files import load_torch_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "Generators",
    "TrainPosition",
    "capture_rng_state",
    "check_plain_values",
    "load_checkpoint",
    "restore_rng_state",
    "resume_from_checkpoint",
    "save_handoff_checkpoint",
    "save_training_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cmcr-train"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
# Top-level keys owned by the engine; a method's handoff() may not reuse them.
RESERVED_KEYS = frozenset(
    {"format", "version", "step", "epoch", "position", "model", "optimizer", "schedule", "rng",
     "world_size", "recipe", "elapsed_s"}
)

Generators = Mapping[str, "torch.Generator | np.random.Generator"]


@dataclass(frozen=True)
class TrainPosition:
    """Where training stands: ``step`` optimizer steps done; ``position`` batches done in ``epoch``."""

    step: int = 0
    epoch: int = 0
    position: int = 0


def capture_rng_state(generators: Generators | None = None) -> dict[str, Any]:
    """States of torch (CPU and the current CUDA device), Python ``random`` and the named generators.

    Only the current CUDA device is captured: under DDP each rank owns one GPU, and touching the others
    would create a CUDA context on every GPU from every rank.
    """
    named = {}
    for name, generator in (generators or {}).items():
        if isinstance(generator, torch.Generator):
            named[name] = {"kind": "torch", "state": generator.get_state()}
        elif isinstance(generator, np.random.Generator):
            named[name] = {"kind": "numpy", "state": generator.bit_generator.state}
        else:
            raise TypeError(
                f"generator {name!r} is a {type(generator).__name__}, not a torch/numpy Generator"
            )
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "python": random.getstate(),
        "generators": named,
    }


def restore_rng_state(state: Mapping[str, Any], generators: Generators | None = None) -> None:
    """Inverse of ``capture_rng_state``; every passed generator must have a saved state."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    random.setstate(state["python"])
    saved = state["generators"]
    for name, generator in (generators or {}).items():
        if name not in saved:
            raise KeyError(f"checkpoint holds no state for generator {name!r} (saved: {sorted(saved)})")
        if isinstance(generator, torch.Generator):
            generator.set_state(saved[name]["state"])
        else:
            generator.bit_generator.state = saved[name]["state"]


_PLAIN_TYPES = (str, int, float, bool, type(None))


def check_plain_values(value: Any, where: str) -> None:
    """Recipes must survive ``torch.load(weights_only=True)``: plain Python values only."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a string")
            check_plain_values(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain_values(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN_TYPES):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints store plain values only "
                        "(str, int, float, bool, None, lists, tuples, dicts)")


def save_training_checkpoint(
    path: str | Path,
    *,
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    position: TrainPosition,
    rng: list[dict[str, Any]],
    recipe: Mapping[str, Any],
    total_steps: int,
    elapsed_s: float,
    handoff: Mapping[str, Any] | None = None,
) -> Path:
    """Write a resumable checkpoint atomically (call on rank 0; ``rng`` holds one state per rank)."""
    handoff = dict(handoff or {})
    check_plain_values(recipe, "recipe")
    clash = RESERVED_KEYS & handoff.keys()
    if clash:
        raise ValueError(f"Method.handoff() returned engine-reserved checkpoint keys {sorted(clash)}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": position.step,
        "epoch": position.epoch,
        "position": position.position,
        "model": trainable_state_dict(method),
        "optimizer": optimizer.state_dict(),
        "schedule": {"position": position.step, "total_steps": total_steps},
        "rng": rng,
        "world_size": len(rng),
        "recipe": dict(recipe),
        "elapsed_s": elapsed_s,
        **handoff,
    }
    return atomic_torch_save(payload, path)


def save_handoff_checkpoint(
    path: str | Path,
    *,
    method: nn.Module,
    position: TrainPosition,
    recipe: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint that hands a trained network on (fine-tuning's best.pt and last.pt) atomically:
    the keys of a training checkpoint without ``optimizer``, ``schedule``, ``rng`` and ``world_size``
    (``load_checkpoint`` reads it; it cannot resume a run), plus ``extra`` (e.g. the validation scores)."""
    handoff = {**method.handoff(), **(extra or {})} if hasattr(method, "handoff") else dict(extra or {})
    check_plain_values(recipe, "recipe")
    clash = RESERVED_KEYS & handoff.keys()
    if clash:
        raise ValueError(f"hand-off entries clash with engine-reserved checkpoint keys {sorted(clash)}")
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": position.step,
               "epoch": position.epoch, "position": position.position, "model": trainable_state_dict(method),
               "recipe": dict(recipe), **handoff}
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``cmcr-train`` checkpoint (tensors on CPU), checking its format and version."""
    path = Path(path)
    payload = load_torch_file(path, "checkpoint not found: {path}")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a cmcr training checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {payload.get('version')!r}")
    return payload


def resume_from_checkpoint(
    path: str | Path,
    *,
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    rank: int = 0,
    generators: Generators | None = None,
) -> tuple[TrainPosition, float]:
    """Restore method, optimizer and this rank's RNG states; return (position, elapsed seconds)."""
    payload = load_checkpoint(path)
    if "optimizer" not in payload:
        raise ValueError(f"{path} hands a trained network on (best.pt / last.pt) and holds no optimizer or "
                         "RNG state: resume from the run's checkpoint.pt")
    if payload["schedule"]["total_steps"] != total_steps:
        raise ValueError(
            f"{path} was written by a run of {payload['schedule']['total_steps']} steps; resuming with "
            f"total_steps={total_steps} would change the learning-rate schedule"
        )
    load_trainable_state_dict(method, payload["model"], source=str(path))
    optimizer.load_state_dict(payload["optimizer"])
    states = payload["rng"]
    if rank >= len(states):
        logger.warning("%s holds RNG states of %d ranks; rank %d reuses the last one",
                       path, len(states), rank)
    restore_rng_state(states[min(rank, len(states) - 1)], generators)
    position = TrainPosition(payload["step"], payload["epoch"], payload["position"])
    return position, float(payload["elapsed_s"])
