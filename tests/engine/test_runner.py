"""The one run setup: seeding, the rank's loader (steps per epoch, resumable epochs), files on the main rank,
the engine call into the run folder, and the process group left even when the body fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_toys import ToyBatch, ToyMethod, toy_dataset

from cmcr_core.engine.loop import TrainSettings
from cmcr_core.engine.runner import open_run, resolve_device
from cmcr_core.engine.schedules import OptimizerSettings


class Items:
    """Eight items of the toy regression; `set_epoch` is what the engine's loader calls."""

    def __init__(self) -> None:
        self.x, self.y = toy_dataset()
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[index], self.y[index], index

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def stack(items: list) -> ToyBatch:
    xs, ys, index = zip(*items, strict=True)
    return ToyBatch(torch.stack(xs), torch.stack(ys), torch.tensor(index))


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_open_run_seeds_the_process_or_leaves_it_to_the_caller(tmp_path: Path):
    with open_run(tmp_path, "cpu", 7):
        first = torch.rand(3)
    with open_run(tmp_path, "cpu", 7, distributed_run=False):
        assert torch.equal(torch.rand(3), first)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    with open_run(tmp_path, "cpu", None):
        assert torch.equal(torch.rand(3), expected)


def test_a_single_process_on_another_gpu_makes_it_the_current_one(tmp_path: Path, monkeypatch):
    """train.device=cuda:1 in one process: GPU 1 becomes the current device (where the loader pins memory
    and the CUDA handles live); a plain `cuda` or the CPU leave the current device alone (recorded, not
    set: this runs on machines without a GPU)."""
    current: list = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for device in ("cuda:1", "cpu"):
        with open_run(tmp_path, device, None) as run:
            assert run.device == torch.device(device)
    assert current == [torch.device("cuda", 1)]


def test_loader_steps_and_the_too_small_error(tmp_path: Path):
    with open_run(tmp_path, "cpu", 0) as run:
        assert run.loader(Items(), stack, 3, 0, seed=0).steps_per_epoch == 2  # 8 // 3, last batch dropped
        assert run.loader(Items(), stack, 3, 0, seed=0, drop_last=False).steps_per_epoch == 3
        with pytest.raises(ValueError, match="too few"):
            run.loader(Items(), stack, 16, 0, seed=0, too_small="too few")
        items = Items()
        batches = list(run.loader(items, stack, 4, 0, seed=0).batches(1, 1))  # epoch 1 from step 1
        assert len(batches) == 1 and items.epochs == [1]


def test_write_and_train_go_into_the_run_folder(tmp_path: Path):
    out = tmp_path / "run"
    with open_run(out, "cpu", 0) as run:
        run.write({"recipe.yaml": "a: 1\n"})
        loader = run.loader(Items(), stack, 4, 0, seed=0)
        settings = TrainSettings(total_steps=3, optimizer=OptimizerSettings(name="sgd", lr=0.1),
                                 steps_per_epoch=loader.steps_per_epoch, checkpoint_every=0)
        result = run.train(ToyMethod(), loader, settings, recipe={"a": 1})
    assert (out / "recipe.yaml").read_text() == "a: 1\n"
    assert result.position.step == 3
    assert (out / "checkpoint.pt").is_file() and (out / "metrics.jsonl").is_file()


def test_the_process_group_is_left_when_the_body_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cmcr_core.engine import distributed

    left = []
    monkeypatch.setattr(distributed, "cleanup_distributed", lambda: left.append(True))
    with pytest.raises(RuntimeError, match="boom"), open_run(tmp_path, "cpu", 0):
        raise RuntimeError("boom")
    assert left == [True]
    with open_run(tmp_path, "cpu", 0, distributed_run=False):
        pass
    assert left == [True]  # one process: no group to leave
