"""torchrun/gloo: a 2-process run keeps identical weights; the sharded sampler; seeding helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmcr_core.engine import load_checkpoint
from cmcr_core.engine.distributed import (
    ShardedSampler,
    all_reduce_mean,
    init_distributed,
    rank_seed,
    single_process_context,
)
from cmcr_core.engine.monitor import read_metrics

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(HERE / "ddp_worker.py"), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"params_rank{r}.pt") for r in (0, 1))
    assert len(rank0["params"]) == len(rank1["params"]) == 6
    for step, (a, b) in enumerate(zip(rank0["params"], rank1["params"], strict=True)):
        assert torch.equal(a, b), f"ranks differ after step {step + 1}"
    assert not torch.equal(rank0["params"][0], rank0["params"][-1])  # they did train
    # Each rank saw its own half of the data.
    assert set(rank0["items"].tolist()).isdisjoint(rank1["items"].tolist())
    # Only rank 0 wrote the log (one record per step) and the checkpoint (with both ranks' RNG states).
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 7))
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["world_size"] == 2 and len(payload["rng"]) == 2
    augment_states = [state["generators"]["augment"]["state"] for state in payload["rng"]]
    assert augment_states[0] != augment_states[1]  # per-rank RNG states, not rank 0's twice


def test_sampler_shards_partition_each_epoch():
    shards = [ShardedSampler(10, rank, 3, seed=4) for rank in range(3)]
    for epoch in range(3):
        for s in shards:
            s.set_epoch(epoch)
        indices = [list(s) for s in shards]
        assert all(len(i) == 4 for i in indices)  # ⌈10 / 3⌉, padded by wrapping around
        flat = sum(indices, [])
        assert set(flat) == set(range(10)) and len(flat) == 12
    # Same seed and epoch → same order on any rank; another epoch → another order.
    assert shards[0].epoch_indices(1).tolist() == ShardedSampler(10, 0, 3, seed=4).epoch_indices(1).tolist()
    assert shards[0].epoch_indices(0).tolist() != shards[0].epoch_indices(1).tolist()


def test_sampler_start_skips_items_and_drop_last():
    sampler = ShardedSampler(9, 1, 2, seed=0, drop_last=True)
    full = sampler.epoch_indices(2).tolist()
    assert len(full) == 4
    sampler.set_epoch(2, start=3)
    assert list(sampler) == full[3:] and len(sampler) == 1
    with pytest.raises(ValueError, match="start"):
        sampler.set_epoch(0, start=5)
    unshuffled = ShardedSampler(6, 0, 2, shuffle=False)
    assert list(unshuffled) == [0, 2, 4]


def test_single_process_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    values = torch.tensor([1.0, 2.0])
    reduced = all_reduce_mean(values, single_process_context("cpu"))
    assert torch.equal(reduced, values) and reduced is not values
    seeds = {rank_seed(7, r) for r in range(8)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
    assert rank_seed(7, 1) == rank_seed(7, 1) != rank_seed(8, 1)


def test_cleanup_meets_peers_only_on_a_normal_exit(monkeypatch):
    """A normal exit waits at a barrier before leaving the group; an exception in flight skips it (the peers
    may be gone and the barrier would wait for the timeout)."""
    import cmcr_core.engine.distributed as distributed

    calls: list[str] = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    try:
        pass
    finally:
        distributed.cleanup_distributed()
    assert calls == ["barrier", "destroy"]
    calls.clear()
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("rank failed")
        finally:
            distributed.cleanup_distributed()
    assert calls == ["destroy"]


@pytest.mark.parametrize(("device", "local_rank", "expected"), [
    ("cuda", 1, ("nccl", torch.device("cuda", 1))),
    ("cuda:1", 1, ("nccl", torch.device("cuda", 1))),
    ("cpu", 1, ("gloo", None)),
])
def test_torchrun_ranks_bind_nccl_to_their_gpu(monkeypatch, device, local_rank, expected):
    """Under torchrun a CUDA rank uses the GPU of its LOCAL_RANK, and NCCL gets it as the group's device_id;
    gloo gets none (init_process_group and set_device are recorded, nothing is joined)."""
    import cmcr_core.engine.distributed as distributed

    calls: dict = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.update(kwargs))
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda index: calls.update(set_device=index))
    ctx = init_distributed(device=device)
    backend, device_id = expected
    assert (calls["backend"], calls["device_id"]) == (backend, device_id)
    assert (calls["rank"], calls["world_size"]) == (1, 2)
    assert ctx.device == (device_id or torch.device("cpu")) and ctx.backend == backend
    assert calls.get("set_device") == (local_rank if backend == "nccl" else None)


@pytest.mark.parametrize(("device", "match"), [("cuda:0", "LOCAL_RANK"), ("mps", "'cuda'.*'cpu'")])
def test_torchrun_refuses_another_gpu_index_or_device_type(monkeypatch, device, match):
    """A GPU index other than LOCAL_RANK (it would silently have run on the CPU before) and a device type
    without a backend are refused with the reason, before anything is joined."""
    import cmcr_core.engine.distributed as distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: pytest.fail("joined"))
    with pytest.raises(ValueError, match=match):
        init_distributed(device=device)
