"""The training loop: one function, ``train``, that knows only a ``Method`` and batches.

Batches come from a factory ``batches(epoch, start)`` that yields the batches of ``epoch`` beginning at
its ``start``-th batch, deterministically (e.g. a DataLoader over ``ShardedSampler.set_epoch(epoch,
start * batch_size)``). An epoch ends when the iterable is exhausted. Together with the checkpointed RNG
states this makes ``resume=True`` continue on exactly the batches and random draws of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cmcr_core.engine.checkpoint import (
    CHECKPOINT_NAME,
    Generators,
    TrainPosition,
    capture_rng_state,
    check_plain_values,
    resume_from_checkpoint,
    save_training_checkpoint,
)
from cmcr_core.engine.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_mean,
    single_process_context,
    wrap_ddp,
)
from cmcr_core.engine.method import Method, move_to_device
from cmcr_core.engine.monitor import TENSORBOARD_DIR, MetricsLog, ProgressDisplay, TensorBoardLog
from cmcr_core.engine.schedules import (
    OptimizerSettings,
    ScheduleSettings,
    build_optimizer,
    lr_factors,
    set_lr,
)
from cmcr_core.ops.atomic import atomic_copy

__all__ = ["BatchFactory", "NonFiniteLossError", "TrainResult", "TrainSettings", "train"]

logger = logging.getLogger(__name__)

BatchFactory = Callable[[int, int], Iterable[Any]]
StepCallback = Callable[[int, Method], "Mapping[str, Any] | None"]
METRICS_NAME = "metrics.jsonl"
SKIPPED = "skipped_samples"  # a batch's count of damaged samples its data pipeline replaced (and the log key)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/Inf; raised after the bad batch's forward, before its backward and optimizer step.

    The parameters and the optimizer state are those of the previous step, but the forward ran in training
    mode: the buffers a forward updates (batch-norm running statistics, an EMA codebook) already took in
    the bad batch, so the method in memory is not the previous step's. Resume from ``last_checkpoint``.
    """

    def __init__(self, step: int, loss_name: str, value: float, last_checkpoint: Path | None) -> None:
        self.step, self.loss_name, self.value, self.last_checkpoint = step, loss_name, value, last_checkpoint
        where = str(last_checkpoint) if last_checkpoint else "none written yet"
        super().__init__(
            f"loss {loss_name!r} is {value} at step {step}; the weights were not stepped, but this batch's "
            f"forward already updated running statistics (batch norm) in memory: resume from the last good "
            f"checkpoint: {where}")


@dataclass(frozen=True)
class TrainSettings:
    """Everything the loop needs besides the method and the data.

    ``total_steps`` fixes the schedule; ``steps_per_epoch`` is needed only by per-epoch schedules.
    ``checkpoint_every`` = 0 writes only the final checkpoint; ``keep_checkpoints`` also keeps a copy
    ``checkpoint_step{N:08d}.pt`` of each one. ``precision = "bf16"`` autocasts on CUDA only.
    ``tensorboard`` also writes every metrics.jsonl record to ``<out>/tensorboard`` (``TensorBoardLog``).
    """

    total_steps: int
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    steps_per_epoch: int | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    grad_clip_norm: float | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: bool = False
    log_every: int = 1
    display_every: int = 10
    tensorboard: bool = False
    # DDP: leave False (D12, docs/differences.md) unless a method really skips parameters in some steps.
    find_unused_parameters: bool = False

    @classmethod
    def for_epochs(cls, epochs: int, steps_per_epoch: int, **kwargs: Any) -> TrainSettings:
        """Settings for ``epochs`` full epochs of ``steps_per_epoch`` batches."""
        return cls(total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch, **kwargs)


@dataclass
class TrainResult:
    """Where the run stopped and the metric records it logged (this invocation only)."""

    position: TrainPosition
    checkpoint: Path | None
    records: list[dict[str, Any]]


