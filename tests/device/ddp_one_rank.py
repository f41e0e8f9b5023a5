"""Worker of the one-rank DDP test, started with torchrun's environment for one process: joins a process
group (NCCL on CUDA, gloo on the CPU), takes one DistributedDataParallel training step of the tiny MinkUNet
method, runs the collectives the engine uses, leaves through `cleanup_distributed`, and saves what it saw
to ``<out>/ddp_result.pt``.

`init_distributed` treats WORLD_SIZE=1 as a plain run, so the group is joined here directly, as
`init_distributed` does for more ranks.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from device_toys import TinySegmentation, toy_batch
from torch import nn

from cmcr_core.engine.distributed import cleanup_distributed
from cmcr_core.engine.method import move_to_device


def main(out: Path, device_name: str) -> None:
    torch.set_num_threads(1)
    device = torch.device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    method = TinySegmentation(seed=0).to(device).train()
    reference = copy.deepcopy(method)
    model = nn.parallel.DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda"
                                                else None)
    batch = move_to_device(toy_batch(0), device)
    loss = model(batch)["ce"]
    loss.backward()
    reference_loss = reference(batch)["ce"]
    reference_loss.backward()
    summed = torch.arange(4.0, device=device)
    dist.all_reduce(summed)  # one rank: the sum is the tensor itself
    gathered: list = [None]
    dist.all_gather_object(gathered, {"rank": dist.get_rank()})
    result = {
        "backend": dist.get_backend(), "world_size": dist.get_world_size(), "device": str(device),
        "loss": float(loss), "reference_loss": float(reference_loss),
        "grads": [p.grad.detach().cpu() for p in method.parameters()],
        "reference_grads": [p.grad.detach().cpu() for p in reference.parameters()],
        "all_reduce": summed.cpu(), "all_gather_object": gathered,
    }
    torch.save(result, out / "ddp_result.pt")
    cleanup_distributed()
    torch.save({"initialized_after_cleanup": dist.is_initialized()}, out / "ddp_cleanup.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
