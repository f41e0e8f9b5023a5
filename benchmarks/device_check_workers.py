"""Measurements of benchmarks/device_check.py, each run in a subprocess of the driver, plus the summary of a
torch.profiler trace (a pure function of the trace's events, tested on CPU).

* `environment`: torch, CUDA and the device in use.
* `sparse_step`: MinkUNet34C forward (eval, no_grad) and training step (train mode, forward + backward of
  a mean-of-squares loss) on a batch of synthetic 32-beam scans (`sparse_unet.make_input`), in float32 or
  under bfloat16 autocast; min of N runs after one warm-up; peak memory (`torch.cuda.max_memory_allocated`
  above the model and input, gradients included; CUDA only); useful FLOPs (`sparse_unet.useful_gflop`) per
  second against the dense GEMM rate of the same dtype measured in the same process
  (`sparse_unet.worker_gemm`). A training step counts 3x the forward FLOPs (forward, input and weight
  gradients).
* `profile_pretraining`: runs the `cmcr pretrain` command line it is given in this process under
  torch.profiler, a step boundary at every optimizer step, with labelled ranges around the engine and the
  method (`ANNOTATIONS`), and writes the trace, an op table and `summarise_trace`'s shares.
"""

from __future__ import annotations

import functools
import importlib
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent

# Ranges put around functions while profiling: (module, attribute, label). A target that no longer exists
# is reported in `annotations_missing` (its time then lands in a coarser category).
ANNOTATIONS = (
    ("cmcr_core.models.minkunet", "MinkUNetTrunk.forward_features", "student"),
    ("cmcr_core.models.frozen_teacher", "FrozenTeacher.forward", "teacher"),
    ("cmcr_core.sparse.functional", "_forward", "sparse_conv"),
    ("cmcr_core.sparse.functional", "_backward", "sparse_conv"),
    *(("cmcr_core.sparse.manager", f"CoordinateManager.{name}", "kernel_maps")
      for name in ("insert", "submanifold_map", "strided_map", "transposed_map", "general_map")),
    *(("cmcr_core.methods.cmcr", f"CMCR.{name}", "cmcr_extras")
      for name in ("_pixel_codes", "_pair_pixel_codes", "_mim_loss", "_occupancy_losses")),
    *(("cmcr_core.methods.cmcr", name, "cmcr_extras")
      for name in ("orthogonality_loss", "commitment_losses", "code_matching_loss")),
    *(("cmcr_core.losses.codebook", f"UnifiedCodebook.{name}", "cmcr_extras")
      for name in ("nearest", "nearest_upsampled", "quantize", "quantize_map", "update", "usage")),
)
CATEGORIES = ("kernel_maps", "gathers_scatters", "gemms", "sparse_conv_other", "student_other", "teacher",
              "cmcr_extras", "backward_other", "optimizer", "other")
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm",
            "mkldnn::_linear_pointwise"}
GATHER_SCATTER_OPS = {"aten::index_select", "aten::index_add_", "aten::index_copy_", "aten::index",
                      "aten::index_put_", "aten::gather", "aten::scatter_", "aten::scatter_add_"}


def environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available(),
                            "cpu_threads": torch.get_num_threads(),
                            "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        # float32_matmul_precision "highest" = no TF32 in matmuls (the sparse engine's GEMMs); cuDNN
        # convolutions (the image teacher) follow torch.backends.cudnn.allow_tf32, True by default.
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gb=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                    tf32_cudnn_conv=torch.backends.cudnn.allow_tf32,
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def sparse_step(device: str, dtype: str, batch: int, azimuths: int, planes: list[int], layers: list[int],
                init_dim: int, repeats: int) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(HERE))
    import sparse_unet

    from cmcr_core.models.minkunet import MinkUNet34C
    from cmcr_core.sparse import SparseTensor

    cuda = device == "cuda"
    feats, coords = sparse_unet.make_input(batch, device, azimuths)
    torch.manual_seed(0)
    model = MinkUNet34C(1, 64, planes=planes, layers=layers, init_dim=init_dim).to(device)
    gflop = sparse_unet.useful_gflop(feats, coords, model)
    autocast = torch.autocast(device, torch.bfloat16, enabled=dtype == "bfloat16")
    out: dict[str, Any] = {"voxels": int(coords.shape[0]), "batch": batch, "useful_gflop_forward": gflop}

    def forward() -> SparseTensor:
        with torch.no_grad(), autocast:
            x = SparseTensor(feats, coords)
            model(x)
        return x

    def train_step() -> None:
        with autocast:
            y = model(SparseTensor(feats, coords)).features
        y.float().square().mean().backward()

    for name, fn, mode in (("forward", forward, False), ("train_step", train_step, True)):
        model.train(mode)
        fn()  # warm-up: allocator, cuBLAS handles, first-call costs
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()  # model and input
            torch.cuda.reset_peak_memory_stats()
        best, map_s = float("inf"), None
        for _ in range(repeats):
            model.zero_grad(set_to_none=True)  # outside the timed step: every step allocates its gradients
            result, wall, _ = sparse_unet._timed(device, fn)
            if wall < best:
                best = wall
                map_s = result.manager.map_seconds if result is not None else map_s
        out[f"{name}_s"] = best
        out[f"peak_mem_{name}_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None
        if map_s is not None:
            out["kernel_map_s"] = map_s
    gemm = sparse_unet.worker_gemm(SimpleNamespace(device=device, repeats=repeats, dtype=dtype))
    out["dense_gemm_gflops"] = dense = gemm["dense_gemm_gflops"]
    out["useful_gflops_forward"] = gflop / out["forward_s"]
    out["useful_gflops_train"] = 3 * gflop / out["train_step_s"]
    out["forward_over_dense"] = out["useful_gflops_forward"] / dense
    out["train_over_dense"] = out["useful_gflops_train"] / dense
    return out


def _annotated(function, label: str):
    from torch.profiler import record_function

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with record_function(label):
            return function(*args, **kwargs)

    return wrapper


def install_annotations() -> list[str]:
    """Wrap every `ANNOTATIONS` target in a `cmcr::<label>` range; returns the targets not found."""
    missing = []
    for module_name, path, label in ANNOTATIONS:
        try:
            owner = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            original = getattr(owner, name)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{path}")
            continue
        setattr(owner, name, _annotated(original, f"cmcr::{label}"))
    return missing


def profile_pretraining(device: str, out_dir: Path, argv: list[str], wait: int, warmup: int,
                        active: int) -> dict[str, Any]:
    """Run `cmcr <argv>` (a pretrain command of wait + warmup + active steps) under the profiler."""
    import runpy

    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile, schedule

    missing = install_annotations()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    profiler = profile(activities=activities, schedule=schedule(wait=wait, warmup=warmup, active=active))
    hook = register_optimizer_step_post_hook(lambda *args: profiler.step())
    sys.argv = ["cmcr", *argv]
    try:
        with profiler:
            try:
                runpy.run_module("cmcr_cli", run_name="__main__", alter_sys=True)
            except SystemExit as exit_:
                if exit_.code not in (0, None):
                    raise RuntimeError(f"cmcr {' '.join(argv[:1])} exited with {exit_.code}") from None
    finally:
        hook.remove()
    out_dir.mkdir(parents=True, exist_ok=True)
    trace, table = out_dir / "trace.json", out_dir / "ops.txt"
    profiler.export_chrome_trace(str(trace))
    averages = profiler.key_averages()
    sort_by = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    table.write_text(averages.table(sort_by=sort_by, row_limit=60))
    top = sorted(averages, key=lambda a: getattr(a, sort_by, 0.0), reverse=True)[:12]
    events = json.loads(trace.read_text())["traceEvents"]
    return {"trace": str(trace), "table": str(table), "annotations_missing": missing,
            **summarise_trace(events, active),
            "top_ops_ms_per_step": {a.key: round(getattr(a, sort_by, 0.0) / 1e3 / max(active, 1), 3)
                                    for a in top}}


def categorise(chain: list[str]) -> str:
    """Category of time spent under the ranges `chain` (outermost first: annotations and op names)."""
    names = set(chain)
    if "cmcr::teacher" in names:
        return "teacher"
    if "cmcr::kernel_maps" in names:
        return "kernel_maps"
    if "cmcr::sparse_conv" in names:
        if names & GEMM_OPS:
            return "gemms"
        return "gathers_scatters" if names & GATHER_SCATTER_OPS else "sparse_conv_other"
    if "cmcr::cmcr_extras" in names:
        return "cmcr_extras"
    if "cmcr::student" in names:
        return "student_other"
    if any(name.startswith("Optimizer.") for name in names):
        return "optimizer"
    if any(name.startswith("autograd::engine::evaluate_function") for name in names):
        return "backward_other"
    return "other"


def _complete(event: dict) -> bool:
    return event.get("ph") == "X" and "ts" in event and "dur" in event


def _sweep(intervals: list[dict], queries: list[tuple[float, Any]]) -> tuple[dict, dict]:
    """For one thread: the names of the intervals enclosing each query point, and for each interval
    (by id) its own chain (ancestors + itself) and the total duration of its direct children."""
    ordered = sorted(intervals, key=lambda e: (e["ts"], -e["dur"]))
    chains, children, at_query = {}, defaultdict(float), {}
    stack: list[dict] = []
    pending = sorted(queries, key=lambda q: q[0])
    q = 0

    def answer_until(t: float) -> None:
        nonlocal q
        while q < len(pending) and pending[q][0] < t:
            point, key = pending[q]
            while stack and stack[-1]["ts"] + stack[-1]["dur"] < point:
                stack.pop()
            at_query[key] = [e["name"] for e in stack]
            q += 1

    for event in ordered:
        answer_until(event["ts"])
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= event["ts"]:
            stack.pop()
        if stack:
            children[id(stack[-1])] += event["dur"]
        stack.append(event)
        chains[id(event)] = [e["name"] for e in stack]
    answer_until(float("inf"))
    return at_query, {"chains": chains, "children": children}


def summarise_trace(events: list[dict], steps: int) -> dict[str, Any]:
    """Where the time of `steps` profiled steps goes, per `CATEGORIES`, from chrome-trace `events`.

    With GPU kernels in the trace: each kernel's (and memcpy's/memset's) duration, attributed through its
    launch (same correlation id) to the ranges open on the launching thread. Without: the self time of
    every CPU op (its duration minus its child ops'), attributed to the ranges enclosing it.
    """
    gpu = [e for e in events if _complete(e) and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    ranges = [e for e in events if _complete(e) and e.get("cat") in ("cpu_op", "user_annotation")]
    by_thread: dict[tuple, list[dict]] = defaultdict(list)
    for e in ranges:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    totals = dict.fromkeys(CATEGORIES, 0.0)
    if gpu:
        launches = {e["args"]["correlation"]: e for e in events
                    if _complete(e) and e.get("cat") in ("cuda_runtime", "cuda_driver")
                    and "correlation" in e.get("args", {})}
        queries: dict[tuple, list] = defaultdict(list)
        for i, kernel in enumerate(gpu):
            launch = launches.get(kernel.get("args", {}).get("correlation"))
            if launch is None:
                totals["other"] += kernel["dur"]
                continue
            queries[(launch.get("pid"), launch.get("tid"))].append((launch["ts"], i))
        for thread, points in queries.items():
            at_query, _ = _sweep(by_thread.get(thread, []), points)
            for i, chain in at_query.items():
                totals[categorise(chain)] += gpu[i]["dur"]
        basis = "gpu_kernel_time"
    else:
        for thread_ranges in by_thread.values():
            _, info = _sweep(thread_ranges, [])
            for e in thread_ranges:
                if e.get("cat") == "cpu_op":
                    self_time = max(e["dur"] - info["children"][id(e)], 0.0)
                    totals[categorise(info["chains"][id(e)])] += self_time
        basis = "cpu_op_self_time"
    total = sum(totals.values())
    walls = [e["dur"] for e in ranges if str(e.get("name", "")).startswith("ProfilerStep#")]
    per_step = max(steps, 1)
    return {
        "basis": basis,
        "steps": steps,
        "busy_ms_per_step": total / 1e3 / per_step,
        "wall_ms_per_step": statistics.fmean(walls) / 1e3 if walls else None,
        "ms_per_step": {k: round(v / 1e3 / per_step, 3) for k, v in totals.items()},
        "share": {k: round(v / total, 4) if total else 0.0 for k, v in totals.items()},
    }
