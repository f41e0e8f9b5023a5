"""The public entry points of cmcr: what the command line (and notebooks) call.

One function per thing a user does; each resolves its workflow in ``cmcr_core.runs`` (or ``cmcr_core.demo``)
when called, so importing this module stays cheap: no torch, no numpy. Recipes load through
``cmcr_core.config`` (exported here: ``load_recipe``, ``dump_recipe``, ``RecipeError``). Results carry a
``report()`` (``cmcr_core.runs.report``: tables and lines) where the command prints more than a line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cmcr_core import config
from cmcr_core.config import RECIPE_KINDS, RecipeError

__all__ = [
    "RECIPE_KINDS",
    "RecipeError",
    "analyze",
    "default_run_folder",
    "demo",
    "detect_recipe_kind",
    "dump_recipe",
    "evaluate_teacher",
    "finetune",
    "load_downstream_recipe",
    "load_recipe",
    "non_finite_loss_error",
    "parse_image_size",
    "plan_nuscenes",
    "prepare_kitti",
    "prepare_object_targets",
    "prepare_nuscenes",
    "prepared_summary",
    "pretrain",
    "read_teacher_file",
    "resolve_device",
    "toy",
    "train_teacher",
    "write_synthetic_kitti",
    "write_synthetic_objects",
    "write_synthetic_world",
    "zeroshot",
    "zeroshot_objects",
]

SEGMENTATION_ONLY = ("--label-fraction", "--resume", "--allow-voxel-mismatch", "--export-predictions")


# --- recipes -------------------------------------------------------------------------------------------


def load_recipe(path: str | Path | None, sets: Sequence[str] = (), kinds: Sequence[str] = tuple(RECIPE_KINDS),
                kind: str | None = None) -> Any:
    """The resolved recipe of a file plus `--set` overrides: of `kind` when given, else of the kind the file
    is among `kinds` (``cmcr_core.config.load_any``). Raises ``RecipeError``."""
    if kind is not None:
        return config.load_recipe(path, sets, kind=RECIPE_KINDS[kind].recipe)
    return config.load_any(path, sets, kinds)


def detect_recipe_kind(path: str | Path | None, sets: Sequence[str] = ()) -> str:
    """The kind of a recipe file (a key of ``RECIPE_KINDS``); ``RecipeError`` for an unreadable file."""
    return config.detect_kind(path, sets)


def dump_recipe(recipe: Any) -> str:
    """The fully resolved recipe as YAML text."""
    return config.dump(recipe)


def default_run_folder(recipe: Any) -> Path:
    """``runs/<recipe name>``: where a run goes without ``--out``."""
    return Path("runs") / recipe.name


def load_downstream_recipe(path: str | Path, sets: Sequence[str], label_fraction: float | None = None,
                           segmentation_only: Mapping[str, Any] | None = None) -> Any:
    """The recipe of `cmcr finetune` / `cmcr probe`: LiDAR segmentation, or object classification
    (`task: classification`), which refuses the segmentation-only options given (``SEGMENTATION_ONLY`` flag
    -> value; a flag counts as given unless its value is None or False)."""
    options = {"--label-fraction": label_fraction, **(segmentation_only or {})}
    if config.detect_kind(path, sets, ("finetune", "classification")) == "classification":
        given = [flag for flag in SEGMENTATION_ONLY if options.get(flag) not in (None, False)]
        if given:
            raise ValueError(f"{', '.join(given)}: not available for object classification; {path} has "
                             "task: classification (these options are for segmentation recipes); drop them")
        return config.load_recipe(path, sets, kind=config.ObjectClassifyRecipe)
    if label_fraction is not None:
        sets = [*sets, f"data.label_fraction={label_fraction}"]
    return config.load_recipe(path, sets, kind=config.FinetuneRecipe)


def non_finite_loss_error() -> type[Exception]:
    """The engine's exception for a NaN/Inf loss (the message names the step, loss and last checkpoint)."""
    from cmcr_core.engine.loop import NonFiniteLossError

    return NonFiniteLossError


def resolve_device(name: str) -> str:
    """``auto`` = ``cuda`` when available, else ``cpu``."""
    from cmcr_core.engine.runner import resolve_device as resolve

    return resolve(name)


