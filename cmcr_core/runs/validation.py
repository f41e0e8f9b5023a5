"""Validation while fine-tuning (`train.eval_every`): scores on the validation scans every few epochs, into
metrics.jsonl (and TensorBoard), and the best validated network in `best.pt`.

A `Validator` is the training loop's step callback: at the end of every `eval_every`-th epoch and after
the last step it scores the network with the evaluator of the final evaluation
(`cmcr_core.eval.segmentation.evaluate`) on `train.eval_split` (default: the run's `data.val_split`), at
most `train.eval_max_scans` evenly spaced scans of it, and returns `val_miou`, `val_scans` and
`val_iou/<class>` for that step's record. A better `val_miou` than every earlier one writes `best.pt`.

Batch-norm statistics. With `train.recalibrate_bn_batches` > 0 the final network is scored with
statistics re-estimated for its final weights; a validation is scored the same way: the statistics are
re-estimated over the same training batches for the current weights, the network is validated, `best.pt`
is written with those statistics, and the training statistics are put back. So `best.pt` holds the
statistics it was validated with (`cmcr evaluate --weights RUN/best.pt` gives its `val_miou` again), and
validating never changes training: the global random state is restored too, so a run with validation
ends with the same weights as one without. At the last step the statistics were just re-estimated
(`cmcr_core.engine.batch_norm.recalibrate_at_last_step`), so they are used as they are.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmcr_core.data.segmentation_dataset import SegmentationSettings, Subset
from cmcr_core.engine import distributed
from cmcr_core.engine.checkpoint import TrainPosition, save_handoff_checkpoint
from cmcr_core.eval.segmentation import evaluate

__all__ = ["Validator", "even_subset", "read_best_score", "validation_values"]

logger = logging.getLogger(__name__)


def even_subset(source: Sequence[Any], max_scans: int) -> Sequence[Any]:
    """At most `max_scans` scans of `source`, evenly spaced and in order (0 = all of them)."""
    if max_scans <= 0 or max_scans >= len(source):
        return source
    return Subset(source, sorted({int(i) for i in np.linspace(0, len(source) - 1, max_scans).round()}))


def validation_values(metrics: Any) -> dict[str, Any]:
    """The scores a validation adds to metrics.jsonl: `val_miou`, `val_scans`, `val_iou/<class>` (null when
    the class is absent from the validation scans)."""
    values: dict[str, Any] = {"val_miou": None if math.isnan(metrics.miou) else float(metrics.miou),
                              "val_scans": int(metrics.num_scans)}
    for c in range(1, len(metrics.class_names)):
        iou = float(metrics.iou[c])
        values[f"val_iou/{metrics.class_names[c]}"] = None if math.isnan(iou) else iou
    return values


def read_best_score(path: Path) -> float:
    """The `val_miou` a `best.pt` was written with (−inf when there is none yet)."""
    if not path.is_file():
        return -math.inf
    from cmcr_core.engine.checkpoint import load_checkpoint

    return float(load_checkpoint(path).get("validation", {}).get("val_miou", -math.inf))


@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Put back the buffers (batch-norm statistics), the global random state and the training mode."""
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
            random.setstate(python_state)


@dataclass
class Validator:
    """The step callback of a validating fine-tuning run (see the module docstring)."""

    network: Callable[[Any], nn.Module]  # the segmentation network of the trained method
    source: Sequence[Any]
    settings: SegmentationSettings
    class_names: tuple[str, ...]
    split: str
    dataset: str
    batch_size: int
    every_steps: int
    steps_per_epoch: int
    total_steps: int
    best_path: Path
    recipe: dict[str, Any]
    context: distributed.DistContext
    recalibrate: Callable[[nn.Module], int] | None = None  # re-estimates the statistics of a network
    best: float = -math.inf

    def __call__(self, step: int, method: Any) -> dict[str, Any] | None:
        if step % self.every_steps and step != self.total_steps:
            return None
        model = self.network(method)
        with _untouched(model):
            if self.recalibrate is not None and step != self.total_steps:
                self.recalibrate(model)
            metrics = evaluate(model, self.source, self.settings, self.class_names, self.split, self.dataset,
                               self.batch_size, context=self.context, label="validate")
            values = validation_values(metrics)
            score = values["val_miou"]
            if score is not None and score > self.best:
                self.best = score
                if self.context.is_main:
                    self._save_best(step, method, values)
        method.train()
        logger.info("step %d: validation mIoU %s on %d scans of %s (best %.4f)", step,
                    "n/a" if score is None else f"{score:.4f}", values["val_scans"], self.split, self.best)
        return values

    def _save_best(self, step: int, method: Any, values: dict[str, Any]) -> None:
        position = TrainPosition(step, step // self.steps_per_epoch, step % self.steps_per_epoch)
        save_handoff_checkpoint(self.best_path, method=method, position=position, recipe=self.recipe,
                                extra={"validation": {"step": step, "split": self.split, **values}})
