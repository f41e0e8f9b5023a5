"""CMCR ablation: what each part of CMCR buys, next to PPKT and SLidR (docs/cmcr.md, "What each part buys").

Everything runs through the real `cmcr` commands, in WORK/<family>/, and every finished step is skipped
on a rerun, so an interrupted benchmark continues where it stopped:

1. three synthetic worlds of the family: the teacher's world, the pretraining world and the evaluation
   world (their seeds are used by no test, benchmark or demo; the ``dev`` family is the one settings were
   chosen on, ``heldout`` is only ever measured);
2. the semantic teacher (`recipes/semantic_teacher_synthetic.yaml`) on the teacher world;
3. for every variant and pretraining seed: pretraining on the pretraining world (same teacher, steps and
   batch for every variant), then linear probing (`recipes/probe_synthetic.yaml`, every mini_train scan
   labelled) and one-labelled-scene fine-tuning (`recipes/finetune_synthetic.yaml`) on the evaluation
   world, both scored on its whole mini_val split;
4. the table: mIoU mean ± std over pretraining seeds (each seed's value is the mean over its probe or
   fine-tuning seeds), and each variant's difference to PPKT and to the full method with its standard
   error; a difference "exceeds the seed spread" when it is larger than twice that standard error.

Variants are recipes plus `--set` overrides (``VARIANTS``). ``--quick`` runs a tiny version (small worlds,
a random teacher, 2 steps, 2 variants) that only checks that the benchmark works.

    python benchmarks/cmcr_ablation.py --work /tmp/ablation --family dev --seeds 0 1 2 --jobs 2
    python benchmarks/cmcr_ablation.py --work /tmp/ablation --family heldout --variants ppkt,cmcr_full
    python benchmarks/cmcr_ablation.py --work /tmp/ablation --summary-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean, stdev

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
SETTINGS_JSON = "settings.json"

# World seeds of each family: (teacher world, pretraining world, evaluation world).
FAMILIES = {"dev": (101, 102, 103), "heldout": (201, 202, 203)}


@dataclass(frozen=True)
class Plan:
    """Everything that decides the numbers of one family's table (stored in WORK/<family>/settings.json)."""

    quick: bool
    image_size: str  # WxH of every world's cameras
    teacher_world: tuple[int, int]  # scenes, keyframes per scene
    pretrain_world: tuple[int, int]
    eval_world: tuple[int, int]
    teacher_steps: int  # 0: no semantic teacher, a random ResNet-18 instead
    steps: int
    batch: int
    probe_seeds: int
    probe_epochs: int
    probe_lr: float
    finetune_seeds: int
    finetune_epochs: int
    finetune_label_fraction: float


FULL = Plan(quick=False, image_size="320x180", teacher_world=(10, 3), pretrain_world=(10, 4),
            eval_world=(10, 4), teacher_steps=150, steps=100, batch=2, probe_seeds=1, probe_epochs=3,
            probe_lr=0.5, finetune_seeds=2, finetune_epochs=30, finetune_label_fraction=0.01)
# 5 scenes: both mini_val scenes and 3 mini_train ones; label fraction 0.1 (skip 3) keeps one.
QUICK = Plan(quick=True, image_size="160x90", teacher_world=(5, 1), pretrain_world=(5, 1), eval_world=(5, 1),
             teacher_steps=0, steps=2, batch=1, probe_seeds=1, probe_epochs=1, probe_lr=0.5, finetune_seeds=1,
             finetune_epochs=1, finetune_label_fraction=0.1)


@dataclass(frozen=True)
class Variant:
    recipe: str  # file name in recipes/ without .yaml; "" = random initialisation (no pretraining)
    sets: tuple[str, ...]
    label: str
    group: str


# CMCR's extra terms at the published weights, and all of them off.
TERMS = {"orthogonality": "0.1", "commitment": "1.0", "code_matching": "1.0", "mim": "1.0",
         "occupancy": "1.0", "intensity": "1.0"}
