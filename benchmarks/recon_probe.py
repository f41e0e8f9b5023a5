"""ReCon pretraining vs random initialisation on synthetic object *scans*, through the real commands.

The downstream task has headroom: 12 confusable classes (chair / stool, table / desk / bench, box / cabinet /
shelf, cylinder / lamp / cone, sphere) seen as ScanObjectNN-hardest-like scans (one viewpoint with
self-occlusion, occluders, a shifted crop box, background points, noise). Pretraining uses clean, complete
objects of the same classes that the downstream sets never contain (as ShapeNet is not ScanObjectNN).

Runs, one process each (the same code path as a user):

1. ``cmcr prepare objects --synthetic --classes confusable --scans --pretrain-per-class P`` (+ stand-in
   teacher targets and their class text vectors);
2. per seed s: ``cmcr pretrain --recipe recipes/recon_synthetic.yaml --set train.seed=s``;
3. per seed s, for the random encoder of seed s and for pretraining s, on the scans (ScanObjectNN layout,
   hardest variant, clouds as stored):
   * probe: ``cmcr probe --recipe recipes/recon_probe_synthetic.yaml`` (LinearSVC on frozen features);
   * fine-tuning: ``cmcr finetune --recipe recipes/recon_finetune_synthetic.yaml`` (``--ft-epochs``);
   * few-shot: ``cmcr probe --recipe recipes/recon_fewshot_synthetic.yaml`` (a LinearSVC per fold; ``cmcr
     finetune`` with ``--fewshot-mode finetune``): 5-way 10-shot, 10 folds, 10 queries per class, the same
     folds for every run;
   * zero-shot: ``cmcr zeroshot --objects --recipe recipes/recon_zeroshot_synthetic.yaml`` with the
     class text vectors the pretraining regressed onto;

then prints one JSON object (per seed, mean +- population std over seeds, the pretraining losses, CPU and
wall time) and the Markdown table of docs/recon.md. Reuses every finished step found in ``--work``.

Usage (the run of docs/recon.md, about half an hour on one thread):

    python benchmarks/recon_probe.py --threads 1 --seeds 0 1 2 --epochs 20 --ft-epochs 10 \
        --fewshot-mode probe --work runs/recon_benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
SCANS = ["data.dataset=scanobjectnn", "data.variant=hardest", "data.normalize=false"]
PROTOCOLS = ("probe", "finetune", "fewshot", "zeroshot")


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


def downstream(protocol: str, objects: Path, out: Path, seed: int, weights: Path | None,
               args: argparse.Namespace) -> list[str]:
    """The command of one protocol run (seed ``seed``; ``weights`` None = the random encoder of the seed)."""
    data = ["--data", str(objects / "ScanObjectNN" / "h5_files"), "--out", str(out)]
    init = ["--weights", str(weights)] if weights is not None else []
    if protocol == "probe":
        recipe, command, extra = "recon_probe_synthetic.yaml", "probe", SCANS
    elif protocol == "finetune":
        recipe, command = "recon_finetune_synthetic.yaml", "finetune"
        extra = ["data.variant=hardest", f"train.epochs={args.ft_epochs}"]
    elif protocol == "fewshot":
        recipe, command = "recon_fewshot_synthetic.yaml", args.fewshot_mode
        extra = [*SCANS, "fewshot.queries=10", "fewshot.seed=0"]
    else:
        recipe, command, extra = "recon_zeroshot_synthetic.yaml", "zeroshot", SCANS
        init += ["--objects", "--text-embeddings", str(objects / "teacher_targets.class_text.npy")]
    return [command, "--recipe", str(RECIPES / recipe), *data, *init, *sets([*extra, f"train.seed={seed}"])]


def table(report: dict) -> str:
    """The Markdown table of docs/recon.md: one row per protocol, random vs pretrained, mean ± std."""
    names = {"probe": "linear probe (LinearSVC, frozen)", "finetune": "fine-tuning",
             "fewshot": "few-shot 5-way 10-shot (10 folds)", "zeroshot": "zero-shot (text query)"}
    lines = ["| Protocol (OA on the test scans) | random init | ReCon pretrained "
             "| per seed: random / pretrained |", "|---|---|---|---|"]
    for protocol in PROTOCOLS:
        cells = []
        for kind in ("random", "pretrained"):
            m = report[kind][protocol]["overall_accuracy"]
            cells.append(f"{m['mean']:.3f} ± {m['std']:.3f}")
        pairs = zip(report["random"][protocol]["per_seed"], report["pretrained"][protocol]["per_seed"],
                    strict=True)
        per_seed = ", ".join(f"{r['overall_accuracy']:.3f} / {p['overall_accuracy']:.3f}" for r, p in pairs)
        lines.append(f"| {names[protocol]} | {cells[0]} | {cells[1]} | {per_seed} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/recon_benchmark"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain-per-class", type=int, default=40)
    parser.add_argument("--train-per-class", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=None, help="pretraining epochs (recipe: 30)")
    parser.add_argument("--ft-epochs", type=int, default=10, help="fine-tuning epochs (recipe: 10)")
    parser.add_argument("--fewshot-mode", choices=("finetune", "probe"), default="probe",
                        help="probe: a LinearSVC per fold (seconds); finetune: every fold fine-tuned")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--pretrain-set", nargs="*", default=[], help="extra --set items for cmcr pretrain")
    args = parser.parse_args()
    work, threads = args.work.resolve(), args.threads
    if args.epochs is not None:
        args.pretrain_set.append(f"train.epochs={args.epochs}")
    start = time.perf_counter()

    objects = work / "objects"
    if not (objects / "teacher_targets.class_text.npy").is_file():
        cmcr(["prepare", "objects", "--synthetic", "--out", str(objects), "--image-size", "32", "--classes",
              "confusable", "--scans", "--pretrain-per-class", str(args.pretrain_per_class),
              "--train-per-class", str(args.train_per_class), "--test-per-class", str(args.test_per_class),
              "--points", "1024"], threads)
    rows: dict[str, dict[str, list[dict]]] = {k: {p: [] for p in args.protocols}
                                              for k in ("random", "pretrained")}
    pretraining = {}
    for seed in args.seeds:
        run = work / f"pretrain_s{seed}"
        if not (run / "checkpoint.pt").is_file():
            pre = ["pretrain", "--recipe", str(RECIPES / "recon_synthetic.yaml"), "--data",
                   str(objects / "ShapeNet55-34"), "--out", str(run)]
            pre += sets([f"data.targets={objects / 'teacher_targets.npz'}", f"train.seed={seed}"])
            cmcr(pre + sets(args.pretrain_set), threads)
        pretraining[str(seed)] = losses(run)
        for kind, weights in (("random", None), ("pretrained", run / "checkpoint.pt")):
            for protocol in args.protocols:
                out = work / f"{protocol}_{kind}_s{seed}"
                if not (out / "metrics.json").is_file():
                    cmcr(downstream(protocol, objects, out, seed, weights, args), threads)
                metrics = json.loads((out / "metrics.json").read_text())
                value = metrics["overall_accuracy"]
                value = value["mean"] if isinstance(value, dict) else value  # a few-shot run: over folds
                rows[kind][protocol].append({"seed": seed, "overall_accuracy": value})
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "setup": {
            "objects": f"12 confusable classes; pretraining {12 * args.pretrain_per_class} clean objects; "
                       f"downstream scans {12 * args.train_per_class} train / "
                       f"{12 * args.test_per_class} test",
            "pretrain": "recipes/recon_synthetic.yaml " + " ".join(args.pretrain_set),
            "finetune_epochs": args.ft_epochs, "fewshot_mode": args.fewshot_mode, "seeds": args.seeds,
            "seed_meaning": "random: encoder initialisation seed; pretrained: pretraining seed (train.seed); "
                            "the downstream run uses the same train.seed",
            "threads": threads,
        },
        **{kind: {p: {"overall_accuracy": mean_std([r["overall_accuracy"] for r in per]), "per_seed": per}
                  for p, per in by_protocol.items()} for kind, by_protocol in rows.items()},
        "pretraining_losses_first_last": pretraining,
        "cpu_s_children": round(usage.ru_utime + usage.ru_stime, 1),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report, indent=2))
    if set(args.protocols) == set(PROTOCOLS):
        print(table(report))


if __name__ == "__main__":
    main()