def _split_output(output: Any) -> tuple[Mapping[str, Tensor], Mapping[str, Tensor | float]]:
    losses, metrics = output if isinstance(output, tuple) else (output, {})
    if not isinstance(losses, Mapping) or not losses:
        raise TypeError("Method.forward must return a non-empty dict of loss tensors (or (losses, metrics))")
    clash = set(losses) & set(metrics)
    if clash:
        raise ValueError(f"names used both as loss and metric: {sorted(clash)}")
    return losses, metrics


def _num_samples(batch: Any) -> int | None:
    size = getattr(batch, "batch_size", None)
    if isinstance(size, int):
        return size
    return int(batch.shape[0]) if isinstance(batch, Tensor) and batch.dim() else None


def _reduced_values(losses: Mapping[str, Tensor], metrics: Mapping[str, Any], samples: int | None,
                    ctx: DistContext, skipped: int = 0) -> dict[str, float]:
    """Rank-averaged loss/metric values (one all-reduce, one host sync); ``samples`` and ``skipped`` (the
    batch's replaced damaged samples) are summed over the ranks."""
    names = [*losses, *metrics]
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=ctx.device).detach().reshape(())
                           for v in (*losses.values(), *metrics.values())]
                          + [torch.tensor(float(samples or 0), device=ctx.device),
                             torch.tensor(float(skipped), device=ctx.device)])
    values = (all_reduce_mean(stacked, ctx) * torch.tensor([1.0] * len(names) + [ctx.world_size] * 2,
                                                            device=ctx.device)).tolist()
    return dict(zip([*names, "samples", SKIPPED], values, strict=True))


def _record(
    pos: TrainPosition, optimizer: torch.optim.Optimizer, loss_names: list[str], values: dict[str, float],
    elapsed: float, duration: float, grad_norm: float | None,
) -> dict[str, Any]:
    """One metrics.jsonl record (``values`` from ``_reduced_values``, its skipped count taken out)."""
    samples = values.pop("samples")
    record = {"step": pos.step, "epoch": pos.epoch, "lr": optimizer.param_groups[0]["lr"], **values,
              "total": sum(values[n] for n in loss_names), "time": elapsed,
              "samples_per_s": samples / duration if samples and duration > 0 else None}
    if grad_norm is not None:
        record["grad_norm"] = grad_norm
    return record