TERMS_OFF = tuple(f"loss.{term}=0.0" for term in TERMS)
# PPKT's base (recipes/ppkt_synthetic.yaml): SGD 0.05 with a cosine schedule, raw intensity, DropCuboids.
PPKT_OPTIM = ("optim.name=sgd", "optim.lr=0.05", "optim.schedule=cosine", "optim.weight_decay=0.0001")
PPKT_INPUT = ("data.intensity_scale=1.0",
              "data.mixed_transforms=[drop_cuboids, resized_crop, flip_horizontal]")
CMCR_OPTIM = ("optim.name=adamw", "optim.lr=0.001", "optim.schedule=constant", "optim.weight_decay=0.01")
INTENSITY_255 = ("data.intensity_scale=0.00392156862745098",)
NO_RECALIBRATION = ("student.recalibrate_bn_batches=0",)
# CMCR on PPKT's base with every extra term off: the common base of the add-one / remove-one rows.
BASE = (*PPKT_OPTIM, *PPKT_INPUT, "data.mim_mask=none", *TERMS_OFF)
MASKED = ("data.mim_mask=pixel_keep_pairs",)


def _with(*terms: str) -> tuple[str, ...]:
    sets = [f"loss.{t}={TERMS[t]}" for t in terms]
    return (*sets, *(MASKED if "mim" in terms else ()))


# Departures from the reference that make each CMCR term do measurable work (docs/cmcr.md), as overrides.
FIXES = {
    "contrast_images": ("loss.contrast_images=unmasked",),  # the masked crops feed MIM only
    "dead_code_reset": ("loss.dead_code_reset=true", "loss.dead_code_steps=5"),
    "code_matching_temperature": ("loss.code_matching_temperature=0.1",),
    "orthogonality_per_voxel": ("loss.orthogonality_per_voxel=true",),  # weight: FIXED_ORTHOGONALITY
}
# The per-voxel orthogonality is ~V/64² times smaller than the reference's sum (V ≈ 26k voxels per batch
# here, ≈ 50k per GPU in the published setting): weight 1 is about the published strength.
FIXED_ORTHOGONALITY = "loss.orthogonality=1.0"


def _fixed(without_fix: str = "", without_term: str = "") -> tuple[str, ...]:
    """Full CMCR on the common base with every fix, less one fix or one term."""
    sets = [*BASE, *_with(*(t for t in TERMS if t != without_term))]
    for fix, values in FIXES.items():
        if fix != without_fix:
            sets += values
    if without_fix != "orthogonality_per_voxel" and without_term != "orthogonality":
        sets.append(FIXED_ORTHOGONALITY)
    return tuple(sets)


FIXED = _fixed()
# The published settings (AdamW, intensity / 255, masked crops, no DropCuboids, every term) plus every fix.
PUBLISHED_FIXED = (*(v for values in FIXES.values() for v in values), FIXED_ORTHOGONALITY)


