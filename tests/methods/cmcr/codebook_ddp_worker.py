"""Worker of the 2-process gloo codebook test (launched with RANK/WORLD_SIZE/MASTER_* in the environment).

Each rank builds its codebook with its own seed (rank 0's must win: broadcast at the first update), draws
its own batches and runs 3 update steps, saving its inputs and the codebook buffers after every step to
``<out>/rank{r}.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cmcr_core.losses.codebook import UnifiedCodebook


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method="env://")
    book = UnifiedCodebook(24, 6, decay=0.8, eps=1e-3, seed=rank)
    initial = {k: v.clone() for k, v in book.state_dict().items()}
    g = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    steps = []
    for _ in range(3):
        points = F.normalize(torch.randn(20 + 5 * rank, 6, generator=g), dim=1)
        pixels = F.normalize(points + 0.4 * torch.randn(points.shape, generator=g), dim=1)
        kp, kv = book.nearest(points), book.nearest(pixels)
        book.update(points, pixels, kp, kv)
        steps.append({"points": points, "pixels": pixels, "kp": kp, "kv": kv,
                      **{k: v.clone() for k, v in book.state_dict().items()}})
    torch.save({"initial": initial, "steps": steps}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
