"""Benchmark one pretraining step of the tiny recipes on the CPU: where the time goes, and CMCR's extra cost.

Writes a synthetic world (480x270 images by default, or uses --prepared), prepares it with SLIC
superpixels, then for each recipe (ppkt_synthetic, slidr_synthetic, cmcr_synthetic) measures, min of
--repeats runs of CPU time with one torch thread (the machine is shared: CPU time and the minimum are
the least disturbed figures; the load average is printed):

* data: per-sample loading time in this process (CPU time), and DataLoader samples/s (wall time) with
  the recipe's workers;
* step: teacher forward, student forward, losses (decoders + loss heads) forward, backward, and the whole
  step (forward + backward + optimizer), its shares and samples/s.

For CMCR it also times, on the same batch and weights, the step with only PointInfoNCE on (= a PPKT
step) and with PointInfoNCE plus one extra group (orthogonality; codebook = commitment + CMCM; MIM;
occupancy + intensity; each codebook user includes the pair sample and the EMA update), the
configurations in turns (min over the rounds); it does so at the recipe's cost knobs (``loss.mim_images``,
``loss.occupancy_queries``; cmcr_synthetic lowers them) and again, on a batch of its own, at the published
values (``PUBLISHED_KNOBS``). It then reports the
codebook's memory: the analytic peak of the chunked nearest-code search of a nuScenes-size batch
(12 × 64 × 224 × 416 pixel features; and of the search from the 12 × 64 × 7 × 13 decoder map that the MIM
path uses) against the float64 distance matrix of the reference, plus the
peak RSS growth of that search, polled from /proc/self/statm in a fresh subprocess. One JSON line per
measurement.

    python benchmarks/pretrain_step.py [--repeats 3] [--threads 1] [--prepared DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cmcr_core.config import load_recipe
from cmcr_core.data.batch import Batch, collate
from cmcr_core.data.pretrain_dataset import PretrainDataset
from cmcr_core.methods.registry import build_method
from cmcr_core.runs.pretrain import extras_hook, pipeline_settings
from cmcr_core.sparse import SparseTensor

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
NAMES = ("ppkt_synthetic", "slidr_synthetic", "cmcr_synthetic")


def emit(record: dict[str, Any]) -> None:
    record["load_avg_1min"] = round(os.getloadavg()[0], 2)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Minimum CPU time of this process over ``repeats`` calls (seconds).

    CPU time, not wall time: with one torch thread it is the compute time of the call, and it does not
    count the time the scheduler gives to other jobs on the shared cores (the load average is printed).
    """
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def prepare_world(work: Path) -> Path:
    from cmcr_core.data.prepare_nuscenes import PrepareOptions, prepare_nuscenes
    from cmcr_core.data.synthetic import write_nuscenes_world

    write_nuscenes_world(work / "world", scenes=2, samples_per_scene=3, seed=0, image_size=(480, 270))
    options = PrepareOptions(superpixels="slic")
    report = prepare_nuscenes(work / "world", "v1.0-mini", work / "prepared", options)
    if report.failures:
        raise RuntimeError(f"prepare failed: {report.failures}")
    return work / "prepared"


def student_forward(method: Any, batch: Batch) -> None:
    """The student's share of the forward (trunk and every 3D head)."""
    sparse = SparseTensor(batch.feats, batch.coords)
    trunk = method.student.forward_features(sparse)
    F.normalize(method.student.final(trunk).features, dim=1)
    if getattr(method, "final_class_level", None) is not None:
        method.final_class_level(trunk)


def time_step(method: Any, batch: Batch, repeats: int) -> dict[str, float]:
    """Forward pieces, backward and the whole optimizer step of ``method`` on ``batch`` (seconds)."""
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-6)
    images = batch.images.float().div(255.0)

    def forward() -> Any:
        out = method(batch)
        return out[0] if isinstance(out, tuple) else out

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(forward().values()).backward()
        optimizer.step()

    step()  # warm-up (kernel maps, allocator, oneDNN primitives)
    with torch.no_grad():
        teacher = best_of(lambda: method.teacher(images), repeats)
        student = best_of(lambda: student_forward(method, batch), repeats)
    whole_forward = best_of(forward, repeats)
    whole_step = best_of(step, repeats)
    return {
        "teacher_forward_s": teacher,
        "student_forward_s": student,
        "losses_forward_s": max(whole_forward - teacher - student, 0.0),
        "backward_and_update_s": max(whole_step - whole_forward, 0.0),
        "step_s": whole_step,
    }