VARIANTS: dict[str, Variant] = {
    "random_init": Variant("", (), "random initialisation", "reference"),
    "ppkt": Variant("ppkt_synthetic", (), "PPKT", "reference"),
    "slidr": Variant("slidr_synthetic", (), "SLidR", "reference"),
    "ppkt_adamw": Variant("ppkt_synthetic", CMCR_OPTIM, "PPKT with CMCR's optimiser (AdamW 1e-3, constant)",
                          "base"),
    "ppkt_255": Variant("ppkt_synthetic", INTENSITY_255, "PPKT with CMCR's input scaling (intensity / 255)",
                        "scale"),
    "ppkt_norecal": Variant("ppkt_synthetic", NO_RECALIBRATION,
                            "PPKT, batch-norm statistics not re-estimated", "scale"),
    "ppkt_255_norecal": Variant("ppkt_synthetic", (*INTENSITY_255, *NO_RECALIBRATION),
                                "PPKT, intensity / 255, batch-norm statistics not re-estimated", "scale"),
    "cmcr_published": Variant("cmcr_published_synthetic", (), "CMCR as published (tiny)", "reference"),
    "cmcr_published_nce": Variant("cmcr_published_synthetic", TERMS_OFF,
                                  "CMCR as published, every extra term at 0", "base"),
    "cmcr_published_unmasked": Variant("cmcr_published_synthetic", ("data.mim_mask=none",),
                                       "CMCR as published, mim_mask none", "base"),
    "cmcr_published_sgd": Variant("cmcr_published_synthetic", PPKT_OPTIM,
                                  "CMCR as published on PPKT's optimiser", "path"),
    "cmcr_published_ppkt_base": Variant("cmcr_published_synthetic", (*PPKT_OPTIM, "data.intensity_scale=1.0"),
                                        "CMCR as published on PPKT's optimiser and raw intensity", "path"),
    "base": Variant("cmcr_published_synthetic", BASE, "common base: CMCR on PPKT's base, extra terms at 0",
                    "base"),
    **{f"base+{t}": Variant("cmcr_published_synthetic", (*BASE, *_with(t)), f"common base + {t}", "add")
       for t in TERMS},
    "cmcr_full": Variant("cmcr_published_synthetic", (*BASE, *_with(*TERMS)),
                         "common base + every term (full CMCR on PPKT's base)", "reference"),
    **{f"full-{t}": Variant("cmcr_published_synthetic", (*BASE, *_with(*(u for u in TERMS if u != t))),
                            f"full CMCR on PPKT's base without {t}", "remove") for t in TERMS},
    "full_unmasked": Variant("cmcr_published_synthetic", (*BASE, *_with(*TERMS), *FIXES["contrast_images"]),
                             "full CMCR on PPKT's base, contrast on the unmasked crops", "path"),
    "fixed": Variant("cmcr_published_synthetic", FIXED, "full CMCR on PPKT's base with every fix", "fix"),
    "published_fixed": Variant("cmcr_published_synthetic", PUBLISHED_FIXED,
                               "CMCR as published with every fix", "fix"),
    "fixed_mim3d": Variant("cmcr_published_synthetic", (*FIXED, "loss.mim_point_codes=true"),
                           "full CMCR with every fix, MIM fed the 3D points' codes", "fix"),
    "fixed_adamw": Variant("cmcr_published_synthetic", (*FIXED, *CMCR_OPTIM),
                           "full CMCR with every fix, CMCR's optimiser", "fix"),
    **{f"fixed-{f}": Variant("cmcr_published_synthetic", _fixed(without_fix=f), f"every fix but {f}", "fix")
       for f in FIXES},
    **{f"fixed-{t}": Variant("cmcr_published_synthetic", _fixed(without_term=t), f"every fix, without {t}",
                             "fix") for t in TERMS},
}
# The recommended CMCR (recipes/cmcr_synthetic.yaml) less one fix: each fix set back to the reference's.
REFERENCE_OF_FIX = {
    "contrast_images": ("loss.contrast_images=masked",),
    "dead_code_reset": ("loss.dead_code_reset=false",),
    "code_matching_temperature": ("loss.code_matching_temperature=1.0",),
    "orthogonality_per_voxel": ("loss.orthogonality_per_voxel=false", "loss.orthogonality=0.1"),
}
RECOMMENDED_WEIGHTS = {**TERMS, "orthogonality": "1.0"}  # per-voxel orthogonality at weight 1
NO_MASKS = ("data.mim_mask=none",)  # without MIM nothing needs masked crops


def _recommended_terms(*terms: str) -> tuple[str, ...]:
    """The recommended recipe with only ``terms`` among CMCR's extra terms (at its weights)."""
    sets = [f"loss.{t}={RECOMMENDED_WEIGHTS[t] if t in terms else '0.0'}" for t in TERMS]
    return (*sets, *(() if "mim" in terms else NO_MASKS))


def _scaled_terms(factor: float) -> tuple[str, ...]:
    """The recommended recipe with every extra term's weight times ``factor`` (PointInfoNCE's stays 1)."""
    return tuple(f"loss.{t}={float(RECOMMENDED_WEIGHTS[t]) * factor:g}" for t in TERMS)


