"""Recipes: frozen dataclasses whose defaults live in code, YAML files of overrides, strict loading.

* `schema` — the LiDAR recipes (`PretrainRecipe`, `TeacherTrainRecipe`, `FinetuneRecipe`) and their sections;
* `objects` — the object-level (ReCon) recipes (`ReconRecipe`, `ObjectClassifyRecipe`);
* `loading` — YAML overrides, `base:` links, `--set` assignments, type checks, `dump` / `save`;
* `kinds` — the five recipe kinds and the one detection of a file's kind (`load_any`);
* `packaged` — the recipes shipped in the package, found by name (`find_recipe`);
* `checks` — the value checks every recipe passes at load (ranges, positive rates, existing files).

Everything public is exported here: `from cmcr_core.config import PretrainRecipe, load_any`. This package
imports no torch.
"""

from cmcr_core.config.checks import CHECKS, FILE_CHECKS
from cmcr_core.config.errors import RecipeError
from cmcr_core.config.kinds import (
    RECIPE_KINDS,
    RecipeKind,
    detect_kind,
    kind_of,
    load_any,
    load_recipe,
    recipe_summaries,
)
from cmcr_core.config.loading import (
    BASE_KEY,
    apply_sets,
    build,
    check_values,
    dump,
    load,
    parse_set,
    read_overrides,
    replace,
    resolve,
    save,
    to_dict,
)
from cmcr_core.config.objects import (
    FewShotConfig,
    ObjectClassifyRecipe,
    ObjectDataConfig,
    ObjectEvalConfig,
    ReconLossConfig,
    ReconModelConfig,
    ReconOptimConfig,
    ReconRecipe,
    ZeroShotConfig,
)
from cmcr_core.config.packaged import RecipeSummary, find_recipe, packaged_recipe_names, packaged_recipes_dir
from cmcr_core.config.schema import (
    DataConfig,
    FinetuneDataConfig,
    FinetuneLossConfig,
    FinetuneModelConfig,
    FinetuneOptimConfig,
    FinetuneRecipe,
    FinetuneTrainConfig,
    LossConfig,
    OptimConfig,
    PretrainRecipe,
    SemanticNetConfig,
    StudentConfig,
    TeacherConfig,
    TeacherLossConfig,
    TeacherTrainRecipe,
    TrainConfig,
    TruthDataConfig,
)

__all__ = [
    "BASE_KEY",
    "CHECKS",
    "FILE_CHECKS",
    "RECIPE_KINDS",
    "DataConfig",
    "FewShotConfig",
    "FinetuneDataConfig",
    "FinetuneLossConfig",
    "FinetuneModelConfig",
    "FinetuneOptimConfig",
    "FinetuneRecipe",
    "FinetuneTrainConfig",
    "LossConfig",
    "ObjectClassifyRecipe",
    "ObjectDataConfig",
    "ObjectEvalConfig",
    "OptimConfig",
    "PretrainRecipe",
    "RecipeError",
    "RecipeKind",
    "RecipeSummary",
    "ReconLossConfig",
    "ReconModelConfig",
    "ReconOptimConfig",
    "ReconRecipe",
    "ZeroShotConfig",
    "SemanticNetConfig",
    "StudentConfig",
    "TeacherConfig",
    "TeacherLossConfig",
    "TeacherTrainRecipe",
    "TrainConfig",
    "TruthDataConfig",
    "apply_sets",
    "build",
    "check_values",
    "detect_kind",
    "dump",
    "find_recipe",
    "kind_of",
    "load",
    "load_any",
    "load_recipe",
    "packaged_recipe_names",
    "packaged_recipes_dir",
    "parse_set",
    "recipe_summaries",
    "read_overrides",
    "replace",
    "resolve",
    "save",
    "to_dict",
]
