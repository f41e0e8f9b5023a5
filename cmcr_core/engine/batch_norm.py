"""Re-estimate batch-norm running statistics with the final weights ("precise BN").

A batch norm's running variance starts at 1 and its running mean at 0, and each training step moves them
by ``momentum`` towards the batch statistics: after k steps a fraction (1 − momentum)^k of the initial
values is left (0.95^100 = 0.6 % after 100 steps at the pretraining momentum 0.05). That is harmless when
the true variance is of order 1 or larger, and when runs last thousands of steps; after a short run whose
first layer sees small inputs it is not: with intensity / 255 the variance of MinkUNet's first
convolution is about 5e-4 on the synthetic world, so after 50 steps its running variance (0.077) is
150 times too large, and a network used in eval mode (linear probing, feature analysis) shrinks its first
layer's output by a factor 12. Re-estimating the statistics as the plain average over a few batches with
the final weights removes that leftover, whatever the input scale.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = [
    "RECALIBRATION_EPOCH", "batch_norms", "recalibrate_at_last_step", "recalibrate_batch_norm",
    "recalibrate_from_batches",
]

logger = logging.getLogger(__name__)

# Epoch number of the batches that re-estimate statistics at the end of a run: draws unlike any training
# epoch's (augmentations and order are seeded by epoch).
RECALIBRATION_EPOCH = 10**6


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch norm (BatchNorm1d/2d/3d, SyncBatchNorm) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batch_norm(module: nn.Module, inputs: Iterable[Any], forward: Callable[[Any], Any]) -> int:
    """Reset the running statistics of every batch norm in ``module`` and re-estimate them as the
    cumulative (equal-weight) average of the batch statistics over ``inputs``.

    ``forward(item)`` runs ``module`` on one item; it is called in training mode (batch norms normalise
    with batch statistics and update the running ones) without gradients. Parameters are untouched; the
    momenta and the training flags of every sub-module are restored afterwards. Under DDP with
    SyncBatchNorm the batch statistics are those of all ranks, so every rank ends with the same values.

    Returns:
        the number of items used (0 leaves the statistics as they were).
    """
    norms = batch_norms(module)
    if not norms:
        return 0
    items = iter(inputs)
    first = next(items, None)
    if first is None:
        return 0
    modes = {m: m.training for m in module.modules()}
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch weighs the same
    module.train()
    count = 0
    try:
        for item in itertools.chain((first,), items):
            forward(item)
            count += 1
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return count


def recalibrate_from_batches(module: nn.Module, batches: Callable[[int, int], Iterable[Any]], count: int,
                             forward: Callable[[Any], Any]) -> int:
    """``recalibrate_batch_norm`` over ``count`` batches of a training loop's batch factory
    (``batches(epoch, start)``): epochs ``RECALIBRATION_EPOCH``, ``RECALIBRATION_EPOCH + 1``, ... until
    ``count`` batches were drawn (a small labelled set has fewer batches per epoch than that)."""

    def draws() -> Iterable[Any]:
        for epoch in itertools.count(RECALIBRATION_EPOCH):
            empty = True
            for batch in batches(epoch, 0):
                empty = False
                yield batch
            if empty:
                return

    return recalibrate_batch_norm(module, itertools.islice(draws(), count), forward)


def recalibrate_at_last_step(total_steps: int, count: int, batches: Callable[[int, int], Iterable[Any]],
                             network: Callable[[Any], nn.Module], forward: Callable[[nn.Module, Any], Any],
                             then: Callable[[int, Any], None] | None = None) -> Callable[[int, Any], None]:
    """A training loop ``step_callback(step, method)``: after step ``total_steps`` (before the final
    checkpoint is written) re-estimate the batch-norm statistics of ``network(method)`` over ``count``
    batches (``recalibrate_from_batches``), ``forward(net, batch)`` running it on one batch. ``then``: a
    callback to run after it, every step (at the last step it sees the statistics the checkpoint gets).
    With ``count`` 0 only ``then`` runs."""

    def callback(step: int, method: Any) -> None:
        if count > 0 and step == total_steps:
            net = network(method)
            used = recalibrate_from_batches(net, batches, count, lambda batch: forward(net, batch))
            logger.info("re-estimated the batch-norm statistics of %s over %d batches", type(net).__name__,
                        used)
        if then is not None:
            then(step, method)

    return callback