# The extra terms cost fine-tuning only together (docs/cmcr.md): do smaller weights for all of them keep
# their probing gain without that cost? Both scales ran on the development family (neither gained, so the
# recommended recipe keeps its weights); x0.5 is measured on the held-out one to test the explanation.
TERM_SCALES = {"half": 0.5, "quarter": 0.25}

VARIANTS.update({
    "cmcr": Variant("cmcr_synthetic", (), "CMCR, recommended (cmcr_synthetic.yaml)", "reference"),
    **{f"cmcr_terms_{name}": Variant("cmcr_synthetic", _scaled_terms(factor),
                                     f"recommended CMCR, every extra term's weight x {factor:g}", "weights")
       for name, factor in TERM_SCALES.items()},
    "full_nomask": Variant("cmcr_published_synthetic", (*BASE, *(f"loss.{t}={TERMS[t]}" for t in TERMS)),
                           "full CMCR on PPKT's base, mim_mask none", "path"),
    **{f"cmcr-{fix}": Variant("cmcr_synthetic", REFERENCE_OF_FIX[fix],
                              f"recommended CMCR, {fix} as in the reference", "fix") for fix in FIXES},
    **{f"cmcr-{t}": Variant("cmcr_synthetic", _recommended_terms(*(u for u in TERMS if u != t)),
                            f"recommended CMCR without {t}", "remove") for t in TERMS},
    "cmcr_nce": Variant("cmcr_synthetic", _recommended_terms(),
                        "recommended CMCR, every extra term at 0 (PointInfoNCE only)", "add"),
    **{f"cmcr_nce+{t}": Variant("cmcr_synthetic", _recommended_terms(t),
                                f"recommended CMCR, PointInfoNCE + {t} only", "add") for t in TERMS},
})
QUICK_VARIANTS = ("ppkt", "cmcr")
# What the held-out table measures; the development family ran the exploration (docs/cmcr.md).
HELDOUT_VARIANTS = (
    "random_init", "ppkt", "slidr", "cmcr_published", "cmcr",
    "ppkt_norecal", "ppkt_255", "ppkt_255_norecal", "ppkt_adamw",
    "cmcr_published_nce", "cmcr_published_unmasked", "cmcr_published_sgd", "cmcr_published_ppkt_base",
    "base", "full_nomask", "cmcr_full",
    *(f"cmcr-{fix}" for fix in FIXES),
    *(f"cmcr-{t}" for t in TERMS), "cmcr_nce", *(f"cmcr_nce+{t}" for t in TERMS), "cmcr_terms_half",
)
DEV_VARIANTS = tuple(v for v in VARIANTS if v not in HELDOUT_VARIANTS or v in (
    "random_init", "ppkt", "slidr", "cmcr_published", "ppkt_255", "ppkt_adamw", "base", "cmcr_full",
    "cmcr_published_sgd", "cmcr_published_ppkt_base", "cmcr_terms_half"))


