"""Live display without a terminal, and the JSON-lines metrics log."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from cmcr_core.engine.monitor import MetricsLog, ProgressDisplay, format_duration, read_metrics


def test_without_terminal_the_display_logs_every_n_steps(caplog):
    caplog.set_level(logging.INFO, logger="cmcr_core.engine.monitor")
    with ProgressDisplay(0, 7, enabled=True, every=3, use_rich=False) as display:
        for step in range(1, 8):
            display.update(step, {"nce": 1.0 / step, "total": 1.0 / step})
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" |")[0] for line in lines] == ["step 3/7", "step 6/7", "step 7/7"]
    assert "nce 0.3333" in lines[0] and "it/s" in lines[0] and "eta" in lines[0]


def test_disabled_display_is_silent_and_rich_display_runs(caplog):
    caplog.set_level(logging.INFO)
    with ProgressDisplay(0, 3, enabled=False) as display:
        display.update(1, {"nce": 1.0})
    assert not caplog.records
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    with ProgressDisplay(2, 5, enabled=True, use_rich=True, console=console) as display:
        for step in (3, 4, 5):
            display.update(step, {"nce": 0.5})
    assert "5/5" in stream.getvalue() and "nce 0.5" in stream.getvalue()


def test_format_duration():
    assert format_duration(3725) == "1:02:05" and format_duration(float("nan")) == "--:--"


def test_metrics_log_truncates_records_after_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(1, 6):
        log.write({"step": step, "loss": float(step)})
    log.close()
    resumed = MetricsLog(path, keep_until_step=3)
    resumed.write({"step": 4, "loss": 40.0})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    MetricsLog(path).close()  # a fresh run starts a fresh log
    assert read_metrics(path) == []


def test_tensorboard_log_holds_the_records_and_a_resume_replaces_the_steps_after_it(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    from cmcr_core.engine.monitor import TensorBoardLog

    def write(log: TensorBoardLog, steps: range, offset: float) -> None:
        for step in steps:
            log.write({"step": step, "total": offset + step / 3, "val_miou": None, "flag": True})
        log.close()

    folder = tmp_path / "tensorboard"
    write(TensorBoardLog(folder), range(1, 5), 0.0)
    write(TensorBoardLog(folder, resume_step=2), range(3, 5), 10.0)  # steps 3, 4 logged again
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    assert events.Tags()["tensors"] == ["total"]  # None and booleans are not scalars
    logged = {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors("total")}
    assert logged == {1: 1 / 3, 2: 2 / 3, 3: 10 + 3 / 3, 4: 10 + 4 / 3}  # double precision, as in the JSON
    write(TensorBoardLog(folder), range(1, 2), 5.0)  # a fresh start deletes the earlier event files
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    assert {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors("total")} == {1: 5 + 1 / 3}
