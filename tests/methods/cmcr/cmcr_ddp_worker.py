"""Worker of the 2-rank gloo test of the whole CMCR method under the engine's DDP (torch.distributed env
variables set by the test). Each rank trains the tiny CMCR on its own batches and saves, after every
step, the codebook buffers and the flattened parameters to ``<out>/method_rank{r}.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from cmcr_toys import tiny_batch, tiny_cmcr

from cmcr_core.engine import OptimizerSettings, TrainSettings, train
from cmcr_core.engine.distributed import cleanup_distributed, init_distributed


def main(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(device="cpu")
    method = tiny_cmcr(seed=0)
    batches = [tiny_batch(seed=10 + 2 * ctx.rank + i) for i in range(2)]  # different data on every rank
    snapshots: list[dict[str, torch.Tensor]] = []

    def record(step: int, trained: torch.nn.Module) -> None:
        snapshots.append({
            "embedding": trained.codebook.embedding.clone(),
            "ema_count": trained.codebook.ema_count.clone(),
            "params": torch.cat([p.detach().flatten() for p in trained.parameters() if p.requires_grad]),
        })

    settings = TrainSettings(total_steps=2, optimizer=OptimizerSettings(name="adamw", lr=1e-3),
                             checkpoint_every=0)
    train(method, lambda epoch, start: batches[start:], out, settings, generators=method.generators(),
          context=ctx, step_callback=record)
    torch.save(snapshots, out / f"method_rank{ctx.rank}.pt")
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