def command_env(threads: int) -> dict[str, str]:
    """Environment of the `cmcr` commands: `threads` torch threads, and the code of the checkout this
    script belongs to, whatever is installed."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=path)


def run_command(work: Path, log: Path, args: list[str], threads: int) -> float:
    """One `cmcr` command (cwd WORK); its output goes to LOG. Returns seconds."""
    env = command_env(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-m", "cmcr_cli", *args], cwd=work, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"`cmcr {' '.join(args)}` failed with exit code {code}; see {log}")
    return time.perf_counter() - start


def _sets(values: list[str] | tuple[str, ...]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def _flatten(text: str) -> dict[str, object]:
    """``{"section.key": value}`` of a resolved recipe (YAML)."""
    data = yaml.safe_load(text) or {}
    return {f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in data.items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])}


def _settings_differ(stored: str | None, now: str) -> bool:
    """Whether two resolved recipes set a key both know to different values (or one is missing)."""
    if stored is None:
        return True
    before, after = _flatten(stored), _flatten(now)
    return any(before[key] != after[key] for key in before.keys() & after.keys())


def _last_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


class Family:
    """One family's folder: its worlds, teacher, runs and table."""

    def __init__(self, work: Path, name: str, plan: Plan, threads: int) -> None:
        self.name, self.plan, self.threads = name, plan, threads
        self.dir = work / name
        self.seeds = dict(zip(("teacher", "pretrain", "eval"), FAMILIES[name], strict=True))

    def claim(self) -> None:
        """Refuse a folder measured with another plan (numbers of two plans must never mix)."""
        path = self.dir / SETTINGS_JSON
        wanted = json.loads(json.dumps(asdict(self.plan)))
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != wanted:
                changed = sorted(k for k in wanted if wanted[k] != stored.get(k))
                raise SystemExit(f"{self.dir} was measured with other settings ({', '.join(changed)}); "
                                 f"use another --work")
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted, indent=1) + "\n")

    def cmcr(self, log: str, *args: str) -> None:
        seconds = run_command(self.dir, self.dir / "logs" / f"{log}.log", list(args), self.threads)
        print(f"  [{self.name}] {log}: {seconds:.0f} s", file=sys.stderr, flush=True)

    def prepare(self) -> None:
        """Worlds, prepared folders and the teacher (each skipped when it exists)."""
        p = self.plan
        sizes = {"teacher": p.teacher_world, "pretrain": p.pretrain_world, "eval": p.eval_world}
        for role, (scenes, samples) in sizes.items():
            if role == "teacher" and p.teacher_steps == 0:
                continue
            world = f"world_{role}"
            if not (self.dir / world / "v1.0-mini" / "scene.json").exists():
                self.cmcr(world, "prepare", "synthetic", "--out", world, "--seed", str(self.seeds[role]),
                          "--scenes", str(scenes), "--samples-per-scene", str(samples), "--image-size",
                          p.image_size, "--overwrite")
        # SLidR needs superpixels on the pretraining world; the evaluation world needs none.
        for prep, world, superpixels in (("prep_pretrain", "world_pretrain", "slic"),
                                         ("prep_eval", "world_eval", "none")):
            if not list((self.dir / prep).glob("index-*.json")):
                self.cmcr(prep, "prepare", "nuscenes", "--dataroot", world, "--version", "v1.0-mini",
                          "--out", prep, "--superpixels", superpixels)
        if p.teacher_steps and not (self.dir / "teacher" / "teacher.pt").exists():
            resume = ["--resume"] if (self.dir / "teacher" / "checkpoint.pt").exists() else []
            sets = [f"train.max_steps={p.teacher_steps}", "optim.warmup_steps=20", "data.batch_size=4",
                    "data.crop_size=[144, 256]", "data.num_workers=0", "train.log_every=10",
                    f"train.checkpoint_every={max(1, p.teacher_steps // 3)}"]
            recipe = str(RECIPES / "semantic_teacher_synthetic.yaml")
            self.cmcr("teacher", "teacher", "train", "--recipe", recipe, "--dataroot", "world_teacher",
                      "--out", "teacher", *resume, *_sets(sets))

    def unit(self, variant: str, seed: int) -> None:
        """Pretraining (unless random init), probing and fine-tuning of one variant and seed."""
        v, p = VARIANTS[variant], self.plan
        folder = Path("runs") / variant / f"seed{seed}"
        run = folder / "pretrain"
        commands: dict[str, list[str]] = {}
        if v.recipe:
            teacher = "teacher/teacher.pt" if p.teacher_steps else ""
            sets = [f"train.seed={seed}", f"train.max_steps={p.steps}", f"data.batch_size={p.batch}",
                    "data.split=all", "data.num_workers=0", "data.cylindrical=true",
                    f"teacher.weights={json.dumps(teacher)}", "train.log_every=1",
                    f"train.checkpoint_every={max(1, p.steps // 4)}", *v.sets]
            commands["pretrain"] = ["pretrain", "--recipe", str(RECIPES / f"{v.recipe}.yaml"), "--data",
                                    "prep_pretrain", "--out", str(run), *_sets(sets)]
        weights = ["--weights", str(run / "checkpoint.pt")] if v.recipe else []
        downstream = {"probe": (p.probe_seeds, [f"train.epochs={p.probe_epochs}", f"optim.lr={p.probe_lr!r}",
                                                "data.label_fraction=1.0"]),
                      "finetune": (p.finetune_seeds, [f"train.epochs={p.finetune_epochs}",
                                                      f"data.label_fraction={p.finetune_label_fraction!r}"])}
        for mode, (seeds, sets) in downstream.items():
            # Random init draws its weights from the downstream seed: offset it by the unit's seed so
            # that the random-init "seeds" differ like the pretraining seeds do.
            sets = [*sets, "data.num_workers=0", "train.log_every=10", f"train.seed={seed * 100}"]
            recipe = str(RECIPES / f"{mode}_synthetic.yaml")
            commands[mode] = [mode, "--recipe", recipe, "--data", "prep_eval", "--out", str(folder / mode),
                              "--seeds", str(seeds), *weights, *_sets(sets)]
        self._claim_unit(folder, {name: self._resolved(args) for name, args in commands.items()})
        if "pretrain" in commands and (_last_step(self.dir / run) < p.steps
                                       or not (self.dir / run / "checkpoint.pt").exists()):
            resume = ["--resume"] if (self.dir / run / "checkpoint.pt").exists() else []
            self.cmcr(f"{variant}_s{seed}_pretrain", *commands["pretrain"], *resume)
        for mode in downstream:
            if not (self.dir / folder / mode / "metrics.json").exists():
                self.cmcr(f"{variant}_s{seed}_{mode}", *commands[mode])

    def _resolved(self, args: list[str]) -> str:
        """The resolved recipe a command would run (its `--dry-run` output)."""
        env = command_env(self.threads)
        result = subprocess.run([sys.executable, "-m", "cmcr_cli", *args, "--dry-run"], cwd=self.dir, env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`cmcr {' '.join(args)} --dry-run` failed: {result.stdout}{result.stderr}")
        return result.stdout

    def _claim_unit(self, folder: Path, resolved: dict[str, str]) -> None:
        """A unit folder holds the runs of one set of resolved recipes: when a variant's definition or a
        recipe file it uses changes, its old results are never mixed with new ones. A field that a later
        version of cmcr added (absent from the stored recipe) does not count: it defaults to the behaviour
        the stored runs had."""
        path = self.dir / folder / "resolved.json"
        if path.exists():
            stored = json.loads(path.read_text())
            changed = sorted(k for k in resolved if _settings_differ(stored.get(k), resolved[k]))
            if changed:
                raise RuntimeError(f"{path.parent} was measured with other resolved recipes "
                                   f"({', '.join(changed)} changed); give the variant another name or delete "
                                   "that folder")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(resolved, indent=1) + "\n")

    def scores(self, variant: str, seeds: list[int]) -> dict[str, list[float]]:
        """mIoU (%) per pretraining seed (mean over its downstream seeds) of each protocol, where measured."""
        found: dict[str, list[float]] = {}
        for mode in ("probe", "finetune"):
            values = []
            for seed in seeds:
                path = self.dir / "runs" / variant / f"seed{seed}" / mode / "metrics.json"
                if path.exists():
                    miou = json.loads(path.read_text())["miou"]  # a summary over seeds, or one run's
                    values.append(100.0 * (miou["mean"] if isinstance(miou, dict) else miou))
            if values:
                found[mode] = values
        return found