# --- training and evaluation ----------------------------------------------------------------------------


def pretrain(recipe: Any, out: str | Path | None = None, resume: bool = False) -> Any:
    """`cmcr pretrain`: a LiDAR pretraining recipe, or ReCon on objects (`method: recon`)."""
    out = out or default_run_folder(recipe)
    if isinstance(recipe, config.ReconRecipe):
        from cmcr_core.runs.objects import run_recon_pretraining

        return run_recon_pretraining(recipe, out, resume=resume)
    from cmcr_core.runs.pretrain import run_pretraining

    return run_pretraining(recipe, out, resume=resume)


def finetune(recipe: Any, mode: str, out: str | Path | None = None, weights: str | Path | None = None,
             seeds: int = 1, **segmentation: Any) -> Any:
    """`cmcr finetune` (mode "finetune") / `cmcr probe` ("probe"); returns the result's ``Report``.

    ``segmentation``: ``resume``, ``allow_voxel_mismatch``, ``export_predictions`` (LiDAR recipes only).
    """
    out = Path(out or default_run_folder(recipe))
    if isinstance(recipe, config.ObjectClassifyRecipe):
        from cmcr_core.runs.object_protocols import classification_report, run_classification

        return classification_report(run_classification(recipe, mode, out, weights, seeds), out)
    from cmcr_core.runs.finetune import run_mode

    return run_mode(recipe, mode, out, seeds, weights=weights, **segmentation).report()


def train_teacher(recipe: config.TeacherTrainRecipe, out: str | Path | None = None,
                  resume: bool = False) -> Any:
    """`cmcr teacher train`: the compact semantic teacher; `teacher.pt` once the last step is done."""
    from cmcr_core.runs.teacher import run_teacher_training

    return run_teacher_training(recipe, out or default_run_folder(recipe), resume=resume)


def read_teacher_file(path: str | Path) -> dict[str, Any]:
    """`cmcr teacher info`: the raw content of a `cmcr-teacher` file."""
    from cmcr_core.runs.teacher import read_teacher_file as read

    return read(path)


def evaluate_teacher(path: str | Path, world: str | Path, scenes: Sequence[str] = ()) -> dict[str, Any]:
    """`cmcr teacher eval`: scores of a trained teacher file on a world's camera truth."""
    from cmcr_core.runs.teacher import evaluate_teacher_file

    return evaluate_teacher_file(path, world, scenes=scenes)


def analyze(weights: Sequence[str | Path], data: str | Path, out: str | Path, device: str = "auto",
            **options: Any) -> Any:
    """`cmcr analyze`: structure of pretrained spaces (``cmcr_core.runs.analyze.analyze_runs`` options)."""
    from cmcr_core.runs.analyze import analyze_runs

    return analyze_runs(weights, data, out, device=resolve_device(device), **options)


def toy(clusters: int, out: str | Path, iterations: int = 400, seed: int = 0) -> dict[str, Any]:
    """`cmcr analyze toy`: the toy distillation with every loss; returns the summary of toy.json."""
    from cmcr_core.runs.analyze import run_toy

    return run_toy(clusters, out, iterations=iterations, seed=seed)


def zeroshot(weights: str | Path | None, data: str | Path, out: str | Path | None = None, split: str = "val",
             batch_size: int = 4, device: str = "auto", **classes: Any) -> Any:
    """`cmcr zeroshot`; ``classes`` are the fields of ``cmcr_core.runs.zeroshot.ClassSource``."""
    from cmcr_core.runs.zeroshot import ClassSource, run_zeroshot

    if weights is None:
        raise ValueError("--weights: zero-shot segmentation needs a pretraining checkpoint")

    source = ClassSource(**classes)
    out = out or Path("runs") / f"zeroshot_{Path(weights).parent.name}"
    return run_zeroshot(weights, data, out, split=split, batch_size=batch_size, device=resolve_device(device),
                        classes=source)


