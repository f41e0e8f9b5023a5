"""Training metrics: a JSON-lines log and a live display that degrades to log lines without a TTY.

``metrics.jsonl`` holds one JSON object per logged step: ``step``, ``epoch``, ``lr``, every loss term,
``total``, ``time`` (seconds of training so far, across resumes; the time of the workflow's step
callback, e.g. a validation, is left out), ``samples_per_s``, ``grad_norm`` (with clipping), the method's
extra metrics, what the step callback adds (e.g. validation scores) and ``skipped_samples`` (damaged
samples left out so far, once there is one).

``TensorBoardLog`` writes the same records as TensorBoard event files: every numeric value of a record
is a scalar whose tag is its key and whose step is the record's ``step``, stored in double precision, so
the event files and metrics.jsonl hold identical numbers (``null`` values are left out).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from cmcr_core.ops.progress import format_duration

__all__ = ["TENSORBOARD_DIR", "MetricsLog", "ProgressDisplay", "TensorBoardLog", "format_duration",
           "read_metrics"]

TENSORBOARD_DIR = "tensorboard"  # inside the run folder
TENSORBOARD_INSTALL = 'pip install "cmcr[tb]"'


logger = logging.getLogger(__name__)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class MetricsLog:
    """Append-only JSON-lines writer. ``keep_until_step`` drops records of a previous run beyond the step
    it resumes from (they were logged after its last checkpoint and will be logged again)."""

    def __init__(self, path: str | Path, keep_until_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.last_record: dict[str, Any] = {}  # the last record kept from the run being resumed
        if keep_until_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_until_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            self.last_record = kept[-1] if kept else {}
        elif self.path.exists():
            self.path.unlink()
        self._handle: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: Mapping[str, Any]) -> None:
        # Flushed per record so a crash loses nothing that was logged.
        self._handle.write(json.dumps(dict(record)) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class TensorBoardLog:
    """The records of metrics.jsonl as TensorBoard scalars in ``folder`` (see the module docstring).

    ``resume_step``: the run continues from that step; TensorBoard discards what earlier event files hold
    after it (those steps are logged again, as in metrics.jsonl). Without it, the event files of an earlier
    start in ``folder`` are deleted. Needs the optional ``tensorboard`` package.
    """

    def __init__(self, folder: str | Path, resume_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch's module imports the tensorboard package
            raise RuntimeError(f"train.tensorboard: true needs the tensorboard package: {TENSORBOARD_INSTALL}"
                               ) from error
        self.folder = Path(folder)
        if resume_step is None and self.folder.is_dir():
            for old in self.folder.glob("events.out.tfevents.*"):
                old.unlink()
        purge = None if resume_step is None else resume_step + 1
        self._writer = SummaryWriter(str(self.folder), purge_step=purge, flush_secs=10)

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self._writer.add_scalar(key, float(value), step, new_style=True, double_precision=True)

    def close(self) -> None:
        self._writer.close()


def _loss_text(values: Mapping[str, float], limit: int = 6) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in list(values.items())[:limit])


class ProgressDisplay:
    """Live progress (losses, it/s, ETA). A rich bar on a terminal, else a log line every ``every`` steps;
    nothing at all when ``enabled`` is False (ranks other than 0)."""

    def __init__(self, start_step: int, end_step: int, enabled: bool = True, every: int = 10,
                 use_rich: bool | None = None, console: Any = None) -> None:
        self.start_step, self.end_step, self.every = start_step, end_step, max(1, every)
        self.enabled = enabled
        self.use_rich = enabled and (sys.stderr.isatty() if use_rich is None else use_rich)
        self._started = time.perf_counter()
        self._console = console  # a rich Console; None → rich's default (stderr)
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressDisplay:
        if self.use_rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} it/s"), TimeRemainingColumn(),
                TextColumn("{task.fields[losses]}"),
                console=self._console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=self.end_step, completed=self.start_step, rate="-", losses=""
            )
        self._started = time.perf_counter()
        return self

    def update(self, step: int, values: Mapping[str, float]) -> None:
        """Report that ``step`` steps are done; ``values`` are the losses to show."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._started
        done = step - self.start_step
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.end_step - step) / rate if rate > 0 else float("nan")
        if self._progress is not None:
            self._progress.update(self._task, completed=step, rate=f"{rate:.2f}", losses=_loss_text(values))
        elif done % self.every == 0 or step == self.end_step:
            logger.info("step %d/%d | %s | %.2f it/s | eta %s", step, self.end_step, _loss_text(values), rate,
                        format_duration(eta))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
