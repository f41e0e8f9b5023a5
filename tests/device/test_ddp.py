"""One DistributedDataParallel step of one rank in its own process: NCCL on CUDA, gloo on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_rank_ddp_step(device, tolerance, tmp_path) -> None:
    """The DDP gradients (all-reduced over the one rank) equal those of the bare module, the collectives
    answer, and the project's cleanup leaves no process group behind."""
    # The environment torchrun gives its one worker (env:// rendezvous), without the launcher's own process.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), *sys.path])}
    command = [sys.executable, str(HERE / "ddp_one_rank.py"), str(tmp_path), str(device)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seen = torch.load(tmp_path / "ddp_result.pt")
    assert seen["backend"] == ("nccl" if device.type == "cuda" else "gloo") and seen["world_size"] == 1
    assert seen["device"].startswith(device.type)
    assert seen["loss"] == seen["reference_loss"] or device.type == "cuda"  # CUDA scatters: atomic order
    assert abs(seen["loss"] - seen["reference_loss"]) <= tolerance(torch.float32)
    assert len(seen["grads"]) == len(seen["reference_grads"]) > 0
    for grad, reference in zip(seen["grads"], seen["reference_grads"], strict=True):
        tolerance.check(grad, reference.double(), torch.float32)
    assert torch.equal(seen["all_reduce"], torch.arange(4.0))
    assert seen["all_gather_object"] == [{"rank": 0}]
    assert torch.load(tmp_path / "ddp_cleanup.pt") == {"initialized_after_cleanup": False}