def _difference(a: list[float], b: list[float]) -> dict[str, float] | None:
    if len(a) < 2 or len(b) < 2:
        return None
    delta = mean(a) - mean(b)
    se = math.sqrt(stdev(a) ** 2 / len(a) + stdev(b) ** 2 / len(b))
    return {"delta": delta, "se": se, "exceeds": abs(delta) > 2.0 * se}


def table(family: Family, variants: list[str], seeds: list[int], reference: str, full: str) -> list[dict]:
    """One record per variant: scores, mean ± std and the differences to `reference` and `full`."""
    scores = {v: family.scores(v, seeds) for v in {*variants, reference, full}}
    records = []
    for variant in variants:
        v = VARIANTS[variant]
        record: dict = {"variant": variant, "label": v.label, "group": v.group}
        for mode, values in scores[variant].items():
            entry: dict = {"per_seed": values, "mean": mean(values),
                           "std": stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
            for name, other in (("vs_ppkt", reference), ("vs_full", full)):
                if other != variant and mode in scores[other]:
                    entry[name] = _difference(values, scores[other][mode])
            record[mode] = entry
        records.append(record)
    return records


def _cell(entry: dict | None, key: str | None = None) -> str:
    if entry is None:
        return "—"
    if key is None:
        return f"{entry['mean']:.1f} ± {entry['std']:.1f}" if entry["n"] > 1 else f"{entry['mean']:.1f}"
    diff = entry.get(key)
    if diff is None:
        return "—"
    mark = " *" if diff["exceeds"] else ""
    return f"{diff['delta']:+.1f} ± {diff['se']:.1f}{mark}"


def markdown(records: list[dict], family: str, plan: Plan, seeds: list[int]) -> str:
    lines = [f"Family `{family}` (world seeds {FAMILIES[family]}), {plan.steps} pretraining steps of batch "
             f"{plan.batch}, pretraining seeds {seeds}; mIoU % mean ± std over pretraining seeds; "
             "Δ ± standard error, * = |Δ| > 2 SE.", "",
             "| variant | probe | Δ PPKT | Δ full | fine-tuning (1 scene) | Δ PPKT | Δ full |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        probe, ft = r.get("probe"), r.get("finetune")
        cells = [_cell(entry, key) for entry in (probe, ft) for key in (None, "vs_ppkt", "vs_full")]
        lines.append(f"| {r['label']} (`{r['variant']}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="Working folder (reused: finished steps skip).")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="dev",
                        help="World family: dev (settings were chosen on it) or heldout (only measured).")
    parser.add_argument("--variants", default=None, help="Comma-separated variants (default: the "
                        "family's set, see HELDOUT_VARIANTS and DEV_VARIANTS): " + ", ".join(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="Pretraining seeds (default 0 1 2).")
    parser.add_argument("--steps", type=int, default=None, help="Pretraining steps (default 100).")
    parser.add_argument("--jobs", type=int, default=1, help="Variant/seed units run at the same time.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per command.")
    parser.add_argument("--reference", default="ppkt", help="Variant the 'Δ PPKT' column compares with.")
    parser.add_argument("--full", default="cmcr", help="Variant the 'Δ full' column compares with (the "
                        "recommended CMCR).")
    parser.add_argument("--quick", action="store_true", help="Tiny worlds, 2 steps, 2 variants, one seed.")
    parser.add_argument("--summary-only", action="store_true", help="Only print what is already measured.")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    if args.steps is not None:
        plan = Plan(**{**asdict(plan), "steps": args.steps})
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    default = QUICK_VARIANTS if args.quick else HELDOUT_VARIANTS if args.family == "heldout" else DEV_VARIANTS
    variants = args.variants.split(",") if args.variants else list(default)
    unknown = [v for v in (*variants, args.reference, args.full) if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    family = Family(args.work, args.family, plan, args.threads)
    family.claim()
    if not args.summary_only:
        family.prepare()
        units = [(v, s) for s in seeds for v in variants]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            failures = [f"{v}/seed{s}: {e}" for (v, s), e in
                        zip(units, pool.map(lambda u: _try(family.unit, *u), units), strict=True) if e]
        if failures:
            raise SystemExit("failed units:\n  " + "\n  ".join(failures))
    records = table(family, variants, seeds, args.reference, args.full)
    text = markdown(records, args.family, plan, seeds)
    (family.dir / "table.md").write_text(text)
    (family.dir / "table.json").write_text(json.dumps(records, indent=1) + "\n")
    for record in records:
        print(json.dumps(record))
    print("\n" + text)


def _try(fn, *args) -> str | None:
    try:
        fn(*args)
    except RuntimeError as error:
        return str(error)
    return None


if __name__ == "__main__":
    main()
