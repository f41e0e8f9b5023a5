"""Worker of the 2-process gloo test, launched by torchrun: trains the toy method with the engine and
saves this rank's flattened parameters after every step to ``<out>/params_rank{r}.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from engine_toys import ToyBatches, ToyMethod

from cmcr_core.engine import OptimizerSettings, TrainSettings, train
from cmcr_core.engine.distributed import cleanup_distributed, convert_sync_batchnorm, init_distributed


def main(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(device="cpu")
    assert ctx.backend == "gloo" and ctx.world_size == 2
    method = ToyMethod(seed=ctx.rank)  # different initial weights: DDP must broadcast rank 0's
    method.net = convert_sync_batchnorm(method.net, ctx)  # stays BatchNorm1d on CPU
    data = ToyBatches(batch_size=8, rank=ctx.rank, world_size=ctx.world_size)
    snapshots: list[torch.Tensor] = []

    def record(step: int, trained: torch.nn.Module) -> None:
        snapshots.append(torch.cat([p.detach().flatten().clone() for p in trained.parameters()]))

    settings = TrainSettings(total_steps=6, optimizer=OptimizerSettings(lr=1e-2), checkpoint_every=3)
    train(method, data, out, settings, generators={"method": method.generator, "augment": data.augment},
          context=ctx, step_callback=record)
    result = {"params": snapshots, "items": data.sampler.epoch_indices(0)}
    torch.save(result, out / f"params_rank{ctx.rank}.pt")
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
