"""Run by torchrun in test_pretrain_ddp.py: one rank of a 2-process gloo `cmcr pretrain` run.

After every step each rank records a fingerprint of its trainable weights; rank 0 gathers them and
writes `fingerprints.json` with both ranks' values per step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from cmcr_core import config
from cmcr_core.runs.pretrain import run_pretraining


def main() -> None:
    recipe_path, out_dir, *sets = sys.argv[1:]
    torch.set_num_threads(1)
    recipe = config.load_recipe(recipe_path, sets)
    fingerprints: list[list[float]] = []

    def record(step: int, method: torch.nn.Module) -> None:
        weights = torch.cat([p.detach().double().flatten() for p in method.parameters() if p.requires_grad])
        mine = [float(weights.sum()), float((weights * weights).sum()), float(weights[::97].sum())]
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        fingerprints.append(gathered)

    run_pretraining(recipe, out_dir, step_callback=record)
    if int(torch.distributed.get_rank() if dist.is_initialized() else 0) == 0:
        Path(out_dir, "fingerprints.json").write_text(json.dumps(fingerprints))


if __name__ == "__main__":
    main()
