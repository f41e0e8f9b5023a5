"""What decides the numbers of `cmcr demo`: its plan (`DemoPlan`, `make_plan`), its models and protocols,
and the claim on the output folder (`check_settings`, with `DIR/demo.json`)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cmcr_core.ops.atomic import write_json_atomic

__all__ = [
    "DEMO_JSON", "MODELS", "PRETRAINED", "PROTOCOLS", "RANDOM_INIT", "TEACHER_LABELS", "DemoPlan",
    "DemoSettingsError", "check_settings", "make_plan", "remove_demo_outputs",
]

DEMO_JSON = "demo.json"
DEMO_FORMAT = 2  # 2: SLidR, the recommended CMCR recipe, batch-norm re-estimation
STAGES = 7

# (name, method, teacher) of every pretrained model; the random-init baseline is "random_init". CMCR is the
# recommended recipe (recipes/cmcr_synthetic.yaml); SLidR runs from the semantic teacher only (its dilated
# teacher costs most of its step), so that CMCR meets PPKT and SLidR at equal steps and teacher.
PRETRAINED: tuple[tuple[str, str, str], ...] = (
    ("cmcr_semantic", "cmcr", "semantic"),
    ("cmcr_random", "cmcr", "random"),
    ("ppkt_semantic", "ppkt", "semantic"),
    ("ppkt_random", "ppkt", "random"),
    ("slidr_semantic", "slidr", "semantic"),
)
RANDOM_INIT = "random_init"
MODELS: tuple[str, ...] = (RANDOM_INIT, *(name for name, _, _ in PRETRAINED))
PROTOCOLS: tuple[str, ...] = ("probe", "finetune")
TEACHER_LABELS = {"semantic": "semantic teacher", "random": "random ResNet-18"}


class DemoSettingsError(ValueError):
    """The output folder belongs to a demo started with other settings, or to something else."""


@dataclass(frozen=True)
class DemoPlan:
    """Everything that decides the demo's numbers (stored in DIR/demo.json; a rerun must match it)."""

    mode: str  # "full" or "quick"
    seeds: int
    image_size: tuple[int, int]  # width, height of the camera images of both worlds
    world_a: tuple[int, int]  # scenes, keyframes per scene (teacher world, seed 0)
    world_b: tuple[int, int]  # scenes, keyframes per scene (pretraining and evaluation world, seed 1)
    teacher_steps: int
    teacher_batch: int
    teacher_crop: tuple[int, int]  # height, width
    pretrain_steps: int
    pretrain_batch: int
    probe_epochs: int
    probe_label_fraction: float
    probe_lr: float  # 10x probe_synthetic.yaml's: its 0.05 leaves the head untrained in a few dozen steps
    finetune_epochs: int
    finetune_label_fraction: float  # chosen so that exactly one mini_train scene is labelled
    analysis_per_class: int
    format: int = DEMO_FORMAT

    def settings(self) -> dict[str, Any]:
        return asdict(self)


def make_plan(quick: bool, seeds: int | None = None) -> DemoPlan:
    """The full demo (under 15 minutes on 2 CPU cores) or the quick one (under 3 minutes; what CI runs)."""
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if quick:
        # 5 scenes: both mini_val scenes and 3 mini_train ones; label fraction 0.1 (skip 3) keeps one.
        return DemoPlan(mode="quick", seeds=seeds or 1, image_size=(320, 180), world_a=(3, 2), world_b=(5, 1),
                        teacher_steps=6, teacher_batch=4, teacher_crop=(96, 160), pretrain_steps=2,
                        pretrain_batch=1, probe_epochs=1, probe_label_fraction=1.0, probe_lr=0.5,
                        finetune_epochs=1, finetune_label_fraction=0.1, analysis_per_class=100)
    # 10 scenes: mini_train holds 8, label fraction 0.01 (skip 8) keeps one (finetune_synthetic.yaml).
    return DemoPlan(mode="full", seeds=seeds or 3, image_size=(320, 180), world_a=(10, 3), world_b=(10, 4),
                    teacher_steps=150, teacher_batch=4, teacher_crop=(144, 256), pretrain_steps=50,
                    pretrain_batch=2, probe_epochs=3, probe_label_fraction=1.0, probe_lr=0.5,
                    finetune_epochs=30, finetune_label_fraction=0.01, analysis_per_class=500)


def check_settings(out: Path, plan: DemoPlan, force: bool) -> None:
    """Claim `out` for `plan`: new or empty folder, or a demo with the same settings; else refuse.

    With `force`, the results of a demo with other settings are deleted first (only the demo's own files).
    """
    settings_path = out / DEMO_JSON
    if settings_path.is_file():
        try:
            saved = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DemoSettingsError(f"{settings_path} is unreadable ({error}); choose another --out") \
                from error
        wanted = plan.settings()
        stored = saved.get("settings", {})
        if stored == json.loads(json.dumps(wanted)):
            return
        if not force:
            changed = sorted(k for k in set(wanted) | set(stored) if json.dumps(wanted.get(k)) !=
                             json.dumps(stored.get(k)))
            before = f"--quick={stored.get('mode') == 'quick'} --seeds {stored.get('seeds')}"
            raise DemoSettingsError(
                f"{out} holds a demo run with other settings ({before}; differs in {', '.join(changed)}): "
                f"rerun with those options to continue it, choose another --out, or pass --overwrite to "
                f"delete its results and start again")
        remove_demo_outputs(out)
    elif out.exists() and any(out.iterdir()):
        raise DemoSettingsError(f"{out} is not empty and holds no {DEMO_JSON}: it is not a demo folder; "
                                f"choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    created = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json_atomic(settings_path, {"settings": plan.settings(), "created": created}, newline=True)


DEMO_FOLDERS = ("worlds", "teacher", "prepared", "pretrain", "probe", "finetune", "analysis", "stages")
DEMO_FILES = (DEMO_JSON, "report.md", "report.json")


def remove_demo_outputs(out: Path) -> None:
    """Delete what a demo wrote in `out` (its known folders and files only)."""
    for name in DEMO_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)
    for name in DEMO_FILES:
        (out / name).unlink(missing_ok=True)
