"""A MinkUNet34C (tiny widths) training step through the engine's loop on the test device: bfloat16
autocast on CUDA, float32 on the CPU, against a float64 CPU oracle; and the loop's NaN guard there."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from device_toys import TinySegmentation, toy_batch, toy_batches

from cmcr_core.engine import NonFiniteLossError, OptimizerSettings, TrainSettings, train
from cmcr_core.engine.distributed import single_process_context
from cmcr_core.sparse import SparseTensor


def _settings(steps: int) -> TrainSettings:
    # precision "bf16" autocasts on CUDA only: the CPU run is the float32 step of the same settings.
    return TrainSettings(total_steps=steps, optimizer=OptimizerSettings(name="adamw", lr=1e-2),
                         precision="bf16", checkpoint_every=0)


def _oracle_loss(method: TinySegmentation, batch: dict[str, torch.Tensor]) -> float:
    """The first step's loss of a float64 CPU copy of `method` (train mode, as the loop runs it)."""
    reference = copy.deepcopy(method).double().train()
    with torch.no_grad():
        logits = reference.student(SparseTensor(batch["feats"].double(), batch["coords"])).features
    return float(F.cross_entropy(logits, batch["labels"]))


def test_training_steps_on_device(device, tolerance, tmp_path) -> None:
    method = TinySegmentation(seed=0)
    batches = [toy_batch(seed) for seed in range(3)]
    expected_first = _oracle_loss(method, batches[0])
    before = [p.detach().clone() for p in method.parameters()]
    result = train(method, toy_batches(batches), tmp_path, _settings(3),
                   context=single_process_context(device))
    computed_in = torch.bfloat16 if device.type == "cuda" else torch.float32
    assert method.last_output_dtype == computed_in
    losses = [record["ce"] for record in result.records]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert abs(losses[0] - expected_first) <= tolerance(computed_in) * max(1.0, abs(expected_first))
    for p, p0 in zip(method.parameters(), before, strict=True):
        assert p.device.type == device.type and p.dtype == torch.float32
        assert bool(p.isfinite().all()) and not torch.equal(p.detach().cpu(), p0)
    assert result.checkpoint is not None and result.checkpoint.exists()


def test_nan_guard_stops_before_the_bad_step_on_device(device, tmp_path) -> None:
    """A batch with NaN features makes the loss NaN at step 2: the loop raises NonFiniteLossError naming
    the step and the loss, and the parameters stay those left by step 1; the running statistics of batch
    norm took in the bad batch (as the error says: resume from the checkpoint)."""
    method = TinySegmentation(seed=1)
    bad = toy_batch(11)
    bad["feats"][0, 0] = float("nan")
    after_step: dict[int, list[torch.Tensor]] = {}
    running_means: dict[int, list[torch.Tensor]] = {}

    def snapshot(step: int, trained: TinySegmentation) -> None:
        after_step[step] = [p.detach().clone() for p in trained.parameters()]
        running_means[step] = [b.clone() for n, b in trained.named_buffers() if n.endswith("running_mean")]

    with pytest.raises(NonFiniteLossError) as error:
        train(method, toy_batches([toy_batch(10), bad, toy_batch(12)]), tmp_path, _settings(3),
              context=single_process_context(device), step_callback=snapshot)
    assert error.value.step == 2 and error.value.loss_name == "ce"
    assert list(after_step) == [1] and "running statistics" in str(error.value)
    for p, kept in zip(method.parameters(), after_step[1], strict=True):
        assert torch.equal(p.detach(), kept)
    now = [b for n, b in method.named_buffers() if n.endswith("running_mean")]
    assert running_means[1] and not all(torch.equal(a, b) for a, b in zip(now, running_means[1], strict=True))
