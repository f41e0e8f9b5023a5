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

from cmcr_core import __version__, config
from cmcr_core.config import RECIPE_KINDS, RecipeError
from cmcr_core.ops.sizes import parse_size

__all__ = [
    "RECIPE_KINDS",
    "RecipeError",
    "analyze",
    "default_run_folder",
    "demo",
    "detect_recipe_kind",
    "dump_recipe",
    "evaluate",
    "evaluate_teacher",
    "finetune",
    "list_recipes",
    "load_downstream_recipe",
    "load_recipe",
    "non_finite_loss_error",
    "parse_image_size",
    "parse_size",
    "plan_nuscenes",
    "prepare_kitti",
    "prepare_object_targets",
    "prepare_nuscenes",
    "prepared_summary",
    "pretrain",
    "read_teacher_file",
    "render",
    "resolve_device",
    "set_threads",
    "toy",
    "train_teacher",
    "verify_prepared",
    "version",
    "write_synthetic_kitti",
    "write_synthetic_objects",
    "write_synthetic_world",
    "zeroshot",
    "zeroshot_objects",
]

SEGMENTATION_ONLY = ("--label-fraction", "--resume", "--allow-voxel-mismatch", "--export-predictions")


# --- recipes -------------------------------------------------------------------------------------------


def version() -> str:
    """The version of cmcr."""
    return __version__


def load_recipe(path: str | Path | None, sets: Sequence[str] = (), kinds: Sequence[str] = tuple(RECIPE_KINDS),
                kind: str | None = None, files: bool = False) -> Any:
    """The resolved recipe of a file (or packaged recipe name) plus `--set` overrides: of `kind` when given,
    else of the kind the file is among `kinds` (``cmcr_core.config.load_any``); with `files`, the teacher
    files it names must exist (what a command about to run needs). Raises ``RecipeError``."""
    if kind is not None:
        recipe = config.load_recipe(path, sets, kind=RECIPE_KINDS[kind].recipe)
    else:
        recipe = config.load_any(path, sets, kinds)
    if files:
        config.check_values(recipe, config.FILE_CHECKS, str(path) if path is not None else None, sets)
    return recipe


def list_recipes() -> list[Any]:
    """Every packaged recipe: ``RecipeSummary`` (name, kind, method, purpose, path), by name."""
    return config.recipe_summaries()


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
                           segmentation_only: Mapping[str, Any] | None = None,
                           mode: str | None = None) -> Any:
    """The recipe of `cmcr finetune` / `cmcr probe` (`mode`, when given, must be the segmentation recipe's
    train.mode): LiDAR segmentation, or object classification (`task: classification`), which refuses the
    segmentation-only options given (``SEGMENTATION_ONLY`` flag -> value; a flag counts as given unless its
    value is None or False). The teacher files it names must exist."""
    options = {"--label-fraction": label_fraction, **(segmentation_only or {})}
    if config.detect_kind(path, sets, ("finetune", "classification")) == "classification":
        given = [flag for flag in SEGMENTATION_ONLY if options.get(flag) not in (None, False)]
        if given:
            raise ValueError(f"{', '.join(given)}: not available for object classification; {path} has "
                             "task: classification (these options are for segmentation recipes); drop them")
        return load_recipe(path, sets, kind="classification", files=True)
    if label_fraction is not None:
        sets = [*sets, f"data.label_fraction={label_fraction}"]
    recipe = load_recipe(path, sets, kind="finetune", files=True)
    if mode is not None and recipe.train.mode != mode:
        other = "probe" if mode == "finetune" else "finetune"
        raise RecipeError(f"{path} is a {recipe.train.mode} recipe (train.mode: {recipe.train.mode}); use "
                          f"`cmcr {other}` with it, or a {mode} recipe (`cmcr recipe list`)")
    return recipe


def non_finite_loss_error() -> type[Exception]:
    """The engine's exception for a NaN/Inf loss (the message names the step, loss and last checkpoint)."""
    from cmcr_core.engine.loop import NonFiniteLossError

    return NonFiniteLossError


