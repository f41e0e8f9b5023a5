"""The one run setup and teardown every training workflow uses (pretrain, finetune, ReCon, teacher).

``open_run`` joins the process group (torchrun) or runs in one process, seeds this rank and always leaves
the group again; the ``Runner`` it yields builds the rank's resumable batches, writes the run folder's
files on the main rank and calls the engine. What a workflow adds is its data, its method and its
settings::

    with open_run(out_dir, device, seed) as run:
        loader = run.loader(dataset, collate, batch_size, num_workers, seed=seed)
        run.write({"recipe.yaml": recipe_text})
        result = run.train(method, loader, settings, recipe=recipe_dict)

Like the rest of the engine, this module knows no recipe, dataset or model type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cmcr_core.engine import distributed
from cmcr_core.engine.loop import TrainResult, TrainSettings, train
from cmcr_core.engine.method import Method
from cmcr_core.ops.atomic import atomic_write_text

__all__ = ["Loader", "Runner", "open_run", "resolve_device"]


def resolve_device(name: str) -> str:
    """``auto`` = ``cuda`` when available, else ``cpu``; any other name is returned as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


@dataclass(frozen=True)
class Loader:
    """This rank's batches of one epoch from a step (``batches(epoch, start)``) and the steps per epoch."""

    batches: Callable[[int, int], Iterable[Any]]
    steps_per_epoch: int


@dataclass(frozen=True)
class Runner:
    """One training process of one run folder (see the module docstring)."""

    out_dir: Path
    context: distributed.DistContext

    @property
    def device(self) -> torch.device:
        return self.context.device

    def loader(self, dataset: Any, collate_fn: Callable[[list], Any], batch_size: int, num_workers: int, *,
               seed: int, drop_last: bool = True, too_small: str | None = None) -> Loader:
        """Shuffled, rank-sharded, resumable batches of ``dataset``.

        ``drop_last``: an epoch is ``shard // batch_size`` steps (else ``ceil``); ``too_small``: the error
        raised when an epoch would have no step.
        """
        ctx = self.context
        sampler = distributed.ShardedSampler(len(dataset), ctx.rank, ctx.world_size, seed=seed, shuffle=True)
        shard = sampler.shard_size
        steps = shard // batch_size if drop_last else math.ceil(shard / batch_size)
        if steps < 1 and too_small is not None:
            raise ValueError(too_small)
        batches = distributed.epoch_batches(dataset, sampler, batch_size, collate_fn, num_workers, ctx.device,
                                            drop_last=drop_last)
        return Loader(batches, steps)

    def write(self, files: Mapping[str, str]) -> None:
        """On the main rank: create the run folder and write ``{name: text}`` into it (atomically)."""
        if not self.context.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            atomic_write_text(self.out_dir / name, text)

    def train(self, method: Method, loader: Loader, settings: TrainSettings, **engine: Any) -> TrainResult:
        """``cmcr_core.engine.train`` into the run folder on this rank (``engine``: its keyword options)."""
        return train(method, loader.batches, self.out_dir, settings, context=self.context, **engine)


@contextmanager
def open_run(out_dir: str | Path, device: str, seed: int | None, distributed_run: bool = True
             ) -> Iterator[Runner]:
    """Join the process group on ``device`` (``auto`` resolved; one process when ``distributed_run`` is
    False), seed this rank with ``seed`` (None: the caller seeded before building what every rank must
    share), yield the ``Runner`` and leave the group whatever happens."""
    name = resolve_device(device)
    if distributed_run:
        ctx = distributed.init_distributed(name)
    else:
        ctx = distributed.single_process_context(name)
    if ctx.device.type == "cuda" and ctx.device.index is not None:
        # The run's GPU becomes the current one: the loader's pin-memory thread, cuDNN and cuBLAS handles
        # and any allocation without an explicit device go there, not to GPU 0 (train.device=cuda:1).
        torch.cuda.set_device(ctx.device)
    try:
        if seed is not None:
            distributed.seed_process(seed, ctx.rank)
        yield Runner(Path(out_dir), ctx)
    finally:
        if distributed_run:
            distributed.cleanup_distributed()
