"""benchmarks/device_check.sh keeps working: its CPU fallback end to end (every stage, the profile included),
and its parsers (JUnit counts, step times, the profile's attribution of time) on hand-made inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_check  # noqa: E402
from device_check_workers import CATEGORIES, summarise_trace  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get(device_check.RECURSION_GUARD)),
                    reason="run by device_check.sh itself (its pytest stage)")
def test_cpu_fallback_runs_every_stage(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    result = subprocess.run([str(ROOT / "benchmarks" / "device_check.sh"), "--device", "cpu", "--profile",
                             str(profile)], capture_output=True, text=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    report = json.loads(lines[-1])
    failure = json.dumps(report["stages"])[:3000] + result.stderr[-2000:]
    assert result.returncode == 0 and report["ok"], failure
    assert set(report["stages"]) == set(device_check.STAGES)
    assert all(stage["ok"] and stage["seconds"] >= 0 for stage in report["stages"].values())
    assert report["device"] == "cpu" and report["env"]["torch"] and report["total_s"] > 0

    tests = report["tests"]
    assert tests["selection"] == "tiny" and tests["passed"] > 0 and tests["failed"] == tests["errors"] == 0
    assert tests["total"] == tests["passed"] + tests["skipped"]

    for dtype in ("float32", "bfloat16"):
        sparse = report["sparse"][dtype]
        assert sparse["voxels"] > 1000 and sparse["useful_gflop_forward"] > 0
        assert sparse["forward_s"] > 0 and sparse["train_step_s"] > 0 and sparse["dense_gemm_gflops"] > 0
        assert sparse["useful_gflops_forward"] == pytest.approx(
            sparse["useful_gflop_forward"] / sparse["forward_s"], rel=1e-3)
        assert sparse["forward_over_dense"] == pytest.approx(
            sparse["useful_gflops_forward"] / sparse["dense_gemm_gflops"], rel=1e-3)
        assert 0 < sparse["forward_over_dense"] < 2 and 0 < sparse["train_over_dense"] < 2

    for method, recipe in device_check.RECIPES.items():
        run = report["pretrain"][method]
        assert run["recipe"] == recipe and run["steps"] == device_check.SIZES["cpu"]["steps"]
        assert run["precision"] == "fp32" and run["losses_finite"] and len(run["step_s"]) == run["steps"]
        assert run["samples_per_s"] == pytest.approx(run["batch_size"] / run["s_per_step"], rel=1e-3)
        assert run["gpu_hours_per_epoch"] == pytest.approx(
            device_check.NUSCENES_KEYFRAMES / run["samples_per_s"] / 3600, rel=1e-3)

    summary = report["profile"]
    assert summary["annotations_missing"] == []  # every labelled function still exists under its name
    assert Path(summary["trace"]).is_file() and Path(summary["table"]).is_file()
    assert set(summary["share"]) == set(CATEGORIES)
    assert sum(summary["share"].values()) == pytest.approx(1, abs=1e-3)
    for category in ("kernel_maps", "gathers_scatters", "gemms", "teacher", "cmcr_extras"):
        assert summary["ms_per_step"][category] > 0, category


def _event(name: str, cat: str, ts: float, dur: float, tid: int = 1, **args) -> dict:
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def test_profile_summary_attributes_gpu_kernels_through_their_launches() -> None:
    events = [
        _event("ProfilerStep#3", "user_annotation", 0, 1000),
        _event("cmcr::teacher", "user_annotation", 10, 100),
        _event("aten::conv2d", "cpu_op", 20, 50),
        _event("cudaLaunchKernel", "cuda_runtime", 30, 2, correlation=1),
        _event("cmcr::student", "user_annotation", 200, 300),
        _event("cmcr::kernel_maps", "user_annotation", 210, 40),
        _event("aten::searchsorted", "cpu_op", 215, 10),
        _event("cudaLaunchKernel", "cuda_runtime", 218, 2, correlation=2),
        _event("cmcr::sparse_conv", "user_annotation", 260, 100),
        _event("aten::index_select", "cpu_op", 265, 10),
        _event("cudaLaunchKernel", "cuda_runtime", 268, 2, correlation=3),
        _event("aten::mm", "cpu_op", 280, 10),
        _event("cudaLaunchKernel", "cuda_runtime", 283, 2, correlation=4),
        # backward on the autograd thread: a sparse convolution's GEMM and another op's kernel
        _event("autograd::engine::evaluate_function: _SparseConvolutionBackward", "cpu_op", 600, 100, tid=2),
        _event("cmcr::sparse_conv", "user_annotation", 605, 90, tid=2),
        _event("aten::addmm_", "cpu_op", 610, 10, tid=2),
        _event("aten::mm", "cpu_op", 611, 5, tid=2),
        _event("cudaLaunchKernel", "cuda_runtime", 612, 2, tid=2, correlation=5),
        _event("autograd::engine::evaluate_function: MulBackward0", "cpu_op", 750, 20, tid=2),
        _event("cudaLaunchKernel", "cuda_runtime", 755, 2, tid=2, correlation=6),
    ]
    kernels = [_event(f"kernel{c}", "kernel", 2000 + 100 * c, 10 * c, tid=7, correlation=c)
               for c in range(1, 7)]
    summary = summarise_trace(events + kernels, steps=1)
    assert summary["basis"] == "gpu_kernel_time" and summary["wall_ms_per_step"] == pytest.approx(1.0)
    expected = {"teacher": 10, "kernel_maps": 20, "gathers_scatters": 30, "gemms": 40 + 50,
                "backward_other": 60}
    assert summary["ms_per_step"] == {k: expected.get(k, 0) / 1e3 for k in CATEGORIES}
    assert summary["busy_ms_per_step"] == pytest.approx(0.21)


def test_profile_summary_without_gpu_uses_cpu_self_time() -> None:
    events = [
        _event("cmcr::sparse_conv", "user_annotation", 0, 100),
        _event("aten::index_add_", "cpu_op", 5, 40),
        _event("aten::zeros", "cpu_op", 10, 15),  # a child op: its time is its own, not index_add_'s
        _event("Optimizer.step#AdamW.step", "user_annotation", 200, 50),
        _event("aten::_foreach_add_", "cpu_op", 205, 30),
    ]
    summary = summarise_trace(events, steps=2)
    assert summary["basis"] == "cpu_op_self_time"
    assert summary["ms_per_step"]["gathers_scatters"] == pytest.approx(0.025 / 2 + 0.015 / 2)
    assert summary["ms_per_step"]["optimizer"] == pytest.approx(0.015)


def test_junit_counts_and_pretrain_figures(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest" tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.a" name="test_ok"/><testcase classname="tests.a" name="test_bad">'
        '<failure message="x"/></testcase><testcase classname="tests.b" name="test_skip"><skipped/>'
        '</testcase><testcase classname="tests.b" name="test_ok2"/></testsuite></testsuites>')
    assert device_check.junit_counts(junit) == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1,
                                                "total": 4, "failed_ids": ["tests.a::test_bad"]}
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("data:\n  batch_size: 4\ntrain:\n  amp: true\n  device: cuda\n")
    times = [5.0, 6.0, 6.5, 7.5, 8.0]  # cumulative: steps of 5 (warm-up), 1, 0.5, 1, 0.5 s
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "time": t, "total": 1.0}) + "\n"
                                               for i, t in enumerate(times)))
    figures = device_check.pretrain_figures(run, warmup=1)
    assert figures["s_per_step"] == 0.75 and figures["samples_per_s"] == 4 / 0.75
    assert figures["step_s"] == [5.0, 1.0, 0.5, 1.0, 0.5] and figures["precision"] == "bf16"
    assert figures["gpu_hours_per_epoch"] == pytest.approx(28130 * 0.75 / 4 / 3600)


def test_the_test_selections_name_existing_paths() -> None:
    """`--tests quick` runs existing folders and files of the suite; `all` is the whole suite."""
    quick, everything = device_check.TEST_SELECTIONS["quick"], device_check.TEST_SELECTIONS["all"]
    assert quick[:2] == everything[:2] == ["-m", "gpu and not slow"] and everything[2:] == ["tests"]
    paths = quick[2:]
    assert paths == device_check.QUICK_TESTS and len(set(paths)) == len(paths)
    assert all((ROOT / path).exists() and path.startswith("tests/") for path in paths), paths
    assert device_check.SIZES["cuda"]["tests"] is None  # CUDA runs the selection of --tests
