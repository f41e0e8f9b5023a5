"""Prepared data that cannot rot silently: checked reads, damaged-sample errors, verification, skipping.

Shards carry checksums (`cmcr_core.data.shards`: HDF5's Fletcher-32 on every dataset, checksummed HDF5
1.10 metadata, fixed-length texts; SemanticKITTI sequence files the same), so HDF5 refuses to return a
damaged chunk. Here that refusal becomes a `DamagedSampleError` naming the shard, the sample token and the
dataset; `verify_prepared` reads every array of every sample of a prepared folder and lists the damage
(and the files to rebuild); `SkipDamaged` lets training replace a damaged sample by the next readable one
and count it, when the recipe allows it (`data.skip_damaged`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "Damage",
    "DamagedSampleError",
    "ShardDamage",
    "SkipDamaged",
    "SkippingCollate",
    "VerifyReport",
    "read_checked",
    "tolerate_damage",
]

logger = logging.getLogger(__name__)


class DamagedSampleError(ValueError):
    """A prepared sample whose stored bytes fail their checksums (or disagree with the index)."""

    def __init__(self, shard: str | Path, token: str, dataset: str, reason: str) -> None:
        self.shard, self.token, self.dataset, self.reason = Path(shard), token, dataset, reason
        folder = self.shard.parent.parent
        super().__init__(
            f"damaged prepared data: shard {self.shard}, sample {token}, dataset {dataset!r} ({reason}); "
            f"`cmcr prepare verify --data {folder}` lists every damaged sample and `--retry-failed` rebuilds "
            "them; `--set data.skip_damaged=true` trains without them")

    def __reduce__(self) -> tuple[Any, ...]:  # survives DataLoader workers and pickling
        return type(self), (self.shard, self.token, self.dataset, self.reason)


class ShardDamage(ValueError):
    """A shard-wide part (the file, its offsets) that cannot be read; the reader adds the sample."""

    def __init__(self, dataset: str, reason: str) -> None:
        self.dataset, self.reason = dataset, reason
        super().__init__(f"{dataset}: {reason}")


def read_checked(file: Any, dataset: str, selection: Any, error: Callable[[str, str], Exception]) -> Any:
    """``file[dataset][selection]``; HDF5's refusal (a failed checksum, unreadable metadata) raises
    ``error(dataset, reason)`` instead."""
    try:
        return file[dataset][selection]
    except (OSError, KeyError, RuntimeError) as failure:
        raise error(dataset, _reason(failure)) from failure


def _reason(failure: BaseException) -> str:
    text = str(failure).strip() or type(failure).__name__
    if "checksum" in text.lower() or "filter returned failure" in text.lower():
        return f"checksum mismatch: {text}"
    return text


# --- training without damaged samples -----------------------------------------------------------------


class SkipDamaged:
    """Items of ``dataset`` as ``(item, skipped)``: an item whose sample is damaged is replaced by the next
    readable one of the dataset (wrapping around, so batches keep their size) and ``skipped`` is 1 (else
    0), so an epoch counts each damaged sample it reaches once. Each is logged as a warning. Use with
    ``SkippingCollate``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        count = len(self.dataset)
        for passed in range(count):
            try:
                return self.dataset[(index + passed) % count], min(passed, 1)
            except DamagedSampleError as error:
                logger.warning("left out (data.skip_damaged): %s", error)
        raise ValueError(f"every one of the {count} samples is damaged (data.skip_damaged has nothing left)")


@dataclass(frozen=True)
class SkippingCollate:
    """``collate`` of the items of ``SkipDamaged``; the batch's ``skipped_samples`` is the sum of their
    counts (the training loop logs the running total)."""

    collate: Callable[[list[Any]], Any]

    def __call__(self, items: Sequence[tuple[Any, int]]) -> Any:
        batch = self.collate([item for item, _ in items])
        return replace(batch, skipped_samples=sum(passed for _, passed in items))


def tolerate_damage(dataset: Any, collate: Callable[[list[Any]], Any], enabled: bool) -> tuple[Any, Any]:
    """(dataset, collate) as given, or wrapped in ``SkipDamaged`` / ``SkippingCollate`` when ``enabled``
    (the recipe's ``data.skip_damaged``)."""
    return (SkipDamaged(dataset), SkippingCollate(collate)) if enabled else (dataset, collate)


# --- verification -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    """One damaged part of a prepared folder: ``file`` (relative to it), the sample token (empty when the
    whole file is unreadable), the dataset and why."""

    file: str
    token: str
    dataset: str
    reason: str


@dataclass
class VerifyReport:
    """What `cmcr prepare verify` found in a prepared folder."""

    root: Path
    dataset: str  # "nuscenes" or "semantickitti"
    files: int = 0
    samples: int = 0
    damage: list[Damage] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # files written before shards carried checksums
    rebuilt: list[str] = field(default_factory=list)  # files rebuilt by --retry-failed

    @property
    def to_rebuild(self) -> list[str]:
        """The files holding damage, each once, in order."""
        return sorted({d.file for d in self.damage})

    @property
    def damaged_samples(self) -> int:
        return len({(d.file, d.token) for d in self.damage})

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "dataset": self.dataset, "files": self.files, "samples": self.samples,
                "damaged_samples": self.damaged_samples, "to_rebuild": self.to_rebuild,
                "unchecked": list(self.unchecked), "rebuilt": list(self.rebuilt),
                "damage": [d.__dict__ for d in self.damage]}