def data_figures(dataset: PretrainDataset, workers: int, batch_size: int, repeats: int) -> dict[str, float]:
    n = len(dataset)
    per_sample = min(best_of(lambda i=i: dataset[i], 1) for i in range(n) for _ in range(repeats))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate, drop_last=True)
    start = time.perf_counter()
    seen = sum(batch.batch_size for batch in loader)
    elapsed = time.perf_counter() - start
    return {"load_per_sample_s": per_sample, "loader_workers": workers,
            "loader_samples_per_s": seen / elapsed if elapsed > 0 else None}


def bench_recipe(
    name: str, prepared: Path, repeats: int, overrides: tuple[str, ...] = ()
) -> tuple[Any, Batch, dict[str, Any]]:
    recipe = load_recipe(RECIPES / f"{name}.yaml", [f"data.path={prepared}", *overrides])
    from cmcr_core.data.prepared import PreparedDataset

    dataset = PretrainDataset(PreparedDataset(prepared, recipe.data.split), pipeline_settings(recipe),
                              seed=0, extras_hook=extras_hook(recipe))
    data = data_figures(dataset, recipe.data.num_workers, recipe.data.batch_size, repeats)
    batch = collate([dataset[i] for i in range(recipe.data.batch_size)])
    torch.manual_seed(0)
    method = build_method(recipe).train()
    timing = time_step(method, batch, repeats)
    b = batch.batch_size
    parts = ("teacher_forward_s", "student_forward_s", "losses_forward_s", "backward_and_update_s")
    total = sum(timing[k] for k in parts)
    record = {
        "benchmark": "pretrain_step", "recipe": name, "batch_size": b, "voxels": len(batch.coords),
        "pairs": len(batch.pairing_points), "images": tuple(batch.images.shape), **data, **timing,
        "shares": {k.removesuffix("_s"): round(timing[k] / total, 3) for k in parts},
        "samples_per_s": b / timing["step_s"],
        "step_per_sample_s": timing["step_s"] / b,
        "loader_keeps_up": data["load_per_sample_s"] / max(recipe.data.num_workers, 1)
        < timing["step_s"] / b,
    }
    if recipe.method == "cmcr":
        record["knobs"] = cmcr_knobs(recipe)
    return method, batch, record


def cmcr_extras(method: Any, batch: Batch, repeats: int) -> dict[str, Any]:
    """Step time with all CMCR losses, with NCE only (a PPKT step), and with NCE plus each extra group.

    The configurations are timed in turns (round r times each of them once, after one warm-up step each),
    and each keeps its minimum over the rounds: on a shared machine a burst of load then hits every
    configuration alike instead of one of them.
    """
    full = dict(method.weights)
    groups = {"orthogonality": ("orthogonality",), "codebook": ("commitment", "cmcm"), "mim": ("mim",),
              "occupancy": ("occupancy", "intensity")}
    configs = {"cmcr": full, "ppkt": {k: (v if k == "point_nce" else 0.0) for k, v in full.items()}}
    for name, keys in groups.items():
        configs[name] = {k: (v if k == "point_nce" or k in keys else 0.0) for k, v in full.items()}
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-6)

    def step(weights: dict[str, float]) -> None:
        method.weights = weights
        try:
            optimizer.zero_grad(set_to_none=True)
            sum(method(batch)[0].values()).backward()
            optimizer.step()
        finally:
            method.weights = dict(full)

    for weights in configs.values():
        step(weights)  # warm-up
    best = {name: float("inf") for name in configs}
    for _ in range(repeats):
        for name, weights in configs.items():
            best[name] = min(best[name], best_of(lambda w=weights: step(w), 1))
    ppkt_step, full_step = best["ppkt"], best["cmcr"]
    return {
        "benchmark": "cmcr_extra_cost", "ppkt_step_s": ppkt_step, "cmcr_step_s": full_step,
        "extra_fraction": (full_step - ppkt_step) / ppkt_step,
        "extra_by_group_s": {name: best[name] - ppkt_step for name in groups},
        "target_extra_fraction": 0.4,
    }


# CMCR's cost knobs at their published values (recipes/nuscenes.yaml); the tiny recipe may lower them.
PUBLISHED_KNOBS = {"loss.mim_images": 0, "loss.occupancy_queries": 2048}


def cmcr_knobs(recipe: Any) -> dict[str, Any]:
    """The recipe's values of the cost knobs, keyed like ``PUBLISHED_KNOBS``."""
    return {key: getattr(recipe.loss, key.split(".", 1)[1]) for key in PUBLISHED_KNOBS}


