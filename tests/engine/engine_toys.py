"""Toy method and deterministic toy data pipeline for the engine tests (also used by the DDP worker)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.engine.distributed import ShardedSampler
from cmcr_core.engine.method import Method

NUM_ITEMS = 64
IN_DIM = 4


@dataclass
class ToyBatch:
    x: Tensor
    y: Tensor
    items: Tensor

    def to(self, device: torch.device) -> ToyBatch:
        return ToyBatch(self.x.to(device), self.y.to(device), self.items.to(device))

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])


def toy_dataset(seed: int = 0) -> tuple[Tensor, Tensor]:
    """(N, 4) inputs and (N, 1) targets of a noisy linear map."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(NUM_ITEMS, IN_DIM, generator=generator)
    w = torch.tensor([[1.5], [-2.0], [0.5], [1.0]])
    return x, x @ w + 0.05 * torch.randn(NUM_ITEMS, 1, generator=generator)


class ToyBatches:
    """``batches(epoch, start)`` over a ShardedSampler; input noise drawn from an explicit numpy Generator."""

    def __init__(self, batch_size: int = 8, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.x, self.y = toy_dataset(seed)
        self.batch_size = batch_size
        self.sampler = ShardedSampler(NUM_ITEMS, rank, world_size, seed=seed, shuffle=True, drop_last=True)
        self.augment = np.random.default_rng(1000 + rank)

    def __call__(self, epoch: int, start: int) -> Iterator[ToyBatch]:
        self.sampler.set_epoch(epoch, start * self.batch_size)
        order = list(self.sampler)
        for first in range(0, len(order) - self.batch_size + 1, self.batch_size):
            items = torch.tensor(order[first:first + self.batch_size])
            noise = torch.from_numpy(self.augment.normal(0.0, 0.01, (len(items), IN_DIM)).astype(np.float32))
            yield ToyBatch(self.x[items] + noise, self.y[items], items)


class ToyMethod(Method):
    """MLP regression with BatchNorm and dropout; a generator-driven random feature scale in forward."""

    def __init__(
        self, seed: int = 0, nan_at_call: int | None = None, frozen: nn.Module | None = None
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(IN_DIM, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1),
                                 nn.Linear(16, 1))
        self.frozen = frozen
        self.generator = torch.Generator().manual_seed(seed + 7)
        self.nan_at_call = nan_at_call
        self.calls = 0

    def forward(self, batch: ToyBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        self.calls += 1
        scale = 1.0 + 0.01 * torch.rand((), generator=self.generator)
        prediction = self.net(batch.x * scale)
        loss = F.mse_loss(prediction, batch.y)
        if self.calls == self.nan_at_call:
            loss = loss * float("nan")
        losses = {"mse": loss, "l1": 0.1 * (prediction - batch.y).abs().mean()}
        return losses, {"pred_mean": prediction.mean()}

    def handoff(self) -> dict[str, object]:
        return {"student": self.net.state_dict(), "teacher": {"arch": "none"}}
