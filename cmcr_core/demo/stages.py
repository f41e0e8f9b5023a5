"""`cmcr demo`: the whole chain on two small synthetic worlds, on a CPU, in minutes (docs/demo.md).

Seven stages, each through the public core function that the matching `cmcr` command calls:

1. write world A (seed 0; the teacher's world) and world B (seed 1; pretraining and evaluation);
2. train the semantic teacher on world A (recipes/semantic_teacher_synthetic.yaml);
3. prepare world B (with SLIC superpixels, for SLidR);
4. pretrain CMCR (the recommended recipe) and PPKT on world B's mini_train scenes, each from the semantic
   teacher and from a randomly initialised ResNet-18, and SLidR from the semantic teacher (five checkpoints);
5. linear probing and one-labelled-scene fine-tuning of the five checkpoints and of random initialisation,
   over `seeds` seeds, evaluated on the whole mini_val split;
6. structure (U/T/G/A) of each pretrained space against its teacher on mini_val, with the plots;
7. DIR/report.md and DIR/report.json (`cmcr_core.demo.report`).

Every stage writes into its own folder and, once complete, a record `DIR/stages/<stage>.json` (wall and
CPU seconds, load average). A rerun skips the stages whose record and outputs exist, resumes training runs
from their checkpoints, and refuses a folder started with other settings (`DIR/demo.json`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcr_core.demo import report as demo_report
from cmcr_core.demo.plan import (
    MODELS,
    PRETRAINED,
    PROTOCOLS,
    STAGES,
    TEACHER_LABELS,
    DemoPlan,
    check_settings,
    make_plan,
)
from cmcr_core.ops.atomic import write_json_atomic
from cmcr_core.runs.report import Line, Report
from cmcr_core.runs.run_folder import CHECKPOINT, METRICS_JSON, STRUCTURE_JSON, TEACHER_FILE

__all__ = ["DemoResult", "default_recipes_dir", "run_demo"]


@dataclass
class DemoResult:
    """Where the demo wrote its results, and the report's content."""

    out_dir: Path
    report_md: Path
    report_json: Path
    report: dict[str, Any]
    ran: list[str] = field(default_factory=list)  # stages run by this invocation
    skipped: list[str] = field(default_factory=list)  # stages found complete

    def summary(self) -> Report:
        """The lines `cmcr demo` ends with: mIoUs of each protocol, the verdict, where everything is."""
        out, lines = self.out_dir, []
        for protocol, title in (("probe", "linear probing"), ("finetune", "fine-tuning")):
            rows = self.report["miou"][protocol]
            line = ", ".join(f"{name} {100 * r['mean']:.1f}" + (f"±{100 * r['std']:.1f}"
                             if len(r["per_seed"]) > 1 else "") for name, r in rows.items())
            lines.append(Line(f"{title} mIoU %: {line}", highlight=False))
        lines.append(Line(self.report["verdict"], highlight=False))
        lines.append(Line(f"[green]done[/]: report {self.report_md} (and {self.report_json.name}); plots in "
                          f"{out / 'analysis'}; runs in {out}/pretrain, {out}/probe, {out}/finetune; teacher "
                          f"{out / 'teacher' / TEACHER_FILE}; worlds in {out / 'worlds'}", highlight=False))
        return Report(tuple(lines))


def default_recipes_dir() -> Path:
    """The recipes shipped with the package (the repository's recipes/ folder in a source checkout)."""
    from cmcr_core.config import packaged_recipes_dir

    return packaged_recipes_dir()


def _q(value: str | Path) -> str:
    """A path as a `--set` value (JSON-quoted, so any character survives the YAML parse)."""
    return json.dumps(str(value))


class _Stages:
    """Stage records under DIR/stages: a stage is done when its record and its outputs exist."""

    def __init__(self, out: Path, say: Callable[[str], None], device: str = "auto") -> None:
        self.folder, self.say, self.device = out / "stages", say, device
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def record_path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def done(self, key: str, outputs: tuple[Path, ...]) -> bool:
        return self.record_path(key).is_file() and all(p.exists() for p in outputs)

    def record(self, key: str) -> dict[str, Any]:
        return json.loads(self.record_path(key).read_text(encoding="utf-8"))

    @contextmanager
    def run(self, key: str, label: str, outputs: tuple[Path, ...]) -> Iterator[dict[str, Any] | None]:
        """Yield None when the stage is complete (skip it), else a dict the body fills with results."""
        if self.done(key, outputs):
            self.say(f"{label}: done earlier ({self.record_path(key).name}), skipped")
            self.skipped.append(key)
            yield None
            return
        self.say(f"{label} ...")
        info: dict[str, Any] = {}
        load_before, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
        yield info
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        record = {"stage": key, "label": label, "wall_s": wall, "cpu_s": cpu,
                  "load_before": load_before, "load_after": os.getloadavg()[0],
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info}
        write_json_atomic(self.record_path(key), record, newline=True)
        self.ran.append(key)
        self.say(f"  done in {wall:.0f} s (CPU {cpu:.0f} s)")