MEMORY_PROBE = """
import os, sys, threading, time, torch
torch.set_num_threads(1)
from cmcr_core.losses.codebook import UnifiedCodebook
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
def peak_growth(fn):
    # Poll the resident set while fn runs (torch releases the GIL in its kernels); large tensors are
    # mmap-allocated, so the RSS follows the live tensors.
    before, top, done = rss(), [0], threading.Event()
    def poll():
        while not done.is_set():
            top[0] = max(top[0], rss())
            time.sleep(0.0005)
    thread = threading.Thread(target=poll)
    thread.start()
    out = fn()
    top[0] = max(top[0], rss())
    done.set()
    thread.join()
    return top[0] - before, out
book = UnifiedCodebook(400, 64, chunk_size=int(sys.argv[1]))
maps = torch.empty(12, 64, 224, 416).normal_()
maps /= maps.norm(dim=1, keepdim=True)
base = torch.empty_like(maps).normal_()
book.nearest_map(maps[:1, :, :4, :4])  # BLAS warm-up with a tiny block
search, codes = peak_growth(lambda: book.nearest_map(maps))
del codes
quantize, fused = peak_growth(lambda: book.quantize_map(maps, base=base))
del fused
low = torch.empty(12, 64, 7, 13).normal_()  # the decoder's map before the x32 upsampling (224 x 416)
book.nearest_upsampled(low[:1, :, :2, :2], (4, 4))  # warm-up
upsampled, codes = peak_growth(lambda: book.nearest_upsampled(low, (224, 416)))
print(search, quantize, upsampled)
"""


def codebook_memory(chunk_size: int) -> dict[str, Any]:
    pixels, codes, dim = 12 * 224 * 416, 400, 64
    search = pixels * 8 + chunk_size * (codes + dim) * 4  # int64 codes + one score block + block copy
    quantize = pixels * 8 + 2 * pixels * dim * 4  # codes + looked-up codewords + fused output
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(chunk_size)], capture_output=True,
                            text=True, check=True)
    measured_search, measured_quantize, measured_upsampled = (int(v) for v in result.stdout.split())
    rows = max(1, chunk_size // 416)  # int64 codes + (I, 7, 13, K) low scores + (7, 416, K) + one row block
    upsampled = pixels * 8 + (12 * 7 * 13 + 7 * 416 + rows * 416) * codes * 4
    return {
        "benchmark": "codebook_memory", "pixels": pixels, "chunk_size": chunk_size,
        "search_analytic_peak_bytes": search, "search_measured_rss_growth_bytes": measured_search,
        "upsampled_search_analytic_peak_bytes": upsampled,
        "upsampled_search_measured_rss_growth_bytes": measured_upsampled,
        "quantize_analytic_peak_bytes": quantize, "quantize_measured_rss_growth_bytes": measured_quantize,
        "features_bytes": pixels * dim * 4, "reference_float64_distances_bytes": pixels * codes * 8,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP waits on a "
                        "shared machine)")
    parser.add_argument("--prepared", type=Path, default=None, help="a prepared folder (with superpixels)")
    parser.add_argument("--keep", type=Path, default=None, help="write the world/prepared data here")
    parser.add_argument("--recipes", nargs="*", default=list(NAMES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emit({"benchmark": "machine", "threads": args.threads, "cpus": os.cpu_count(),
          "torch": torch.__version__})
    prepared = args.prepared
    if prepared is None:
        work = args.keep or Path(tempfile.mkdtemp(prefix="cmcr-bench-step-"))
        prepared = prepare_world(Path(work))
    for name in args.recipes:
        method, batch, record = bench_recipe(name, prepared, args.repeats)
        emit(record)
        if "knobs" in record:
            emit({**cmcr_extras(method, batch, args.repeats), "recipe": name, "knobs": record["knobs"]})
            if record["knobs"] != PUBLISHED_KNOBS:
                # The same recipe at the published knob values (its own batch: the query count changes
                # the samples' random draws).
                overrides = tuple(f"{key}={value}" for key, value in PUBLISHED_KNOBS.items())
                method, batch, published = bench_recipe(name, prepared, args.repeats, overrides)
                emit({**published, "recipe": f"{name} (published knobs)"})
                emit({**cmcr_extras(method, batch, args.repeats), "recipe": f"{name} (published knobs)",
                      "knobs": published["knobs"]})
            emit(codebook_memory(method.codebook.chunk_size))
            emit(codebook_state(method))


def codebook_state(method: Any) -> dict[str, Any]:
    """What the codebook keeps between steps (buffers only)."""
    buffers = sum(b.numel() * b.element_size() for b in method.codebook.buffers())
    return {"benchmark": "codebook_state", "buffer_bytes": buffers,
            "generators": sorted(method.generators())}


if __name__ == "__main__":
    main()