def zeroshot_objects(recipe: str | Path | None, sets: Sequence[str], weights: str | Path | None = None,
                     out: str | Path | None = None, text_embeddings: str | Path | None = None,
                     clip: str | Path | None = None, device: str = "auto") -> Any:
    """`cmcr zeroshot --objects`: zero-shot classification with a `task: classification` recipe's `zeroshot`
    section (``cmcr_core.runs.object_zeroshot``); returns the ``Report``."""
    from cmcr_core.runs.object_zeroshot import run_object_zeroshot, zeroshot_report

    if recipe is None:
        raise ValueError("--objects: give --recipe (a task: classification recipe, e.g. "
                         "recipes/recon_zeroshot_modelnet40.yaml)")
    resolved = config.load_recipe(recipe, sets, kind=config.ObjectClassifyRecipe)
    out = out or default_run_folder(resolved)
    metrics = run_object_zeroshot(resolved, out, weights, text_embeddings, clip, resolve_device(device))
    return zeroshot_report(metrics, out)


def demo(out: str | Path, quick: bool = False, seeds: int | None = None, threads: int = 2,
         force: bool = False, recipes: str | Path | None = None,
         say: Callable[[str], None] | None = None) -> Any:
    """`cmcr demo`: run (or continue) the whole chain into `out`; `say` receives one line per stage (default:
    ``run_demo``'s, standard output)."""
    from cmcr_core.demo.stages import run_demo

    lines = {} if say is None else {"say": say}
    return run_demo(out, quick=quick, seeds=seeds, threads=threads, force=force, recipes_dir=recipes, **lines)


# --- data preparation -----------------------------------------------------------------------------------


def parse_image_size(text: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" -> (width, height); a ValueError names a bad value."""
    from cmcr_core.data.synthetic import parse_image_size as parse

    return parse(text)


def write_synthetic_world(out: str | Path, scenes: int, samples_per_scene: int, seed: int,
                          image_size: tuple[int, int], overwrite: bool = False, workers: int = 1,
                          progress: Callable[[int, int], None] | None = None) -> Any:
    """`cmcr prepare synthetic`: the world and the time it took (``report()`` says what was written)."""
    from cmcr_core.runs.prepare import write_synthetic_world as write

    return write(out, scenes, samples_per_scene, seed, image_size, overwrite, workers, progress)


def plan_nuscenes(dataroot: str | Path, version: str, out: str | Path, **options: Any) -> Any:
    """`cmcr prepare nuscenes`, first half: the checked options and this job's plan."""
    from cmcr_core.runs.prepare import plan_nuscenes as plan

    return plan(dataroot, version, out, **options)


def prepare_nuscenes(plan: Any, workers: int = 1, progress: Callable[[int], None] | None = None) -> Any:
    """`cmcr prepare nuscenes`, second half: build the planned shards; returns the prepare report."""
    from cmcr_core.data.prepare_nuscenes import run_prepare

    return run_prepare(plan, workers=workers, progress=progress)


def prepared_summary(out: str | Path) -> dict[str, Any]:
    """`cmcr prepare info`: what a prepared folder holds."""
    from cmcr_core.data.prepared import prepared_summary as summary

    return summary(out)


def write_synthetic_kitti(root: str | Path, sequences: str, scans_per_sequence: int, seed: int,
                          overwrite: bool = False) -> Any:
    """`cmcr prepare semantickitti --synthetic`; ``sequences`` is a comma-separated list."""
    from cmcr_core.runs.prepare import write_synthetic_kitti as write

    return write(root, [s.strip() for s in sequences.split(",")], scans_per_sequence, seed, overwrite)


def prepare_kitti(root: str | Path, out: str | Path) -> Any:
    """`cmcr prepare semantickitti`: per-sequence shards; returns the ``Report``."""
    from cmcr_core.runs.prepare import prepare_kitti as prepare

    return prepare(root, out)


def write_synthetic_objects(out: str | Path, **options: Any) -> Any:
    """`cmcr prepare objects --synthetic`: (layout roots, ``Report``)."""
    from cmcr_core.runs.prepare import write_synthetic_objects as write

    return write(out, **options)


def prepare_object_targets(root: str | Path, out: str | Path, **options: Any) -> Any:
    """`cmcr prepare objects`: ReCon teacher targets; returns the ``Report``."""
    from cmcr_core.runs.prepare import prepare_object_targets as prepare

    return prepare(root, out, **options)
