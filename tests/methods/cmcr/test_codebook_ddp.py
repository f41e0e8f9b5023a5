"""Two gloo ranks with different batches end every step with identical codebooks: rank 0's initial state,
then the mean over ranks of each rank's EMA result (checked against a naive single-process computation);
and the whole CMCR method under the engine's DDP keeps ranks identical (no unused parameter either)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ema_pass(weight, count, codes, own, other, gamma, eps):
    """One modality pass of METHODS.md §7.6 with explicit loops (independent of the module)."""
    weight, count = weight.clone().double(), count.clone().double()
    for k in range(len(count)):
        count[k] = gamma * count[k] + (1 - gamma) * int((codes == k).sum())
    total = count.sum()
    count = (count + eps) / (total + len(count) * eps) * total
    for k in range(len(count)):
        members = (codes == k).nonzero().flatten().tolist()
        own_sum = sum((own[m].double() for m in members), torch.zeros(own.shape[1], dtype=torch.float64))
        other_sum = sum((other[m].double() for m in members), torch.zeros(own.shape[1], dtype=torch.float64))
        weight[k] = gamma * weight[k] + 0.5 * (1 - gamma) * (own_sum + other_sum)
    return weight, count


def run_two_ranks(script: str, out: Path) -> None:
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
        procs.append(subprocess.Popen([sys.executable, str(HERE / script), str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output[-3000:]


def test_two_gloo_ranks_keep_identical_codebooks(tmp_path):
    run_two_ranks("codebook_ddp_worker.py", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert not torch.equal(ranks[0]["initial"]["embedding"], ranks[1]["initial"]["embedding"])  # seeds differ
    weight = ranks[0]["initial"]["ema_weight"].double()
    count = ranks[0]["initial"]["ema_count"].double()
    for step in range(3):
        a, b = ranks[0]["steps"][step], ranks[1]["steps"][step]
        assert not torch.equal(a["points"][:20], b["points"][:20])  # the ranks saw different batches
        for name in ("embedding", "ema_weight", "ema_count", "unactivated_count"):
            assert torch.equal(a[name], b[name]), f"{name} differs between ranks after step {step + 1}"
        results = []
        for s in (a, b):
            w, n = ema_pass(weight, count, s["kp"], s["points"], s["pixels"], 0.8, 1e-3)
            w, n = ema_pass(w, n, s["kv"], s["pixels"], s["points"], 0.8, 1e-3)
            results.append((w, n))
        weight = (results[0][0] + results[1][0]) / 2
        count = (results[0][1] + results[1][1]) / 2
        torch.testing.assert_close(a["ema_weight"].double(), weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a["ema_count"].double(), count, rtol=1e-5, atol=1e-7)
        expected = F.normalize(weight / count[:, None], dim=1)
        torch.testing.assert_close(a["embedding"].double(), expected, rtol=1e-5, atol=1e-6)


def test_cmcr_under_ddp_keeps_ranks_identical(tmp_path):
    run_two_ranks("cmcr_ddp_worker.py", tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"method_rank{r}.pt") for r in (0, 1))
    assert len(rank0) == len(rank1) == 2
    for step, (a, b) in enumerate(zip(rank0, rank1, strict=True)):
        for name in ("embedding", "ema_count", "params"):
            assert torch.equal(a[name], b[name]), f"{name} differs between ranks after step {step + 1}"
    assert not torch.equal(rank0[0]["params"], rank0[1]["params"])  # it trained
