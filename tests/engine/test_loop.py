"""The training loop: learning, exact resume, NaN guard, atomic checkpoints, metrics log, frozen modules (the
training itself on the test device, CMCR_TEST_DEVICE, where a test takes `device`)."""

from __future__ import annotations

import math

import pytest
import torch
from engine_toys import ToyBatches, ToyMethod
from torch import nn

from cmcr_core.engine import (
    CHECKPOINT_NAME,
    Method,
    NonFiniteLossError,
    OptimizerSettings,
    ScheduleSettings,
    TrainSettings,
    load_checkpoint,
    train,
    trainable_state_dict,
)
from cmcr_core.engine.distributed import single_process_context
from cmcr_core.engine.method import load_trainable_state_dict
from cmcr_core.engine.monitor import read_metrics
from cmcr_core.engine.schedules import lr_factors

SETTINGS = TrainSettings(
    total_steps=10,
    optimizer=OptimizerSettings(name="adamw", lr=2e-2, weight_decay=0.01),
    schedule=ScheduleSettings(kind="cosine", warmup_steps=2),
    checkpoint_every=0,
)


def _run(out, settings=SETTINGS, method=None, data=None, device=None, **kwargs):
    method = method or ToyMethod()
    data = data or ToyBatches()
    generators = {"method": method.generator, "augment": data.augment}
    context = None if device is None else single_process_context(device)
    return train(method, data, out, settings, recipe={"voxel_size": 0.1}, generators=generators,
                 context=context, **kwargs)


def test_losses_fall_on_toy_regression(tmp_path, device):
    settings = TrainSettings(total_steps=60, optimizer=OptimizerSettings(lr=2e-2), checkpoint_every=0)
    method = ToyMethod()
    records = _run(tmp_path, settings, method=method, device=device).records
    assert all(p.device == device for p in method.parameters())
    first, last = records[0]["mse"], sum(r["mse"] for r in records[-8:]) / 8
    assert last < 0.3 * first
    assert records[-1]["epoch"] == 7  # 8 batches of 8 per epoch, 60 steps → epochs 0..7


def test_metrics_records_and_jsonl(tmp_path):
    records = _run(tmp_path).records
    logged = read_metrics(tmp_path / "metrics.jsonl")
    assert logged == records and [r["step"] for r in logged] == list(range(1, 11))
    for record in logged:
        expected = {"step", "epoch", "lr", "mse", "l1", "total", "time", "samples_per_s", "pred_mean"}
        assert expected <= set(record)
        assert record["total"] == pytest.approx(record["mse"] + record["l1"], rel=1e-6)
        assert record["samples_per_s"] > 0
    # The lr of step s (1-based) is the precomputed factor s-1 times the base lr.
    factors = lr_factors(SETTINGS.schedule, 10).tolist()
    assert [r["lr"] for r in logged] == pytest.approx([2e-2 * f for f in factors], rel=1e-12)


@pytest.mark.parametrize("stop", [5, 8])  # 8 = exactly the end of epoch 0
def test_resume_reproduces_uninterrupted_losses(tmp_path, stop, device, tolerance):
    straight = _run(tmp_path / "straight", device=device).records
    first = _run(tmp_path / "split", stop_at=stop, device=device).records
    # A fresh method with other initial weights and fresh generators: everything must come from the file.
    resumed = _run(tmp_path / "split", method=ToyMethod(seed=123), resume=True, device=device).records
    assert [r["step"] for r in first + resumed] == list(range(1, 11))
    for a, b in zip(straight, first + resumed, strict=True):
        assert (a["lr"], a["epoch"]) == (b["lr"], b["epoch"])
        tolerance.same(device, [b["mse"], b["l1"]], [a["mse"], a["l1"]], dtype=torch.float32)
    logged = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in logged] == list(range(1, 11))


def test_nan_guard_names_step_loss_and_last_checkpoint(tmp_path, device):
    settings = TrainSettings(total_steps=10, checkpoint_every=3)
    with pytest.raises(NonFiniteLossError) as info:
        _run(tmp_path, settings, method=ToyMethod(nan_at_call=5), device=device)
    error = info.value
    assert (error.step, error.loss_name, error.last_checkpoint) == (5, "mse", tmp_path / CHECKPOINT_NAME)
    assert "'mse'" in str(error) and "step 5" in str(error) and str(tmp_path / CHECKPOINT_NAME) in str(error)
    assert math.isnan(error.value)
    payload = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert payload["step"] == 3
    fresh = ToyMethod(seed=5)
    load_trainable_state_dict(fresh, payload["model"])
    assert all(torch.equal(fresh.net.state_dict()[k], v) for k, v in payload["student"].items())
    # Resuming after the crash rewrites the log from the checkpoint on: each step exactly once.
    _run(tmp_path, settings, resume=True, device=device)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 11))


def test_nan_before_any_checkpoint(tmp_path, device):
    with pytest.raises(NonFiniteLossError, match="none written yet"):
        _run(tmp_path, method=ToyMethod(nan_at_call=1), device=device)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    settings = TrainSettings(total_steps=10, checkpoint_every=3)
    _run(tmp_path, settings, stop_at=3)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    real_save = torch.save

    def crashing_save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)  # bytes reach the temporary file ...
        raise OSError("disk full")  # ... then the process "dies" before the rename

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        _run(tmp_path, settings, resume=True)
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, "metrics.jsonl"]


