"""Benchmark `cmcr prepare nuscenes`: fast vs full-resolution SLIC superpixels, and the whole prepare.

Writes a small synthetic world with full-size 1600x900 images (or uses --world), then, on the same
JPEGs and side by side, times SLidR's full-resolution SLIC against SLIC on the downscaled image and
scores both against the world's per-pixel truth with the achievable segmentation accuracy (ASA: the
fraction of pixels whose superpixel's majority truth class equals their own). Finally it runs the whole
prepare (default settings, one worker; the one-off devkit loading is timed apart as plan_s) and reports
samples/s and bytes per sample. Prints one JSON line.

    python benchmarks/prepare.py [--samples 3] [--scale 0.5] [--world DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cmcr_core.data.prepare_nuscenes import (
    DEFAULT_SUPERPIXEL_SCALE,
    PrepareOptions,
    plan_prepare,
    run_prepare,
)
from cmcr_core.data.superpixels import SlicParams, decode_jpeg, segment_scaled

VERSION = "v1.0-mini"


def achievable_segmentation_accuracy(superpixels: np.ndarray, truth: np.ndarray) -> float:
    """ASA of an (H, W) superpixel map against an (H, W) class map: Σ_s max_c |s ∩ c| / (H·W)."""
    classes = int(truth.max()) + 1
    joint = np.bincount(superpixels.astype(np.int64).ravel() * classes + truth.ravel(),
                        minlength=(int(superpixels.max()) + 1) * classes)
    return float(joint.reshape(-1, classes).max(axis=1).sum() / truth.size)


def time_superpixels(data: bytes, params: SlicParams) -> tuple[np.ndarray, float]:
    """Decode + SLIC + back to full size, as prepare does it; returns (labels, seconds)."""
    start = time.perf_counter()
    image, full_hw = decode_jpeg(data, params.scale)
    labels = segment_scaled(image, full_hw, params)
    return labels, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="keyframes in the generated world")
    parser.add_argument("--scale", type=float, default=DEFAULT_SUPERPIXEL_SCALE, help="fast SLIC scale")
    parser.add_argument("--world", type=Path, default=None, help="use this synthetic world instead")
    parser.add_argument("--keep", type=Path, default=None, help="write the world/prepared output here")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cmcr-bench-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        world = args.world
        if world is None:
            from cmcr_core.data.synthetic import write_nuscenes_world

            world = work / "world"
            write_nuscenes_world(world, scenes=1, samples_per_scene=args.samples, seed=0,
                                 image_size=(1600, 900), overwrite=True)
        frames = json.loads((world / "truth" / "index.json").read_text())["frames"]

        full, fast = SlicParams(scale=1.0), SlicParams(scale=args.scale)
        seconds = {"full": [], "fast": []}
        asa = {"full": [], "fast": []}
        segments = {"full": [], "fast": []}
        for frame in frames:
            data = (world / frame["image"]).read_bytes()
            truth = np.asarray(Image.open(world / frame["truth"]))
            # Alternate the two on the same image so machine load affects both alike.
            for name, params in (("full", full), ("fast", fast)):
                labels, elapsed = time_superpixels(data, params)
                seconds[name].append(elapsed)
                asa[name].append(achievable_segmentation_accuracy(labels, truth))
                segments[name].append(int(labels.max()) + 1)
        cameras_per_sample = 6
        per_sample = {k: float(np.sum(v)) / (len(frames) / cameras_per_sample) for k, v in seconds.items()}

        out = work / "prepared"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        plan = plan_prepare(world, VERSION, out, PrepareOptions(slic=fast))
        plan_seconds = time.perf_counter() - start  # mostly importing and loading the devkit, once per job
        start = time.perf_counter()
        report = run_prepare(plan, workers=1)
        prepare_seconds = time.perf_counter() - start
        shard_bytes = sum(p.stat().st_size for p in (out / "shards").glob("*.h5"))
        image_hw = list(np.asarray(Image.open(world / frames[0]["image"])).shape[:2])
        result = {
            "benchmark": "prepare",
            "samples": report.samples_written,
            "images": len(frames),
            "image_hw": image_hw,
            "fast_scale": args.scale,
            "superpixel_s_per_sample_full": round(per_sample["full"], 3),
            "superpixel_s_per_sample_fast": round(per_sample["fast"], 3),
            "superpixel_speedup": round(per_sample["full"] / per_sample["fast"], 2),
            "asa_full": round(float(np.mean(asa["full"])), 4),
            "asa_fast": round(float(np.mean(asa["fast"])), 4),
            "asa_delta_pp": round(100 * (float(np.mean(asa["fast"])) - float(np.mean(asa["full"]))), 2),
            "segments_per_image_full": round(float(np.mean(segments["full"])), 1),
            "segments_per_image_fast": round(float(np.mean(segments["fast"])), 1),
            "prepare_samples_per_s_per_worker": round(report.samples_written / prepare_seconds, 3),
            "prepare_s_per_sample": round(prepare_seconds / max(report.samples_written, 1), 3),
            "plan_s": round(plan_seconds, 2),
            "bytes_per_sample": int(shard_bytes / max(report.samples_written, 1)),
            "failures": len(report.failures),
        }
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
