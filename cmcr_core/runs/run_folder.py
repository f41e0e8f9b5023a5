"""What a run folder holds, named once, and the checks and writes every workflow makes on its folder.

A training run folder holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (the engine's log)
and ``checkpoint.pt`` (the engine's checkpoint, docs/checkpoints.md); a workflow adds its own results:
``metrics.json`` (evaluation), ``init.json`` (how a downstream network was initialised), ``teacher.pt``
(a trained teacher), ``structure.json`` (analysis), ``class_embeddings.npy`` (zero-shot). Several seeds
of one run live in ``seed<S>/`` folders under it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cmcr_core import config
from cmcr_core.engine.checkpoint import CHECKPOINT_NAME
from cmcr_core.engine.loop import METRICS_NAME
from cmcr_core.ops.atomic import atomic_write_text

__all__ = [
    "CHECKPOINT",
    "CLASS_EMBEDDINGS",
    "INIT_JSON",
    "METRICS_JSON",
    "METRICS_JSONL",
    "RECIPE_YAML",
    "STRUCTURE_JSON",
    "TEACHER_FILE",
    "OUTPUT_MARKERS",
    "check_run_folder",
    "claim_output",
    "read_json",
    "recipe_file",
    "seed_folder",
    "write_json",
]

RECIPE_YAML = "recipe.yaml"
CHECKPOINT = CHECKPOINT_NAME  # written by the engine
METRICS_JSONL = METRICS_NAME  # written by the engine
METRICS_JSON = "metrics.json"
INIT_JSON = "init.json"
TEACHER_FILE = "teacher.pt"
STRUCTURE_JSON = "structure.json"
CLASS_EMBEDDINGS = "class_embeddings.npy"

# What marks a folder as cmcr's output (glob patterns): `--overwrite` deletes only such a folder, so a
# mistyped `--out` never empties an unrelated one. Run folders, seed folders, analysis, toy and zero-shot
# results, prepared nuScenes / SemanticKITTI folders (their index files), object layouts and targets.
OUTPUT_MARKERS: tuple[str, ...] = (
    RECIPE_YAML, CHECKPOINT, METRICS_JSONL, METRICS_JSON, STRUCTURE_JSON, CLASS_EMBEDDINGS, TEACHER_FILE,
    "toy*.json", "seed*", "index-*.json", "teacher_targets.npz", "ShapeNet55-34", "modelnet40_*",
    "ScanObjectNN",
)


def seed_folder(out_dir: str | Path, seed: int) -> Path:
    """The folder of one seed of a multi-seed run."""
    return Path(out_dir) / f"seed{seed}"


def recipe_file(recipe: Any) -> dict[str, str]:
    """``{recipe.yaml: the resolved recipe as YAML}``: what every training run writes first."""
    return {RECIPE_YAML: config.dump(recipe)}


def write_json(path: str | Path, payload: Any, indent: int = 1, newline: bool = True) -> Path:
    """Write a result file (atomically): ``json.dumps(payload, indent)``, a final newline when ``newline``."""
    return atomic_write_text(path, json.dumps(payload, indent=indent) + ("\n" if newline else ""))


def read_json(path: str | Path) -> Any:
    """The content of a JSON result file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_run_folder(recipe: Any, out_dir: str | Path, resume: bool) -> None:
    """Refuse to overwrite a finished or interrupted run, and to resume with a different recipe."""
    out_dir = Path(out_dir)
    checkpoint, saved = out_dir / CHECKPOINT, out_dir / RECIPE_YAML
    if not resume and checkpoint.exists():
        raise FileExistsError(f"{checkpoint} exists: pass --resume to continue it, --overwrite to start "
                              "again, or choose another --out")
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
        if saved.exists():
            before = config.to_dict(config.load(type(recipe), saved))
            now = config.to_dict(recipe)
            changed = sorted(
                f"{section}.{key}"
                for section, values in now.items()
                if isinstance(values, dict)
                for key in values
                if before.get(section, {}).get(key) != values[key]
            )
            if changed:
                raise ValueError(f"--resume with a recipe that differs from {saved} in: {', '.join(changed)}")


def claim_output(path: str | Path, overwrite: bool) -> None:
    """Make `path` free for a command that writes it from scratch: absent or an empty folder is free; an
    existing file, or a folder holding cmcr output (`OUTPUT_MARKERS`), is deleted with `overwrite`.

    Raises FileExistsError without `overwrite`, or for a non-empty folder that holds no cmcr output (never
    deleted), and ValueError under torchrun with several processes (each would delete: remove the folder
    before launching).
    """
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists: pass --overwrite to replace it, or choose another --out")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"--overwrite under torchrun with several processes: remove {path} before launching "
                         "(every process would delete it), or choose another --out")
    if path.is_file() or path.is_symlink():
        path.unlink()
        return
    if not any(any(path.glob(marker)) for marker in OUTPUT_MARKERS):
        raise FileExistsError(f"--overwrite: {path} holds no cmcr output ({', '.join(OUTPUT_MARKERS)}); it "
                              "is left as it is: choose another --out or empty it yourself")
    shutil.rmtree(path)