def test_existing_checkpoint_requires_resume(tmp_path):
    _run(tmp_path, TrainSettings(total_steps=2))
    with pytest.raises(FileExistsError, match="resume=True"):
        _run(tmp_path, TrainSettings(total_steps=2))
    with pytest.raises(ValueError, match="total_steps"):
        _run(tmp_path, TrainSettings(total_steps=4), resume=True)


def test_checkpoint_contents_and_history(tmp_path):
    settings = TrainSettings(total_steps=4, checkpoint_every=2, keep_checkpoints=True)
    _run(tmp_path, settings)
    payload = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert (payload["step"], payload["epoch"], payload["position"]) == (4, 0, 4)
    assert payload["recipe"] == {"voxel_size": 0.1} and payload["teacher"] == {"arch": "none"}
    assert set(payload["rng"][0]["generators"]) == {"method", "augment"} and payload["world_size"] == 1
    assert load_checkpoint(tmp_path / "checkpoint_step00000002.pt")["step"] == 2


def test_bf16_request_runs_fp32_on_cpu(tmp_path):
    settings = TrainSettings(total_steps=3, precision="bf16")
    a = _run(tmp_path / "a", settings).records
    b = _run(tmp_path / "b", TrainSettings(total_steps=3)).records
    assert [r["mse"] for r in a] == [r["mse"] for r in b]


def test_gradient_clipping_bounds_the_update(tmp_path, device):
    method = ToyMethod()
    before = torch.cat([p.detach().flatten().clone() for p in method.parameters()]).to(device)
    settings = TrainSettings(total_steps=1, optimizer=OptimizerSettings(name="sgd", lr=1.0, momentum=0.0,
                             weight_decay=0.0), grad_clip_norm=1e-3)
    records = _run(tmp_path, settings, method=method, device=device).records
    after = torch.cat([p.detach().flatten() for p in method.parameters()])
    assert records[0]["grad_norm"] > 1e-3  # clipping was active
    assert torch.linalg.vector_norm(after - before) <= 1e-3 * (1 + 1e-5)


class _Frozen(nn.Module):
    is_frozen = True

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        super().train(False)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("frozen")
        return super().train(False)


def test_method_train_skips_frozen_modules_and_checkpoint_excludes_them(tmp_path):
    wrapper = nn.Module()
    wrapper.frozen = _Frozen()
    wrapper.head = nn.Linear(3, 3)
    method = ToyMethod(frozen=wrapper)  # frozen module nested one level down
    method.eval()
    method.train()
    assert method.training and method.net.training and wrapper.training and wrapper.head.training
    assert not wrapper.frozen.training and not wrapper.frozen.bn.training
    keys = set(trainable_state_dict(method))
    assert "frozen.head.weight" in keys and not any(k.startswith("frozen.frozen.") for k in keys)
    load_trainable_state_dict(ToyMethod(frozen=wrapper), trainable_state_dict(method))
    with pytest.raises(ValueError, match="missing"):
        load_trainable_state_dict(method, {k: v for k, v in trainable_state_dict(method).items()
                                           if not k.startswith("net.0")})


def test_plain_dict_output_and_empty_epoch_error(tmp_path):
    class Plain(Method):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, batch):
            return {"sq": (self.w * batch).pow(2).sum()}

    result = train(Plain(), lambda epoch, start: iter([torch.ones(3)] * (2 - start)), tmp_path / "a",
                   TrainSettings(total_steps=5))
    assert [r["epoch"] for r in result.records] == [0, 0, 1, 1, 2]
    assert result.records[0]["samples_per_s"] > 0  # a tensor batch counts shape[0] samples
    with pytest.raises(RuntimeError, match="empty"):
        train(Plain(), lambda epoch, start: iter([]), tmp_path / "b", TrainSettings(total_steps=2))


def test_per_epoch_cosine_over_full_epochs(tmp_path):
    # SLidR-style: 3 epochs of 8 batches, lr = base·(1 + cos(π·e/3))/2 held for the whole epoch e.
    settings = TrainSettings.for_epochs(3, 8, optimizer=OptimizerSettings(name="sgd", lr=0.05, momentum=0.9,
                                        dampening=0.1, weight_decay=1e-4),
                                        schedule=ScheduleSettings(kind="cosine", per_epoch=True))
    records = _run(tmp_path, settings).records
    assert [r["epoch"] for r in records] == [e for e in range(3) for _ in range(8)]
    expected = [0.05 * f for f in (1.0, 0.75, 0.25) for _ in range(8)]
    assert [r["lr"] for r in records] == pytest.approx(expected)


def test_recipe_must_be_plain_values(tmp_path):
    from pathlib import Path

    method, data = ToyMethod(), ToyBatches()
    with pytest.raises(TypeError, match=r"recipe\.data\.path is a \w*Path"):
        train(method, data, tmp_path, TrainSettings(total_steps=1), recipe={"data": {"path": Path("/x")}})
