"""`cmcr pretrain` under torchrun with 2 gloo processes on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from cmcr_core.engine.checkpoint import load_checkpoint

from .conftest import RECIPES, TINY

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_finish_with_identical_weights_after_every_step(prepared_world, tmp_path):
    out = tmp_path / "ddp"
    sets = [f"data.path={prepared_world}", *TINY, "train.max_steps=3", "train.device=cpu",
            "data.batch_size=2"]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(HERE / "ddp_pretrain_worker.py"), str(RECIPES / "ppkt_synthetic.yaml"), str(out), *sets,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fingerprints = json.loads((out / "fingerprints.json").read_text())
    assert len(fingerprints) == 3
    for step, (rank0, rank1) in enumerate(fingerprints, start=1):
        assert rank0 == rank1, f"ranks differ after step {step}"
    assert fingerprints[0] != fingerprints[-1]  # the weights did change
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # rank 0 alone wrote the log
