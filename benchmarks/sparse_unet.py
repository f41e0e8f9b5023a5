"""Benchmark the cmcr sparse engine (MinkUNet34C) against the dense GEMM rate and MinkowskiEngine.

Usage (CPU; 1 thread is the setting for engine comparisons, see docs/sparse-engine.md section 10):

    python benchmarks/sparse_unet.py --threads 1 --repeats 10
    python benchmarks/sparse_unet.py --device cuda --batch 8        # GPU: batch of 8 scans

Prints ONE JSON line.  Every measurement runs in a subprocess of this script with
OMP/MKL/OPENBLAS_NUM_THREADS and `torch.set_num_threads` set to `--threads`, so both engines and the dense
GEMM reference use the same thread count:

* `gemm`: dense fp32 GEMM rate, 2048^3 and (20k x 256) x 256 (and 8192^3 on CUDA), min of N runs, for
  `torch.mm` and (CPU)
  oneDNN, which the engine uses on CPU; `dense_gemm_gflops` is the best of all, so ratios against it are
  conservative;
* `time`: forward (eval, no_grad) and training step (train mode, forward + backward of a sum-of-squares
  loss) of both engines on the same input in ONE process, alternating run by run (ours, MinkowskiEngine,
  ours, ...) so that both see the same machine state; min of N runs of wall time (`*_s`) and of process CPU
  time (`*_cpu_s`, robust to other jobs at 1 thread); every run builds a new sparse tensor, so the kernel
  maps are rebuilt each time (as in training) and their build time (`kernel_map_s`, from
  `CoordinateManager.map_seconds`) is part of `forward_s`;
* `mem`: peak memory of a training step, one fresh process per engine.  On CPU, `peak_mem_train_mb`: the
  extra resident memory of the FIRST step (VmHWM after the step minus the RSS just before it), one-off costs
  such as oneDNN's compiled kernels included; `peak_mem_train_live_mb`: the same for a SECOND step (VmHWM
  reset through /proc/self/clear_refs) in a process whose allocator returns freed blocks at once, i.e. the
  memory a steady training step holds at its peak.  tracemalloc cannot see torch allocations, and
  MinkowskiEngine keeps its maps in C++ vectors, so RSS is the only measure that covers both engines.  On
  CUDA: torch.cuda.max_memory_allocated during the (first) step.

Useful FLOPs = sum over convolutions of 2 * pairs * C_in * C_out (pairs include the centre offset).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def synthetic_scan(seed: int = 0, beams: int = 32, azimuths: int = 1084) -> np.ndarray:
    """Deterministic 32-beam scan of a street (ground, 4 walls, 6 car-like boxes): (beams*azimuths, 4)
    float32 [x, y, z, intensity 0..255].  Sensor 1.8 m above the ground, elevations -30.67..10.67 deg."""
    rng = np.random.default_rng(seed)
    elevation = np.deg2rad(np.linspace(-30.67, 10.67, beams))
    azimuth = np.deg2rad(np.arange(azimuths) * 360.0 / azimuths - 180.0 + 0.1 + seed)
    e, a = np.meshgrid(elevation, azimuth, indexing="ij")
    direction = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    origin = np.array([0.0, 0.0, 1.8])
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(direction[:, 2] < 0, -origin[2] / direction[:, 2], np.inf)
        for axis, pos in ((1, 10.0), (1, -8.0), (0, 45.0), (0, -60.0)):
            t = (pos - origin[axis]) / direction[:, axis]
            dist = np.minimum(dist, np.where(t > 0, t, np.inf))
        for cx, cy in ((8, 4), (-6, -4), (15, -4.5), (22, 4.5), (-15, 4.2), (-25, -4)):
            low = np.array([cx - 2.25, cy - 0.9, 0.0])
            high = np.array([cx + 2.25, cy + 0.9, 1.5])
            t1, t2 = (low - origin) / direction, (high - origin) / direction
            t_in = np.nanmax(np.minimum(t1, t2), 1)
            t_out = np.nanmin(np.maximum(t1, t2), 1)
            hit = (t_out >= t_in) & (t_in > 0) & (t_in < dist)
            dist = np.where(hit, t_in, dist)
    dist = dist + rng.normal(0.0, 0.01, dist.shape)
    points = origin + direction * dist[:, None]
    intensity = rng.uniform(0.0, 255.0, (len(points), 1))
    return np.concatenate([points, intensity], 1).astype(np.float32)


def make_input(batch: int, device: str, azimuths: int = 1084):
    """(features (N, 1) intensity/255, coords (N, 4) int32) of `batch` cylindrical 0.1 voxelised scans of
    32 beams x `azimuths` points."""
    import torch

    from cmcr_core.sparse import batch_coordinates, voxelize

    coords, feats = [], []
    for b in range(batch):
        scan = torch.from_numpy(synthetic_scan(seed=b, azimuths=azimuths))
        vox = voxelize(scan[:, :3], 0.1, cylindrical=True)
        coords.append(vox.coords)
        feats.append(scan[vox.representative, 3:4] / 255.0)
    return torch.cat(feats).to(device), batch_coordinates(coords).to(device)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _build(engine: str, device: str):
    import torch

    torch.manual_seed(0)
    if engine == "ours":
        from cmcr_core.models.minkunet import MinkUNet34C
        from cmcr_core.sparse import SparseTensor

        model = MinkUNet34C(1, 64).to(device)
        return model, lambda f, c: SparseTensor(f, c), lambda y: y.features
    sys.path.insert(0, str(HERE))
    from minkowski_reference import MERes16UNet34C, import_minkowski, minkowski_input

    if import_minkowski() is None:
        raise RuntimeError("MinkowskiEngine not importable")
    return MERes16UNet34C(1, 64).to(device), minkowski_input, lambda y: y.F


def useful_gflop(feats, coords, model=None) -> float:
    """2 * pairs * C_in * C_out summed over every convolution of one forward of `model` (default: the
    reference-size MinkUNet34C)."""
    import torch

    from cmcr_core.models.minkunet import MinkUNet34C
    from cmcr_core.sparse import SparseConv3d, SparseConvTranspose3d, SparseTensor

    model = MinkUNet34C(1, 64) if model is None else model
    model = model.to(feats.device).eval()
    total = [0.0]

    def hook(module, inputs, output):
        x = inputs[0]
        if module.is_pointwise:
            pairs = len(x)
        elif isinstance(module, SparseConvTranspose3d):
            pairs = x.manager.transposed_map(x.stride, module.kernel_size, module.stride)[0].num_pairs
        elif module.stride == 1:
            pairs = x.manager.submanifold_map(x.stride, module.kernel_size).num_pairs
        else:
            pairs = x.manager.strided_map(x.stride, module.kernel_size, module.stride)[0].num_pairs
        total[0] += 2.0 * pairs * module.in_channels * module.out_channels

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (SparseConv3d, SparseConvTranspose3d))]
    with torch.no_grad():
        model(SparseTensor(feats, coords))
    for handle in handles:
        handle.remove()
    return total[0] / 1e9


def worker_gemm(args) -> dict:
    """Dense GEMM rate (fp32 unless `args.dtype` names another torch dtype): torch.mm (MKL/cuBLAS) and, on
    CPU fp32, oneDNN (what the engine uses there)."""
    import torch

    from cmcr_core.sparse import gemm

    dtype = getattr(torch, getattr(args, "dtype", "float32"))
    rates: dict[str, float] = {}
    backends = {"mm": lambda a, b, out: torch.mm(a, b, out=out)}
    if gemm.use_onednn(torch.zeros(1, device=args.device, dtype=dtype), 256, 256):
        backends["onednn"] = lambda a, b, out: gemm.linear(a, b)
    shapes = [(2048, 2048, 2048), (20000, 256, 256)]
    if args.device.startswith("cuda"):  # 2048^3 is over in microseconds on a large GPU: launch-bound
        shapes.append((8192, 8192, 8192))
    for name, fn in backends.items():
        for m, k, n in shapes:
            a = torch.randn(m, k, device=args.device, dtype=dtype)
            b = torch.randn(k, n, device=args.device, dtype=dtype)
            out = torch.empty(m, n, device=args.device, dtype=dtype)
            best = float("inf")
            for _ in range(args.repeats + 2):
                _sync(args.device)
                start = time.perf_counter()
                fn(a, b, out)
                _sync(args.device)
                best = min(best, time.perf_counter() - start)
            rates[name] = max(rates.get(name, 0.0), 2.0 * m * k * n / best / 1e9)
    result = {f"dense_gemm_gflops_{name}": rate for name, rate in rates.items()}
    result["dense_gemm_gflops"] = max(rates.values())
    return result


def _timed(device: str, fn):
    """(fn()'s result, wall seconds, process CPU seconds), the device synchronised around the call."""
    _sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def worker_time(args) -> dict:
    """Forward and training-step times of one engine, or of both engines in one process, interleaved run by
    run (ours, MinkowskiEngine, ours, ...) so that both see the same machine state: on a shared machine the
    speed drifts by +-10 % over a minute, which separate processes would read as an engine difference."""
    import torch

    feats, coords = make_input(args.batch, args.device)
    engines = ["ours", "minkowski"] if args.engine == "both" else [args.engine]
    built = {engine: _build(engine, args.device) for engine in engines}
    best = {engine: {} for engine in engines}

    def keep(engine: str, key: str, value: float) -> None:
        best[engine][key] = min(best[engine].get(key, float("inf")), value)

    def forward(model, wrap, features_of):
        x = wrap(feats, coords)
        features_of(model(x))
        return x

    def train_step(model, wrap, features_of) -> None:
        features_of(model(wrap(feats, coords))).square().sum().backward()

    for model, _, _ in built.values():
        model.eval()
    with torch.no_grad():
        for round_ in range(args.repeats + 1):  # round 0 is a warm-up: its times are not kept
            for engine, parts in built.items():
                x, wall, cpu = _timed(args.device, lambda parts=parts: forward(*parts))
                if round_ > 0:
                    keep(engine, "forward_s", wall)
                    keep(engine, "forward_cpu_s", cpu)
                    if hasattr(x, "manager"):
                        keep(engine, "kernel_map_s", x.manager.map_seconds)
    for model, _, _ in built.values():
        model.train()
    for round_ in range(args.repeats + 1):
        for engine, parts in built.items():
            parts[0].zero_grad(set_to_none=True)  # outside the timed step
            _, wall, cpu = _timed(args.device, lambda parts=parts: train_step(*parts))
            if round_ > 0:
                keep(engine, "train_step_s", wall)
                keep(engine, "train_step_cpu_s", cpu)
    result: dict = {"voxels": int(coords.shape[0])}
    for engine in engines:
        prefix = "" if engine == "ours" else "minkowski_"
        result.update({prefix + key: value for key, value in best[engine].items()})
    if "ours" in engines:
        result["useful_gflop"] = useful_gflop(feats, coords)
    return result


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """The process's resident high-water mark (VmHWM), resettable through /proc/self/clear_refs."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker_mem(args) -> dict:
    """Extra memory of a training step, one engine, fresh process.

    Default: the FIRST step, with the default allocator (`peak_mem_train_mb`): one-off costs included
    (oneDNN's compiled kernels, allocator growth).  `--live`: the SECOND step (`peak_mem_train_live_mb`), the
    high-water mark reset after the first one, in a process started with glibc told to return freed blocks
    to the system (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, set by `run_worker`), so that RSS follows
    the memory the step really holds rather than what the allocator kept from the step before.
    """
    import gc

    import torch

    feats, coords = make_input(args.batch, args.device)
    model, wrap, features_of = _build(args.engine, args.device)
    model.train()
    cuda = args.device.startswith("cuda")
    key = "peak_mem_train_live_mb" if args.live else "peak_mem_train_mb"
    for step in range(2 if args.live else 1):
        model.zero_grad(set_to_none=True)
        gc.collect()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            if step > 0:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            base = _rss_bytes()
        features_of(model(wrap(feats, coords))).square().sum().backward()
        peak = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()
    return {key: (peak - base) / 2**20}


def run_worker(kind: str, engine: str, args, live: bool = False) -> dict | None:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(args.threads)
    if args.passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if live:  # glibc returns every freed block of >= 64 KiB at once: RSS follows live memory
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        env["MALLOC_TRIM_THRESHOLD_"] = "0"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--engine", engine,
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device,
           "--batch", str(args.batch)]
    cmd += (["--passive"] if args.passive else []) + (["--live"] if live else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        sys.stderr.write(f"[{kind}/{engine}] failed:\n{proc.stderr[-2000:]}\n")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-minkowski", action="store_true", help="skip MinkowskiEngine even if installed")
    parser.add_argument("--passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE for every worker (both engines): idle OpenMP threads "
                             "sleep instead of spinning; use on a machine whose cores are shared")
    parser.add_argument("--worker", choices=("gemm", "time", "mem"), help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=("ours", "minkowski", "both"), default="ours",
                        help=argparse.SUPPRESS)
    parser.add_argument("--live", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        fn = {"gemm": worker_gemm, "time": worker_time, "mem": worker_mem}[args.worker]
        sys.stdout.write(json.dumps(fn(args)) + "\n")
        return
    out: dict = {"device": args.device, "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
                 "omp_wait_policy": "PASSIVE" if args.passive else "default",
                 "load_avg_1min_start": os.getloadavg()[0]}
    out.update(run_worker("gemm", "ours", args) or {})
    use_me = not args.no_minkowski and not args.device.startswith("cuda")
    if use_me:
        sys.path.insert(0, str(HERE))
        from minkowski_reference import import_minkowski

        use_me = import_minkowski() is not None
    times = run_worker("time", "both" if use_me else "ours", args)
    if times is None:
        raise SystemExit("benchmark of the cmcr engine failed")
    out.update(times)
    out.update(run_worker("mem", "ours", args) or {})
    if not args.device.startswith("cuda"):
        out.update(run_worker("mem", "ours", args, live=True) or {})
    out["useful_gflops"] = out["useful_gflop"] / out["forward_s"]
    if "dense_gemm_gflops" in out:
        out["useful_gflops_over_dense"] = out["useful_gflops"] / out["dense_gemm_gflops"]
    out["kernel_map_share"] = out["kernel_map_s"] / out["forward_s"]
    if use_me:
        if "minkowski_forward_s" in out:
            out["forward_speedup_vs_minkowski"] = out["minkowski_forward_s"] / out["forward_s"]
            out["train_speedup_vs_minkowski"] = out["minkowski_train_step_s"] / out["train_step_s"]
            # CPU-time ratios: less sensitive to other jobs on a shared machine (exact only at 1 thread).
            out["forward_cpu_speedup_vs_minkowski"] = out["minkowski_forward_cpu_s"] / out["forward_cpu_s"]
            out["train_cpu_speedup_vs_minkowski"] = (out["minkowski_train_step_cpu_s"]
                                                     / out["train_step_cpu_s"])
        me_mem = {**(run_worker("mem", "minkowski", args) or {}),
                  **(run_worker("mem", "minkowski", args, live=True) or {})}
        for key, ratio_key in (("peak_mem_train_mb", "peak_mem_ratio_vs_minkowski"),
                               ("peak_mem_train_live_mb", "peak_mem_live_ratio_vs_minkowski")):
            if key in me_mem and key in out:
                out[f"minkowski_{key}"] = me_mem[key]
                out[ratio_key] = out[key] / me_mem[key]
    out["load_avg_1min_end"] = os.getloadavg()[0]
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
    sys.stdout.write(json.dumps(rounded) + "\n")


if __name__ == "__main__":
    main()
