"""The synthetic segmentation table (docs/finetune.md §6): does pretraining beat random initialisation?

Runs the whole protocol through the real `cmcr` commands, one torch thread per command, in WORK:

1. three synthetic worlds: the teacher's (seed 2, 10 scenes x 4 samples, 480x270), the pretraining world
   (seed 0, 10 x 10, 480x270) and the evaluation world (seed 1, 10 x 10, 320x180); no label of the
   pretraining or teacher world is ever seen by the student's evaluation, and the teacher never sees the
   other two worlds;
2. the semantic teacher (`recipes/semantic_teacher_synthetic.yaml`, 300 steps) on the teacher world;
3. pretraining (300 steps each) of PPKT, SLidR and CMCR on the pretraining world, each from a randomly
   initialised ResNet-18 and from the semantic teacher;
4. linear probing (`recipes/probe_synthetic.yaml`) and 1 %-style fine-tuning
   (`recipes/finetune_synthetic.yaml`) of each checkpoint and of random initialisation, 3 seeds each, on
   the evaluation world.

CMCR's recipe feeds intensity / 255 (the published CMCR setting) where PPKT/SLidR feed raw intensity, so
its checkpoints are evaluated with `data.intensity_scale=1/255` and compared with a random initialisation
evaluated the same way (row "random init, intensity / 255"). CMCR is pretrained on cylindrical voxels here
so that the voxelisation matches the fine-tuning recipes, with MIM on every crop and 2048 occupancy queries
(the published loss settings, not the CPU cost knobs of recipes/cmcr_synthetic.yaml).

Every step is skipped when its output exists, so an interrupted run continues. Prints one JSON line per
row and a Markdown table.

    python benchmarks/synthetic_segmentation.py --work /tmp/segtable [--only random,ppkt_sem300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
INTENSITY_255 = "data.intensity_scale=0.00392156862745098"

# row name -> (pretraining recipe or None for random init, semantic teacher?, label)
ROWS = {
    "random": (None, False, "random init"),
    "random255": (None, False, "random init, intensity / 255"),
    "ppkt_rand300": ("ppkt_synthetic", False, "PPKT, random ResNet-18 teacher"),
    "ppkt_sem300": ("ppkt_synthetic", True, "PPKT, semantic teacher"),
    "slidr300": ("slidr_synthetic", False, "SLidR, random ResNet-18 teacher"),
    "slidr_sem300": ("slidr_synthetic", True, "SLidR, semantic teacher"),
    "cmcr_rand300": ("cmcr_synthetic", False, "CMCR, random ResNet-18 teacher"),
    "cmcr_sem300": ("cmcr_synthetic", True, "CMCR, semantic teacher"),
}
WORLDS = {"world_teacher": (2, 4, "480x270"), "world_pre": (0, 10, "480x270"),
          "world_eval": (1, 10, "320x180")}


def cmcr(work: Path, log: str, *args: str) -> None:
    """Run one `cmcr` command in WORK with one thread; its output goes to WORK/runs/LOG.log."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    (work / "runs").mkdir(parents=True, exist_ok=True)
    with open(work / "runs" / f"{log}.log", "w") as out:
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "cmcr_cli", *args], cwd=work, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"`cmcr {' '.join(args)}` failed with exit code {code}; see {work}/runs/{log}.log")
    print(f"  {log}: {time.perf_counter() - start:.0f} s", file=sys.stderr)


def ensure_data(work: Path) -> None:
    for name, (seed, samples, size) in WORLDS.items():
        if not (work / name / "v1.0-mini" / "scene.json").exists():
            cmcr(work, name, "prepare", "synthetic", "--out", name, "--seed", str(seed), "--scenes", "10",
                 "--samples-per-scene", str(samples), "--image-size", size)
    for prep, world, sp in (("prep_pre", "world_pre", "slic"), ("prep_eval", "world_eval", "none")):
        if not list((work / prep).glob("index-*.json")):
            cmcr(work, prep, "prepare", "nuscenes", "--dataroot", world, "--version", "v1.0-mini",
                 "--out", prep, "--superpixels", sp)
    if not (work / "runs" / "teacher" / "teacher.pt").exists():
        cmcr(work, "teacher", "teacher", "train",
             "--recipe", str(RECIPES / "semantic_teacher_synthetic.yaml"), "--dataroot", "world_teacher",
             "--out", "runs/teacher")


def ensure_row(work: Path, row: str) -> None:
    recipe, semantic, _ = ROWS[row]
    extra: list[str] = []
    if recipe is not None:
        run = work / "runs" / row
        if not (run / "checkpoint.pt").exists() or _step(run) < 300:
            sets = ["train.max_steps=300", "train.checkpoint_every=100", "train.log_every=25"]
            if semantic:
                sets.append("teacher.weights=runs/teacher/teacher.pt")
            if recipe == "cmcr_synthetic":  # the full CMCR losses (not the recipe's CPU cost knobs)
                sets += ["data.cylindrical=true", "loss.mim_images=0", "loss.occupancy_queries=2048"]
            args = ["pretrain", "--recipe", str(RECIPES / f"{recipe}.yaml"), "--data", "prep_pre",
                    "--out", f"runs/{row}"]
            if (run / "checkpoint.pt").exists():
                args.append("--resume")
            cmcr(work, row, *args, *sum((["--set", s] for s in sets), []))
        extra = ["--weights", f"runs/{row}/checkpoint.pt"]
    if recipe == "cmcr_synthetic" or row == "random255":
        extra += ["--set", INTENSITY_255]
    for mode, prefix in (("probe", "probe"), ("finetune", "ft")):
        if not (work / "runs" / f"{prefix}_{row}" / "metrics.json").exists():
            cmcr(work, f"{prefix}_{row}", mode, "--recipe", str(RECIPES / f"{mode}_synthetic.yaml"),
                 "--data", "prep_eval", "--out", f"runs/{prefix}_{row}", "--seeds", "3", *extra)


def _step(run: Path) -> int:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    return max((json.loads(x).get("step", 0) for x in lines if x.strip()), default=0)


def summary(work: Path, row: str) -> dict:
    record: dict = {"row": row, "label": ROWS[row][2]}
    for prefix in ("probe", "ft"):
        path = work / "runs" / f"{prefix}_{row}" / "metrics.json"
        if path.exists():
            metrics = json.loads(path.read_text())
            record[prefix] = {"mean": 100 * metrics["miou"]["mean"], "std": 100 * metrics["miou"]["std"],
                              "per_seed": [100 * v for v in metrics["per_seed_miou"]]}
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="Working folder (reused: finished steps skip).")
    parser.add_argument("--only", default=",".join(ROWS), help="Comma-separated rows: " + ", ".join(ROWS))
    parser.add_argument("--summary-only", action="store_true", help="Only print what is already measured.")
    args = parser.parse_args()
    rows = [r for r in args.only.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        ensure_data(args.work)
        for row in rows:
            ensure_row(args.work, row)
    records = [summary(args.work, r) for r in rows]
    for record in records:
        print(json.dumps(record))
    print("\n| Initialisation | Probe mIoU (%) | 1 %-style fine-tuning mIoU (%) |\n|---|---|---|")
    for record in records:
        cells = [f"{record[p]['mean']:.2f} ± {record[p]['std']:.2f}" if p in record else "—"
                 for p in ("probe", "ft")]
        print(f"| {record['label']} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