def _optimize(total: Tensor, optimizer: torch.optim.Optimizer, method: nn.Module, factor: float,
              clip: float | None) -> float | None:
    set_lr(optimizer, factor)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = None
    if clip is not None:
        params = [p for p in method.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    optimizer.step()
    return grad_norm


def train(
    method: Method,
    batches: BatchFactory,
    out_dir: str | Path,
    settings: TrainSettings,
    *,
    recipe: Mapping[str, Any] | None = None,
    generators: Generators | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    context: DistContext | None = None,
    step_callback: StepCallback | None = None,
    param_groups: Sequence[Mapping[str, Any]] | None = None,
) -> TrainResult:
    """Train ``method`` for ``settings.total_steps`` optimizer steps (or until ``stop_at``), checkpointing
    to ``out_dir/checkpoint.pt`` and logging to ``out_dir/metrics.jsonl`` (rank 0 only).

    ``generators``: named torch/numpy generators used by the method or data (checkpointed and restored).
    ``resume``: continue from ``out_dir/checkpoint.pt``; without it an existing checkpoint is an error.
    ``step_callback(step, method)`` runs after every optimizer step, on every rank, before the step's
    checkpoint; values it returns (e.g. validation scores) join that step's record, which is then logged
    whatever ``log_every`` says. A batch's ``skipped_samples`` (damaged samples its pipeline replaced) add
    up, across ranks and resumes, to the records' ``skipped_samples``. ``param_groups``: optional
    torch-style groups over ``method``'s parameters (``build_optimizer``). Raises ``NonFiniteLossError``.
    """
    ctx, out_dir = context or single_process_context(), Path(out_dir)
    check_plain_values(recipe or {}, "recipe")  # fail now, not at the first checkpoint
    ckpt_path, end = out_dir / CHECKPOINT_NAME, min(stop_at or settings.total_steps, settings.total_steps)
    method.to(ctx.device)
    model = wrap_ddp(method, ctx, settings.find_unused_parameters)
    optimizer = build_optimizer(method, settings.optimizer, param_groups)
    factors = lr_factors(settings.schedule, settings.total_steps, settings.steps_per_epoch).tolist()
    pos, elapsed, last_ckpt = TrainPosition(), 0.0, None
    if resume:
        pos, elapsed = resume_from_checkpoint(ckpt_path, method=method, optimizer=optimizer, rank=ctx.rank,
                                              total_steps=settings.total_steps, generators=generators)
        last_ckpt = ckpt_path
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass resume=True or use another output folder")
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=settings.precision == "bf16"
                              and ctx.device.type == "cuda")

    def save() -> Path:
        rng = all_gather_objects(capture_rng_state(generators), ctx)  # every rank takes part
        if ctx.is_main:
            save_training_checkpoint(ckpt_path, method=method, optimizer=optimizer, position=pos, rng=rng,
                                     recipe=recipe or {}, total_steps=settings.total_steps,
                                     elapsed_s=elapsed, handoff=method.handoff())
            if settings.keep_checkpoints:
                atomic_copy(ckpt_path, out_dir / f"checkpoint_step{pos.step:08d}.pt")
        return ckpt_path

    records: list[dict[str, Any]] = []
    metrics_log = MetricsLog(out_dir / METRICS_NAME, keep_until_step=pos.step if resume else None) \
        if ctx.is_main else None
    # replaced damaged samples so far (the resumed run's count comes from its last kept record)
    skipped = int(metrics_log.last_record.get(SKIPPED, 0)) if metrics_log is not None else 0
    method.train()
    tick = time.perf_counter()
    with contextlib.ExitStack() as stack:
        display = stack.enter_context(ProgressDisplay(pos.step, end, ctx.is_main, settings.display_every))
        logs: list[MetricsLog | TensorBoardLog] = []
        if metrics_log is not None:
            logs.append(metrics_log)
            if settings.tensorboard:
                logs.append(TensorBoardLog(out_dir / TENSORBOARD_DIR, pos.step if resume else None))
        for log in logs:
            stack.callback(log.close)
        while pos.step < end:
            epoch_start = pos.position
            for batch in batches(pos.epoch, pos.position):
                with autocast:
                    losses, metrics = _split_output(model(move_to_device(batch, ctx.device)))
                values = _reduced_values(losses, metrics, _num_samples(batch), ctx,
                                         getattr(batch, SKIPPED, 0))
                skipped += int(values.pop(SKIPPED))
                for name in losses:
                    if not math.isfinite(values[name]):
                        raise NonFiniteLossError(pos.step + 1, name, values[name], last_ckpt)
                grad_norm = _optimize(sum(losses.values()), optimizer, method, factors[pos.step],
                                      settings.grad_clip_norm)
                pos = replace(pos, step=pos.step + 1, position=pos.position + 1)
                now = time.perf_counter()
                elapsed, duration, tick = elapsed + now - tick, now - tick, now
                extra = None
                if step_callback is not None:  # e.g. validation: not training time, so not in samples_per_s
                    extra = step_callback(pos.step, method)
                    tick += time.perf_counter() - now
                record = _record(pos, optimizer, list(losses), values, elapsed, duration, grad_norm)
                if skipped:
                    record[SKIPPED] = skipped
                if extra:
                    clash = set(extra) & set(record)
                    if clash:
                        raise ValueError(f"the step callback returned names the record has: {sorted(clash)}")
                    record.update(extra)
                display.update(pos.step, {k: record[k] for k in (*losses, "total")})
                if pos.step % settings.log_every == 0 or pos.step == end or extra:
                    records.append(record)
                    for log in logs:
                        log.write(record)
                every = settings.checkpoint_every
                if pos.step == end or (every and pos.step % every == 0):
                    last_ckpt = save()
                if pos.step >= end:
                    break
            else:  # the epoch's batches are exhausted
                if pos.position == epoch_start == 0:
                    raise RuntimeError(f"batches({pos.epoch}, 0) yielded no batch: the epoch is empty")
                pos = TrainPosition(pos.step, pos.epoch + 1, 0)
    return TrainResult(pos, last_ckpt, records)