def _world_stage(stages: _Stages, plan: DemoPlan, out: Path, key: str, seed: int,
                 size: tuple[int, int]) -> Path:
    from cmcr_core.data.synthetic import write_nuscenes_world

    root = out / "worlds" / key
    scenes, samples = size
    role = "teacher world" if key == "world_a" else "pretraining and evaluation world"
    label = f"[1/{STAGES}] writing {key} (seed {seed}, {role}): {scenes} scenes x {samples} keyframes"
    with stages.run(key, label, (root / "v1.0-mini" / "scene.json",)) as info:
        if info is not None:
            summary = write_nuscenes_world(root, scenes=scenes, samples_per_scene=samples, seed=seed,
                                           image_size=plan.image_size, overwrite=True)
            points = summary.points_per_sweep
            info.update(root=str(root), seed=seed, scenes=list(summary.scene_names), samples=summary.samples,
                        image_size=list(summary.image_size), mean_points=sum(points) / len(points))
    return root


def _teacher_stage(stages: _Stages, plan: DemoPlan, out: Path, recipes_dir: Path, world: Path) -> Path:
    from cmcr_core import config
    from cmcr_core.runs.teacher import run_teacher_training

    run_dir = out / "teacher"
    teacher = run_dir / TEACHER_FILE
    label = f"[2/{STAGES}] training the semantic teacher on world_a ({plan.teacher_steps} steps)"
    with stages.run("teacher", label, (teacher, run_dir / METRICS_JSON)) as info:
        if info is not None:
            warmup = min(20, plan.teacher_steps // 4)
            sets = [f"data.world={_q(world)}", f"train.max_steps={plan.teacher_steps}",
                    f"optim.warmup_steps={warmup}", f"data.batch_size={plan.teacher_batch}",
                    f"data.crop_size=[{plan.teacher_crop[0]}, {plan.teacher_crop[1]}]", "data.num_workers=0",
                    f"train.checkpoint_every={max(1, plan.teacher_steps // 4)}", "train.log_every=5",
                    f"train.device={stages.device}"]
            recipe = config.load_recipe(recipes_dir / "semantic_teacher_synthetic.yaml", sets,
                                        kind=config.TeacherTrainRecipe)
            run = run_teacher_training(recipe, run_dir, resume=(run_dir / CHECKPOINT).exists())
            if run.teacher is None:
                raise RuntimeError(f"teacher training in {run_dir} stopped at step "
                                   f"{run.result.position.step}")
            holdout = (run.metrics or {}).get("holdout") or {}
            info.update(steps=run.result.position.step, holdout_miou=holdout.get("miou"),
                        holdout_pixel_accuracy=holdout.get("pixel_accuracy"), sets=sets)
    return teacher


def _prepare_stage(stages: _Stages, out: Path, world: Path) -> Path:
    from cmcr_core.data.prepare_nuscenes import PrepareOptions, prepare_nuscenes

    prepared = out / "prepared"
    label = f"[3/{STAGES}] preparing world_b (HDF5 shards, SLIC superpixels for SLidR)"
    with stages.run("prepare", label, (prepared,)) as info:
        if info is not None:
            report = prepare_nuscenes(world, "v1.0-mini", prepared, PrepareOptions(superpixels="slic"))
            if report.failures:
                first = report.failures[0]
                raise RuntimeError(f"preparing {world} failed for {len(report.failures)} samples, e.g. "
                                   f"{first['sample_token']}: {first['reason']}")
            info.update(samples=report.samples_written, index=str(report.index_path))
    return prepared


def _pretrain_stage(stages: _Stages, plan: DemoPlan, out: Path, recipes_dir: Path, prepared: Path,
                    teacher: Path, name: str, method: str, teacher_kind: str) -> Path:
    from cmcr_core import config
    from cmcr_core.runs.pretrain import run_pretraining

    run_dir = out / "pretrain" / name
    checkpoint = run_dir / CHECKPOINT
    label = (f"[4/{STAGES}] pretraining {method} ({TEACHER_LABELS[teacher_kind]}), "
             f"{plan.pretrain_steps} steps")
    with stages.run(f"pretrain_{name}", label, (checkpoint,)) as info:
        if info is not None:
            weights = _q(teacher) if teacher_kind == "semantic" else "''"
            # Pretrain on mini_train only: the evaluation scans (mini_val) stay unseen by every model.
            sets = [f"data.path={_q(prepared)}", "data.split=mini_train", f"teacher.weights={weights}",
                    f"train.max_steps={plan.pretrain_steps}", f"data.batch_size={plan.pretrain_batch}",
                    "data.num_workers=0", f"train.checkpoint_every={max(1, plan.pretrain_steps // 4)}",
                    "train.log_every=1", f"train.device={stages.device}"]
            if method == "cmcr":  # the downstream voxelisation is cylindrical (finetune recipes)
                sets.append("data.cylindrical=true")
            recipe = config.load_recipe(recipes_dir / f"{method}_synthetic.yaml", sets)
            run = run_pretraining(recipe, run_dir, resume=checkpoint.exists())
            last = run.result.records[-1] if run.result.records else {}
            info.update(steps=run.result.position.step, final_loss=last.get("total"), sets=sets)
    return checkpoint


def _downstream_stage(stages: _Stages, plan: DemoPlan, out: Path, recipes_dir: Path, prepared: Path,
                      protocol: str, name: str, checkpoint: Path | None) -> Path:
    from cmcr_core import config
    from cmcr_core.runs.finetune import run_seeds

    run_dir = out / protocol / name
    if protocol == "probe":
        epochs, fraction, what = plan.probe_epochs, plan.probe_label_fraction, "linear probing"
    else:
        epochs, fraction, what = plan.finetune_epochs, plan.finetune_label_fraction, "fine-tuning"
    label = f"[5/{STAGES}] {what} of {name}, {plan.seeds} seed(s)"
    with stages.run(f"{protocol}_{name}", label, (run_dir / METRICS_JSON,)) as info:
        if info is not None:
            sets = [f"data.path={_q(prepared)}", f"train.epochs={epochs}", f"data.label_fraction={fraction}",
                    "data.num_workers=0", "train.log_every=1", f"train.device={stages.device}"]
            if protocol == "probe":
                sets.append(f"optim.lr={plan.probe_lr!r}")
            recipe = config.load_recipe(recipes_dir / f"{protocol}_synthetic.yaml", sets,
                                        kind=config.FinetuneRecipe)
            _, summary = run_seeds(recipe, run_dir, plan.seeds, weights=checkpoint, resume=True)
            info.update(miou=summary["miou"], per_seed_miou=summary["per_seed_miou"], sets=sets)
    return run_dir


def _analysis_stage(stages: _Stages, plan: DemoPlan, out: Path, prepared: Path,
                    checkpoints: dict[str, Path]) -> Path:
    from cmcr_core.engine.runner import resolve_device
    from cmcr_core.runs.analyze import analyze_runs

    folder = out / "analysis"
    label = f"[6/{STAGES}] structure of the pretrained spaces against their teachers (mini_val)"
    with stages.run("analysis", label, (folder / STRUCTURE_JSON,)) as info:
        if info is not None:
            folder.mkdir(parents=True, exist_ok=True)
            miou_file = folder / "probe_miou.json"  # paths relative to the file: read_miou_file's rule
            write_json_atomic(miou_file, {n: f"../probe/{n}/metrics.json" for n in checkpoints}, newline=True)
            result = analyze_runs(list(checkpoints.values()), prepared, folder, split="mini_val",
                                  per_class=plan.analysis_per_class, seed=0, miou_file=miou_file,
                                  device=resolve_device(stages.device))
            info.update(files=[p.name for p in result.files])
    return folder


def run_demo(out: str | Path, quick: bool = False, seeds: int | None = None, threads: int = 2,
             force: bool = False, recipes_dir: str | Path | None = None,
             say: Callable[[str], None] = print, device: str = "auto") -> DemoResult:
    """Run (or continue) the demo into `out` on `device` (auto, cpu, cuda); `say` receives one line per
    stage. Returns the report."""
    import torch

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    out = Path(out)
    recipes_dir = Path(recipes_dir) if recipes_dir is not None else default_recipes_dir()
    if not (recipes_dir / "ppkt_synthetic.yaml").is_file():
        raise FileNotFoundError(f"no recipes in {recipes_dir} (ppkt_synthetic.yaml missing): pass a folder "
                                "holding the synthetic recipes with --recipes")
    plan = make_plan(quick, seeds)
    check_settings(out, plan, force)
    torch.set_num_threads(threads)
    t0, c0 = time.perf_counter(), time.process_time()
    stages = _Stages(out, say, device)
    world_a = _world_stage(stages, plan, out, "world_a", 0, plan.world_a)
    world_b = _world_stage(stages, plan, out, "world_b", 1, plan.world_b)
    teacher = _teacher_stage(stages, plan, out, recipes_dir, world_a)
    prepared = _prepare_stage(stages, out, world_b)
    checkpoints = {name: _pretrain_stage(stages, plan, out, recipes_dir, prepared, teacher, name, method,
                                         kind) for name, method, kind in PRETRAINED}
    for protocol in PROTOCOLS:
        for name in MODELS:
            _downstream_stage(stages, plan, out, recipes_dir, prepared, protocol, name, checkpoints.get(name))
    _analysis_stage(stages, plan, out, prepared, checkpoints)
    say(f"[7/{STAGES}] writing the report ...")
    invocation = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "threads": threads,
                  "ran": stages.ran, "skipped": stages.skipped}
    report = demo_report.collect(out, plan.settings(), invocation)
    md_path, json_path = demo_report.write(out, report)
    return DemoResult(out, md_path, json_path, report, stages.ran, stages.skipped)
