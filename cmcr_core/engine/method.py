"""The two things the training engine knows: a ``Method`` and a batch (anything with ``.to(device)``).

Contract of a method (see docs/checkpoints.md for what it hands to downstream tasks):

* ``forward(batch)`` returns a dict ``{name: scalar tensor}`` of loss terms, or a pair
  ``(losses, metrics)`` where ``metrics`` holds extra scalars to log (not optimised).
* The method owns its loss weights: it computes only the terms whose weight is > 0 and returns them
  already multiplied by their weights. The engine optimises the plain sum of what it returns and logs
  every returned term under its name.
* ``handoff()`` returns what downstream tasks read from a checkpoint (e.g. ``{"student": state_dict,
  "teacher": info}``); the engine stores those entries at the top level of every checkpoint.
* Sub-modules with ``is_frozen = True`` (``cmcr_core.models.frozen_teacher.FrozenTeacher``) are skipped by
  ``train()`` (they stay in eval mode) and are left out of training checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "Method",
    "frozen_prefixes",
    "load_trainable_state_dict",
    "move_to_device",
    "trainable_state_dict",
]


def _is_frozen(module: nn.Module) -> bool:
    return bool(getattr(module, "is_frozen", False))


def _contains_frozen(module: nn.Module) -> bool:
    return any(_is_frozen(m) for m in module.modules())


def _set_mode(module: nn.Module, mode: bool) -> None:
    module.training = mode
    for child in module.children():
        if _is_frozen(child):
            continue
        if _contains_frozen(child):
            _set_mode(child, mode)
        else:
            # Respect children that override train() themselves.
            child.train(mode)


class Method(nn.Module):
    """Base class of pretraining methods: wires models and losses, returns named loss terms."""

    def train(self, mode: bool = True) -> Method:
        """Set training mode on every sub-module except frozen ones (which stay in eval mode)."""
        _set_mode(self, mode)
        return self

    def handoff(self) -> dict[str, Any]:
        """Entries stored at the top level of checkpoints for downstream tasks (default: none)."""
        return {}

    def seed_generators(self, seed: int, *names: str) -> None:
        """Create the attributes `names` as torch generators seeded seed, seed + 1, ...

        Random draws (e.g. pair sampling) happen on the features' device, with no host round trip (D11 of
        docs/differences.md), so these generators follow the module: moving it re-creates them on the new
        device with the same seeds. Moving happens before training starts, hence re-seeding loses nothing.
        """
        self._generator_seeds = {name: seed + i for i, name in enumerate(names)}
        for name, value in self._generator_seeds.items():
            setattr(self, name, torch.Generator().manual_seed(value))

    def _apply(self, fn: Any, recurse: bool = True) -> Method:
        result = super()._apply(fn, recurse)
        seeds = getattr(self, "_generator_seeds", {})
        device = next(self.parameters()).device if seeds else None
        for name, value in seeds.items():
            if getattr(self, name).device != device:
                setattr(self, name, torch.Generator(device=device).manual_seed(value))
        return result


def frozen_prefixes(module: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes (``"name."``) of the frozen sub-modules of ``module``."""
    return tuple(f"{name}." for name, m in module.named_modules() if name and _is_frozen(m))


def trainable_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """``module.state_dict()`` without the tensors of frozen sub-modules (parameters and buffers)."""
    skip = frozen_prefixes(module)
    return {k: v for k, v in module.state_dict().items() if not k.startswith(skip)}


def load_trainable_state_dict(
    module: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint"
) -> None:
    """Load a ``trainable_state_dict``; every non-frozen tensor must be present, nothing may be extra."""
    result = module.load_state_dict(dict(state), strict=False)
    skip = frozen_prefixes(module)
    missing = [k for k in result.missing_keys if not (skip and k.startswith(skip))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{source} does not match the method {type(module).__name__}: missing {missing[:5]} "
            f"({len(missing)}), unexpected {list(result.unexpected_keys)[:5]} ({len(result.unexpected_keys)})"
        )


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch to ``device``: objects with ``.to`` (tensors, typed batches), dicts, lists, tuples."""
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