def resolve_device(name: str) -> str:
    """``auto`` = ``cuda`` when available, else ``cpu``."""
    from cmcr_core.engine.runner import resolve_device as resolve

    return resolve(name)


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op CPU threads of this process (None leaves torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _claim(out: str | Path, overwrite: bool) -> Path:
    from cmcr_core.runs.run_folder import claim_output

    claim_output(out, overwrite)
    return Path(out)


def _replace_run(out: str | Path, resume: bool, overwrite: bool) -> Path:
    """A training run's folder: with ``overwrite`` (not with ``resume``) a finished run there is deleted."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite deletes it: choose one")
    if overwrite:
        _claim(out, overwrite=True)
    return Path(out)


# --- training and evaluation ----------------------------------------------------------------------------


def pretrain(recipe: Any, out: str | Path | None = None, resume: bool = False,
             overwrite: bool = False) -> Any:
    """`cmcr pretrain`: a LiDAR pretraining recipe, or ReCon on objects (`method: recon`); ``overwrite``
    deletes a run already in `out` first."""
    out = _replace_run(out or default_run_folder(recipe), resume, overwrite)
    if isinstance(recipe, config.ReconRecipe):
        from cmcr_core.runs.objects import run_recon_pretraining

        return run_recon_pretraining(recipe, out, resume=resume)
    from cmcr_core.runs.pretrain import run_pretraining

    return run_pretraining(recipe, out, resume=resume)


def finetune(recipe: Any, mode: str, out: str | Path | None = None, weights: str | Path | None = None,
             seeds: int = 1, overwrite: bool = False, **segmentation: Any) -> Any:
    """`cmcr finetune` (mode "finetune") / `cmcr probe` ("probe"); returns the result's ``Report``.

    ``segmentation``: ``resume``, ``allow_voxel_mismatch``, ``export_predictions`` (LiDAR recipes only).
    `weights` is read before anything is written (an unreadable file names itself and what was expected);
    ``overwrite`` deletes a run already in `out`.
    """
    if weights is not None:
        check_checkpoint(weights)
    out = _replace_run(out or default_run_folder(recipe), segmentation.get("resume", False), overwrite)
    if isinstance(recipe, config.ObjectClassifyRecipe):
        from cmcr_core.runs.object_protocols import classification_report, run_classification

        return classification_report(run_classification(recipe, mode, out, weights, seeds), out)
    from cmcr_core.runs.finetune import run_mode

    return run_mode(recipe, mode, out, seeds, weights=weights, **segmentation).report()


def evaluate(weights: str | Path, data: str | Path | None = None, split: str | None = None, tta: bool = False,
             out: str | Path | None = None, overwrite: bool = False,
             export_predictions: str | Path | None = None, device: str = "auto",
             batch_size: int | None = None) -> Any:
    """`cmcr evaluate`: a fine-tuned run (its best.pt, last.pt or checkpoint.pt) or checkpoint scored on a
    split (``cmcr_core.runs.evaluate.run_evaluate``); `out` receives metrics.json (an `out` holding cmcr
    output is replaced only with ``overwrite``). Returns the result (``report()``)."""
    from cmcr_core.runs.evaluate import find_weights, run_evaluate

    check_checkpoint(find_weights(weights))
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if out is not None:
        _claim(out, overwrite)
    return run_evaluate(weights, data, split, tta, out, export_predictions, device=resolve_device(device),
                        batch_size=batch_size)


def render(data: str | Path, out: str | Path, sample: str = "0", split: str | None = None,
           weights: str | Path | None = None, device: str = "auto", overwrite: bool = False,
           extent: float = 40.0) -> Any:
    """`cmcr render`: a PNG of one prepared scan, with a fine-tuned run's prediction or a pretraining
    checkpoint's features when `weights` is given (``cmcr_core.runs.render.render_scan``); an existing
    `out` is replaced only with ``overwrite``."""
    from cmcr_core.runs.evaluate import find_weights
    from cmcr_core.runs.render import render_scan

    if weights is not None:
        check_checkpoint(find_weights(weights))
    if not extent > 0:
        raise ValueError(f"--extent must be > 0 metres, got {extent}")
    _claim(out, overwrite)
    return render_scan(data, out, sample, split, weights, device=resolve_device(device), extent=extent)


def train_teacher(recipe: config.TeacherTrainRecipe, out: str | Path | None = None,
                  resume: bool = False, overwrite: bool = False) -> Any:
    """`cmcr teacher train`: the compact semantic teacher; `teacher.pt` once the last step is done."""
    from cmcr_core.runs.teacher import run_teacher_training

    out = _replace_run(out or default_run_folder(recipe), resume, overwrite)
    return run_teacher_training(recipe, out, resume=resume)


def check_checkpoint(path: str | Path) -> None:
    """Read a ``--weights`` file once: ValueError naming the file and what was expected when it cannot be
    read (truncated, not a PyTorch file), FileNotFoundError when it is missing."""
    from cmcr_core.ops.files import load_torch_file

    load_torch_file(path, "--weights: no such file: {path}", expected=CHECKPOINT_EXPECTED)


CHECKPOINT_EXPECTED = ("a checkpoint written by `cmcr pretrain` (RUN/checkpoint.pt) or a MinkowskiEngine / "
                       "SLidR-style .pt file")


def read_teacher_file(path: str | Path) -> dict[str, Any]:
    """`cmcr teacher info`: the raw content of a `cmcr-teacher` file."""
    from cmcr_core.runs.teacher import read_teacher_file as read

    return read(path)


def evaluate_teacher(path: str | Path, world: str | Path, scenes: Sequence[str] = (), device: str = "auto",
                     out: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """`cmcr teacher eval`: scores of a trained teacher file on a world's camera truth, also written to the
    JSON file `out` when given (an existing one is replaced only with ``overwrite``)."""
    from cmcr_core.runs.run_folder import write_json
    from cmcr_core.runs.teacher import evaluate_teacher_file

    if out is not None:
        _claim(out, overwrite)
    scores = evaluate_teacher_file(path, world, scenes=scenes, device=device)
    if out is not None:
        write_json(out, scores)
    return scores


def analyze(weights: Sequence[str | Path], data: str | Path | None, out: str | Path, device: str = "auto",
            overwrite: bool = False, features: Sequence[str | Path] = (), **options: Any) -> Any:
    """`cmcr analyze`: structure of pretrained spaces (``cmcr_core.runs.analyze.analyze_runs`` options), or
    of features computed elsewhere (`features`: .npz files, ``analyze_feature_files``; `miou_file` is the
    only option then); every input is read before `out` is touched."""
    from cmcr_core.runs.analyze import analyze_feature_files, analyze_runs, read_feature_file

    if features:
        if weights or data is not None:
            raise ValueError("--features replaces --weights and --data: pass either the features files or "
                             "the checkpoints and the prepared folder")
        for path in features:
            read_feature_file(path)
        _claim(out, overwrite)
        return analyze_feature_files(features, out, options.get("miou_file"), device=resolve_device(device))
    if not weights or data is None:
        raise ValueError("pass --weights CHECKPOINT (repeatable) and --data PREPARED, or --features FILE.npz")
    for path in weights:
        check_checkpoint(path)
    _claim(out, overwrite)
    return analyze_runs(weights, data, out, device=resolve_device(device), **options)


def toy(clusters: int, out: str | Path, iterations: int = 400, seed: int = 0, overwrite: bool = False
        ) -> dict[str, Any]:
    """`cmcr analyze toy`: the toy distillation with every loss; returns the summary of toy.json."""
    from cmcr_core.runs.analyze import run_toy

    _claim(out, overwrite)
    return run_toy(clusters, out, iterations=iterations, seed=seed)


def zeroshot(weights: str | Path | None, data: str | Path, out: str | Path | None = None, split: str = "val",
             batch_size: int = 4, device: str = "auto", overwrite: bool = False, **classes: Any) -> Any:
    """`cmcr zeroshot`; ``classes`` are the fields of ``cmcr_core.runs.zeroshot.ClassSource``."""
    from cmcr_core.runs.zeroshot import ClassSource, run_zeroshot

    if weights is None:
        raise ValueError("--weights: zero-shot segmentation needs a pretraining checkpoint")

    source = ClassSource(**classes)
    check_checkpoint(weights)
    out = _claim(out or Path("runs") / f"zeroshot_{Path(weights).parent.name}", overwrite)
    return run_zeroshot(weights, data, out, split=split, batch_size=batch_size, device=resolve_device(device),
                        classes=source)


def zeroshot_objects(recipe: str | Path | None, sets: Sequence[str], weights: str | Path | None = None,
                     out: str | Path | None = None, text_embeddings: str | Path | None = None,
                     clip: str | Path | None = None, device: str = "auto", overwrite: bool = False) -> Any:
    """`cmcr zeroshot --objects`: zero-shot classification with a `task: classification` recipe's `zeroshot`
    section (``cmcr_core.runs.object_zeroshot``); without `weights`, the recipe's encoder at random
    initialisation; returns the ``Report``."""
    from cmcr_core.runs.object_zeroshot import run_object_zeroshot, zeroshot_report

    if recipe is None:
        raise ValueError("--objects: give --recipe (a task: classification recipe, e.g. "
                         "recipes/recon_zeroshot_modelnet40.yaml)")
    resolved = config.load_recipe(recipe, sets, kind=config.ObjectClassifyRecipe)
    if weights is not None:
        check_checkpoint(weights)
    out = _claim(out or default_run_folder(resolved), overwrite)
    metrics = run_object_zeroshot(resolved, out, weights, text_embeddings, clip, resolve_device(device))
    return zeroshot_report(metrics, out)


def demo(out: str | Path, quick: bool = False, seeds: int | None = None, threads: int = 2,
         overwrite: bool = False, recipes: str | Path | None = None, device: str = "auto",
         say: Callable[[str], None] | None = None) -> Any:
    """`cmcr demo`: run (or continue) the whole chain into `out` (``overwrite``: delete a demo of other
    settings there first); `say` receives one line per stage (default: ``run_demo``'s, standard output)."""
    from cmcr_core.demo.stages import run_demo

    lines = {} if say is None else {"say": say}
    return run_demo(out, quick=quick, seeds=seeds, threads=threads, force=overwrite, recipes_dir=recipes,
                    device=device, **lines)


# --- data preparation -----------------------------------------------------------------------------------


def parse_image_size(text: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" -> (width, height) of a synthetic world's cameras; a ValueError names a bad value."""
    from cmcr_core.data.synthetic import parse_image_size as parse

    return parse(text)


def write_synthetic_world(out: str | Path, scenes: int, samples_per_scene: int, seed: int,
                          image_size: tuple[int, int], overwrite: bool = False, workers: int = 1,
                          progress: Callable[[int, int], None] | None = None) -> Any:
    """`cmcr prepare synthetic`: the world and the time it took (``report()`` says what was written)."""
    from cmcr_core.runs.prepare import write_synthetic_world as write

    return write(out, scenes, samples_per_scene, seed, image_size, overwrite, workers, progress)


def plan_nuscenes(dataroot: str | Path, version: str, out: str | Path, overwrite: bool = False,
                  **options: Any) -> Any:
    """`cmcr prepare nuscenes`, first half: the checked options and this job's plan (an existing prepared
    folder resumes; ``overwrite`` deletes it and starts again)."""
    from cmcr_core.runs.prepare import plan_nuscenes as plan

    return plan(dataroot, version, out, overwrite=overwrite, **options)


def prepare_nuscenes(plan: Any, workers: int = 1, progress: Callable[[int], None] | None = None) -> Any:
    """`cmcr prepare nuscenes`, second half: build the planned shards; returns the prepare report."""
    from cmcr_core.data.prepare_nuscenes import run_prepare

    return run_prepare(plan, workers=workers, progress=progress)


def prepared_summary(out: str | Path) -> dict[str, Any]:
    """`cmcr prepare info`: what a prepared folder holds."""
    from cmcr_core.data.prepared import prepared_summary as summary

    return summary(out)


def verify_prepared(data: str | Path, retry_failed: bool = False, dataroot: str | Path | None = None,
                    workers: int = 1) -> Any:
    """`cmcr prepare verify`: every sample of a prepared folder read against its checksums; with
    ``retry_failed`` the damaged files are rebuilt from the raw dataset (`dataroot`, default: the one the
    folder was prepared from) and checked again. The result's ``damaged`` says whether damage is left."""
    from cmcr_core.runs.prepare import verify_data

    return verify_data(data, retry_failed, dataroot, workers)


def write_synthetic_kitti(root: str | Path, sequences: str, scans_per_sequence: int, seed: int,
                          overwrite: bool = False) -> Any:
    """`cmcr prepare semantickitti --synthetic`; ``sequences`` is a comma-separated list."""
    from cmcr_core.runs.prepare import write_synthetic_kitti as write

    return write(root, [s.strip() for s in sequences.split(",")], scans_per_sequence, seed, overwrite)


def prepare_kitti(root: str | Path, out: str | Path, overwrite: bool = False) -> Any:
    """`cmcr prepare semantickitti`: per-sequence shards (an existing prepared folder resumes; ``overwrite``
    deletes it and starts again); returns the ``Report``."""
    from cmcr_core.runs.prepare import prepare_kitti as prepare

    return prepare(root, out, overwrite)


def write_synthetic_objects(out: str | Path, overwrite: bool = False, **options: Any) -> Any:
    """`cmcr prepare objects --synthetic`: (layout roots, ``Report``); objects already in `out` are
    replaced only with ``overwrite``."""
    from cmcr_core.runs.prepare import write_synthetic_objects as write

    return write(out, overwrite=overwrite, **options)


def prepare_object_targets(root: str | Path, out: str | Path, overwrite: bool = False, **options: Any) -> Any:
    """`cmcr prepare objects`: ReCon teacher targets written to `out` (a .npz, or OUT/teacher_targets.npz);
    an existing targets file is replaced only with ``overwrite``; returns the ``Report``."""
    from cmcr_core.runs.prepare import prepare_object_targets as prepare

    return prepare(root, out, overwrite, **options)
