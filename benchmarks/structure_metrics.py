"""Benchmark the structure metrics at the paper's analysis size: 80,000 × 512 features (docs/analysis.md).

Usage:

    python benchmarks/structure_metrics.py                      # 80k × 512, 16 classes, 2 threads
    python benchmarks/structure_metrics.py --n 20000 --block-size 2048 --threads 1

Prints ONE JSON line with:

* ``uniformity_s``: exact U over all N(N−1)/2 pairs (streamed blocks, fp32 products, float64 running
  log-sum-exp), and ``U`` next to ``U_large_d_limit`` = 4 − 8/D (features are i.i.d. Gaussian, i.e.
  uniform directions, so U must come out close to it);
* ``tolerance_s``, ``gap_s``, ``alignment_s``: the O(N·D) metrics (16 balanced classes; a second random
  set as the paired "2D" features), the minimum over ``--repeats`` runs;
* ``peak_rss_growth_mb``: growth of the process's peak resident set during the uniformity call, above
  the resident set with both feature sets allocated (Linux ``/proc/self/clear_refs`` resets the peak
  first; where that is not allowed, the growth over the peak so far is reported and flagged);
* ``gemm_gflops``: the dense fp32 ``torch.mm`` rate measured just before, on one uniformity block
  (block × D) · (D × block); ``uniformity_gemm_s`` = the N(N+B)·D/2 multiply-adds of the streamed blocks
  at that rate, and ``uniformity_over_gemm`` = uniformity_s / uniformity_gemm_s, the overhead of the
  exp/sum passes (a ratio from one run, so less sensitive to the machine's load than the seconds);
* ``features_mb``, ``threads``, ``load_avg_1m`` (other jobs on the machine slow the timings down).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from cmcr_core.eval.structure import alignment, modality_gap, tolerance, uniformity


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=80_000, help="number of features")
    parser.add_argument("--d", type=int, default=512, help="feature size")
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each O(N·D) metric (min is kept)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(args.seed)
    x3 = torch.randn(args.n, args.d, generator=g)
    x2 = torch.randn(args.n, args.d, generator=g)
    labels = torch.arange(args.n) % args.classes

    side = min(args.block_size, args.n)
    a, b, out = x3[:side], x2[:side], torch.empty(side, side)
    torch.mm(a, b.t(), out=out)  # warm-up
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b.t(), out=out)
    gemm_flops_per_s = 2.0 * side * side * args.d * reps / (time.perf_counter() - t0)
    del a, b, out
    # Upper-triangular blocks, diagonal blocks included: ≈ N·(N + B)/2 products of length D.
    uniformity_gemm_s = 2.0 * args.n * (args.n + side) / 2.0 * args.d / gemm_flops_per_s

    exact_peak = _reset_peak_rss()
    base_kb = _status_kb("VmRSS") if exact_peak else _status_kb("VmHWM")
    t0 = time.perf_counter()
    u = uniformity(x3, block_size=args.block_size)
    uniformity_s = time.perf_counter() - t0
    growth_mb = (_status_kb("VmHWM") - base_kb) / 1024

    def best_of(fn):
        times = []
        for _ in range(max(args.repeats, 1)):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return value, min(times)

    tol, tolerance_s = best_of(lambda: tolerance(x3, labels, num_classes=args.classes))
    gap, gap_s = best_of(lambda: modality_gap(x3, x2))
    align, alignment_s = best_of(lambda: alignment(x3, x2))

    print(
        json.dumps(
            {
                "n": args.n,
                "d": args.d,
                "block_size": args.block_size,
                "threads": args.threads,
                "uniformity_s": round(uniformity_s, 3),
                "U": round(u, 6),
                "gemm_gflops": round(gemm_flops_per_s / 1e9, 1),
                "uniformity_gemm_s": round(uniformity_gemm_s, 3),
                "uniformity_over_gemm": round(uniformity_s / uniformity_gemm_s, 3),
                "U_large_d_limit": round(4.0 - 8.0 / args.d, 6),
                "tolerance_s": round(tolerance_s, 4),
                "T": round(tol, 6),
                "gap_s": round(gap_s, 4),
                "G": round(gap, 6),
                "alignment_s": round(alignment_s, 4),
                "A": round(align, 6),
                "peak_rss_growth_mb": round(growth_mb, 1),
                "peak_rss_exact": exact_peak,
                "features_mb": round(x3.numel() * x3.element_size() / 2**20, 1),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
