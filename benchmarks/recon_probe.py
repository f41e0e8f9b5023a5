"""Linear probe of ReCon encoders on the synthetic objects: pretrained vs random initialisation, via the CLI.

Runs the real commands, one process each (the same code path as a user):

1. ``cmcr prepare objects --synthetic`` (8 classes; 16 train + 16 test objects per class by default);
2. per seed s: ``cmcr pretrain --recipe recipes/recon_synthetic.yaml --set train.seed=s``;
3. per seed s: ``cmcr probe --recipe recipes/recon_probe_synthetic.yaml --set train.seed=s`` without
   weights (random encoder drawn from seed s) and with ``--weights`` of pretraining seed s;

then prints one JSON object: per-seed and mean +- std (population std over seeds) overall accuracy and
voting mean for both encoders, the pretraining losses (first and last logged step), and the wall time.

Usage:

    python benchmarks/recon_probe.py --threads 1 --seeds 0 1 2 --work /tmp/recon_probe
    python benchmarks/recon_probe.py --probe-set eval.probe_features=tokens   # patch tokens only

Reuses the data and pretraining run folders already in ``--work`` (delete them to start over).
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

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def cmcr(args: list[str], threads: int) -> None:
    """Run one ``cmcr`` command in a fresh process with ``threads`` intra-op threads; raise on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "cmcr_cli", *args], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"cmcr {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def losses(run: Path) -> dict[str, list[float]]:
    """First and last logged value of each pretraining loss term."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    terms = [k for k in ("rec", "img", "text", "smc") if k in records[0]]
    return {k: [round(records[0][k], 4), round(records[-1][k], 4)] for k in terms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/recon_probe_benchmark"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-per-class", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=None, help="pretraining epochs (recipe: 30)")
    parser.add_argument("--pretrain-set", nargs="*", default=[], help="extra --set items for cmcr pretrain")
    parser.add_argument("--probe-set", nargs="*", default=[], help="extra --set items for cmcr probe")
    args = parser.parse_args()
    work, threads = args.work, args.threads
    if args.epochs is not None:
        args.pretrain_set.append(f"train.epochs={args.epochs}")
    start = time.perf_counter()

    objects = work / "objects"
    if not (objects / "teacher_targets.npz").is_file():
        cmcr(
            [
                "prepare", "objects", "--synthetic", "--out", str(objects), "--image-size", "32",
                "--train-per-class", str(args.train_per_class), "--test-per-class", str(args.test_per_class),
                "--points", "1024",
            ],
            threads,
        )  # fmt: skip
    probe = ["probe", "--recipe", str(RECIPES / "recon_probe_synthetic.yaml")]
    probe += ["--data", str(objects / "modelnet40_normal_resampled")]
    rows: dict[str, list[dict]] = {"random": [], "pretrained": []}
    pretraining = {}
    for seed in args.seeds:
        run = work / f"pretrain_s{seed}"
        if not (run / "checkpoint.pt").is_file():
            pre = ["pretrain", "--recipe", str(RECIPES / "recon_synthetic.yaml")]
            pre += ["--data", str(objects / "ShapeNet55-34"), "--out", str(run)]
            pre += sets([f"data.targets={objects / 'teacher_targets.npz'}", f"train.seed={seed}"])
            cmcr(pre + sets(args.pretrain_set), threads)
        pretraining[str(seed)] = losses(run)
        for kind, weights in (("random", []), ("pretrained", ["--weights", str(run / "checkpoint.pt")])):
            out = work / f"probe_{kind}_s{seed}"
            probe_sets = sets([f"train.seed={seed}", *args.probe_set])
            cmcr(probe + weights + ["--out", str(out)] + probe_sets, threads)
            metrics = json.loads((out / "metrics.json").read_text())
            rows[kind].append({"seed": seed, **{k: metrics[k] for k in ("overall_accuracy", "voting_mean")}})
            rows[kind][-1]["train_accuracy"] = metrics["train_accuracy"]
    report = {
        "setup": {
            "objects": f"8 classes, {8 * args.train_per_class} train / {8 * args.test_per_class} test",
            "pretrain": "recipes/recon_synthetic.yaml " + " ".join(args.pretrain_set),
            "probe": "recipes/recon_probe_synthetic.yaml " + " ".join(args.probe_set),
            "seeds": args.seeds,
            "seed_meaning": "random: encoder initialisation seed; pretrained: pretraining seed (train.seed)",
            "threads": threads,
        },
        **{
            kind: {
                "overall_accuracy": mean_std([r["overall_accuracy"] for r in per_seed]),
                "voting_mean": mean_std([r["voting_mean"] for r in per_seed]),
                "per_seed": per_seed,
            }
            for kind, per_seed in rows.items()
        },
        "pretraining_losses_first_last": pretraining,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
