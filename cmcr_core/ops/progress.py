"""Progress of a long stage (evaluation, feature sampling, preparing, verifying): a bar on a terminal, log
lines elsewhere.

On a terminal (standard error is a TTY) a rich progress bar shows done / total, the rate and the time left,
and disappears when the stage ends; otherwise (CI, a log file, a notebook) an INFO line of the
``cmcr_core.ops.progress`` logger reports every tenth of the stage and its end, so a log shows that a
long stage moves without being flooded. ``enabled=False`` (ranks other than 0) shows nothing.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["ProgressBar", "format_duration", "progress_bar", "track"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``--:--`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressBar:
    """``advance(n)`` after each piece of work, ``close()`` at the end (or use it as a context manager).

    Args:
        total: pieces of work (None: unknown; the log lines then report counts only).
        label: what the stage is ("evaluate val").
        unit: what a piece is ("scans").
        enabled: False shows nothing.
        use_rich: force (True) or forbid (False) the terminal bar; None = when standard error is a TTY.
    """

    def __init__(self, total: int | None, label: str, unit: str = "items", enabled: bool = True,
                 use_rich: bool | None = None) -> None:
        self.total, self.label, self.unit, self.enabled = total, label, unit, enabled
        self.done = 0
        self._started = time.perf_counter()
        self._next_report = 1
        self._progress: Any = None
        self._task: Any = None
        if enabled and (sys.stderr.isatty() if use_rich is None else use_rich):
            self._start_rich()

    def _start_rich(self) -> None:
        from rich.errors import LiveError
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn(self.unit), TimeRemainingColumn(), transient=True)
        try:
            progress.start()
        except LiveError:  # another live display that cannot nest (older rich): log lines instead
            return
        self._progress = progress
        self._task = progress.add_task(self.label, total=self.total)

    def advance(self, count: int = 1) -> None:
        """Report ``count`` more pieces done."""
        self.done += count
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)
            return
        if self.total:
            tenth = self.done * 10 // self.total
            if tenth >= self._next_report and self.done < self.total:
                self._next_report = tenth + 1
                self._log()

    def _log(self, final: bool = False) -> None:
        elapsed = time.perf_counter() - self._started
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        if final:
            logger.info("%s: %d %s in %s", self.label, self.done, self.unit, format_duration(elapsed))
        elif self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            logger.info("%s: %d/%d %s (%d %%), %.2f %s/s, eta %s", self.label, self.done, self.total,
                        self.unit, 100 * self.done // self.total, rate, self.unit, format_duration(eta))

    def close(self) -> None:
        """End the stage: the terminal bar disappears; the log gets a closing line."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        else:
            self._log(final=True)
        self.enabled = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def progress_bar(total: int | None, label: str, unit: str = "items", enabled: bool = True) -> ProgressBar:
    """A ``ProgressBar`` (see there)."""
    return ProgressBar(total, label, unit, enabled)


def track(items: Iterable[T], total: int | None, label: str, unit: str = "items", enabled: bool = True,
          size: Any = None) -> Iterator[T]:
    """Yield ``items`` while a ``ProgressBar`` advances by ``size(item)`` (default 1) after each one."""
    with ProgressBar(total, label, unit, enabled) as bar:
        for item in items:
            yield item
            bar.advance(1 if size is None else int(size(item)))
