"""Scale-out helpers for torchrun/DDP: NCCL on GPUs, gloo on CPU (tests). No home-made distribution.

Launch with ``torchrun --nproc_per_node N ...``; ``init_distributed()`` reads ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` from the environment (``env://``). Without those
variables (or with WORLD_SIZE=1) it returns a single-process context and initialises nothing.

Only rank 0 writes files (``DistContext.is_main``); metrics are averaged over ranks with
``all_reduce_mean`` before logging.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

__all__ = [
    "DistContext",
    "ShardedSampler",
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "cleanup_distributed",
    "convert_sync_batchnorm",
    "init_distributed",
    "rank_seed",
    "seed_process",
    "single_process_context",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def single_process_context(device: str | torch.device | None = None) -> DistContext:
    """Context of a plain run: ``device`` or CUDA when available, else CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return DistContext(device=torch.device(device))


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by torchrun's environment variables.

    ``device``: ``"cuda"`` or ``"cpu"``; default CUDA when available. CUDA ranks use NCCL and GPU
    ``LOCAL_RANK`` (so a GPU index in ``device`` is refused under torchrun); CPU ranks use gloo. A single
    process takes ``device`` as given (``"cuda:1"`` included).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device_name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if world_size <= 1:
        return single_process_context(device_name)
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except KeyError as error:
        raise RuntimeError(f"WORLD_SIZE={world_size} but {error} is not set; launch with torchrun") from error
    requested = torch.device(device_name)
    if requested.type == "cuda":
        if requested.index is not None and requested.index != local_rank:
            raise ValueError(f"device {device_name!r} under torchrun: each rank uses the GPU of its "
                             f"LOCAL_RANK ({local_rank} here); name the device 'cuda' (CUDA_VISIBLE_DEVICES "
                             "picks the GPUs)")
        torch.cuda.set_device(local_rank)
        torch_device, backend = torch.device("cuda", local_rank), "nccl"
    elif requested.type == "cpu":
        torch_device, backend = torch.device("cpu"), "gloo"
    else:
        raise ValueError(f"device {device_name!r}: distributed runs use 'cuda' (NCCL) or 'cpu' (gloo)")
    if not dist.is_initialized():
        # NCCL: bind the group to this rank's GPU (device_id), so barriers and collectives never guess it.
        dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=torch_device if backend == "nccl" else None,
        )
    logger.info("rank %d/%d (local %d) on %s with %s", rank, world_size, local_rank, torch_device, backend)
    return DistContext(rank, world_size, local_rank, torch_device, backend)


def cleanup_distributed() -> None:
    """Leave the process group (no-op when none was joined).

    Called from the runners' ``finally`` blocks.  On a normal exit the ranks first meet at a barrier, so no
    rank tears its gloo connections down while a peer still finishes its last collective (a rank can then
    abort with "terminate called without an active exception"; seen once in the 2-rank test).  While an
    exception propagates there is no barrier: the peers may be gone, and it would wait for the timeout.
    """
    if dist.is_available() and dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed for ``rank`` derived from ``seed`` (independent streams, not just seed + rank)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def seed_process(seed: int, rank: int = 0) -> int:
    """Seed torch (CPU and CUDA) and Python ``random`` for this rank; returns the seed used.

    numpy's global RNG is deliberately not seeded: code must use explicit ``np.random.default_rng``.
    """
    value = rank_seed(seed, rank)
    torch.manual_seed(value)
    random.seed(value)
    return value


def convert_sync_batchnorm(module: nn.Module, ctx: DistContext) -> nn.Module:
    """BatchNorm → SyncBatchNorm for multi-GPU runs; unchanged on CPU/gloo (SyncBatchNorm is GPU-only)
    and for single-process runs. Apply it to the trainable networks (the student), not to a frozen
    teacher, whose BatchNorms only use running statistics."""
    if ctx.is_distributed and ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if ctx.is_distributed:
        logger.info("SyncBatchNorm needs GPUs; BatchNorm statistics stay per rank on %s", ctx.device)
    return module


def wrap_ddp(module: nn.Module, ctx: DistContext, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel`` around ``module`` for multi-process runs, else ``module`` itself.

    Parameters are broadcast from rank 0 at construction and buffers before every forward, so all
    ranks start identical; gradients are averaged in backward.
    """
    if not ctx.is_distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def all_reduce_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of ``values`` over ranks (a copy; the input is untouched)."""
    if not ctx.is_distributed:
        return values.clone()
    reduced = values.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / ctx.world_size


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Picklable ``obj`` of every rank, in rank order."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


class ShardedSampler(Sampler[int]):
    """Item indices of one rank for a map-style dataset, reshuffled every epoch from ``seed``.

    Epoch ``e`` permutes ``range(num_items)`` with a generator seeded ``seed + e`` (identical on every
    rank), pads by wrapping around (or drops the tail with ``drop_last``) to a multiple of the world
    size, and gives rank r the items ``r, r + W, r + 2W, ...``. ``set_epoch(e, start)`` skips the first
    ``start`` items of this rank's shard, so a resumed run continues on exactly the same items.
    """

    def __init__(
        self, num_items: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        if drop_last and num_items < world_size:
            raise ValueError(f"drop_last with {num_items} items and {world_size} ranks leaves nothing")
        self.num_items, self.rank, self.world_size = num_items, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.start = 0, 0

    @property
    def shard_size(self) -> int:
        """Items per rank and epoch."""
        if self.drop_last:
            return self.num_items // self.world_size
        return -(-self.num_items // self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.shard_size:
            raise ValueError(f"start {start} outside [0, {self.shard_size}]")
        self.epoch, self.start = epoch, start

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """(shard_size,) int64 items of this rank in epoch ``epoch``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_items, generator=generator)
        else:
            order = torch.arange(self.num_items)
        total = self.shard_size * self.world_size
        if total > self.num_items:
            order = torch.cat([order, order.repeat(total // self.num_items + 1)])
        return order[:total][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices(self.epoch)[self.start:].tolist())

    def __len__(self) -> int:
        return self.shard_size - self.start


def epoch_batches(dataset: Any, sampler: ShardedSampler, batch_size: int, collate_fn: Callable[[list], Any],
                  num_workers: int, device: torch.device, drop_last: bool = True
                  ) -> Callable[[int, int], Iterable[Any]]:
    """The training loop's ``batches(epoch, start)``: this rank's batches of one epoch from step ``start``.

    Sets the epoch of the dataset (per-item augmentation seeds) and of the sampler (its permutation, minus
    the ``start * batch_size`` items already consumed, so a resumed run sees exactly the same batches).
    """

    def batches(epoch: int, start: int) -> Iterable[Any]:
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, start * batch_size)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                          collate_fn=collate_fn, drop_last=drop_last, pin_memory=device.type == "cuda")

    return batches
