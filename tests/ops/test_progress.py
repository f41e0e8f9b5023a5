"""Progress of long stages: a log line every tenth of the stage and one at its end where no terminal shows
a bar, nothing at all when disabled, and items passed through unchanged."""

from __future__ import annotations

import logging

import pytest

from cmcr_core.ops.progress import ProgressBar, track


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cmcr_core.ops.progress"]


def test_a_log_line_every_tenth_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    items = list(track(range(100), 100, "evaluate val", "scans"))
    assert items == list(range(100))
    lines = _lines(caplog)
    assert len(lines) == 10  # 10 %, 20 %, ..., 90 %, then the closing line
    assert [line.split("(")[1].split(")")[0] for line in lines[:9]] == [f"{k} %" for k in range(10, 100, 10)]
    assert lines[0].startswith("evaluate val: 10/100 scans") and "eta" in lines[0]
    assert lines[-1].startswith("evaluate val: 100 scans in ")


def test_large_steps_report_once_per_step(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with ProgressBar(10, "verify", "samples", use_rich=False) as bar:
        bar.advance(7)  # jumps past several tenths: one line
        bar.advance(3)
    assert len(_lines(caplog)) == 2


def test_disabled_or_unknown_totals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert list(track("abc", 3, "rank 1", enabled=False)) == ["a", "b", "c"]
    assert _lines(caplog) == []
    assert list(track(iter("ab"), None, "stream", "items")) == ["a", "b"]
    assert _lines(caplog) == ["stream: 2 items in 0:00:00"]
