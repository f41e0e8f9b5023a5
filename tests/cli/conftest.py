"""A small semantic-teacher file whose meta holds class prototypes, and a tiny relational run distilled
from it (2 steps) on the shared synthetic world."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cmcr_core.config import load_recipe
from cmcr_core.models.semantic_teacher import SEMANTIC_TEACHER_ARCH, CompactSemanticNet
from cmcr_core.models.teacher import save_teacher
from cmcr_core.runs.pretrain import run_pretraining

torch.set_num_threads(1)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
DIM = 16
ABSENT = (1, 8)  # classes whose prototype is missing (prototype_present False): bicycle, trailer


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 16-d compact semantic network with random unit prototypes (two classes absent)."""
    torch.manual_seed(0)
    widths = (8, 8, 8, DIM)
    encoder = CompactSemanticNet(widths=widths)
    raw = torch.randn(16, DIM, generator=torch.Generator().manual_seed(1))
    prototypes = torch.nn.functional.normalize(raw, dim=1)
    present = [c not in ABSENT for c in range(16)]
    prototypes[list(ABSENT)] = 0
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_teacher(path, encoder, SEMANTIC_TEACHER_ARCH, {"widths": list(widths)},
                 {"prototypes": prototypes, "prototype_present": present})
    return path


@pytest.fixture(scope="session")
def run(prepared_world: Path, teacher_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoint of a 2-step relational run from `teacher_file` (student out 16)."""
    sets = [f"data.path={prepared_world}", f"teacher.weights={teacher_file}", f"student.out_channels={DIM}",
            "data.crop_size=[64,112]", "data.min_pairs=64", "data.num_workers=0", "data.split=mini_train",
            "loss.num_matches=256", "student.planes=[8,8,16,16,16,16,8,8]", "student.init_dim=8",
            "train.max_steps=2", "train.checkpoint_every=0", "train.device=cpu"]
    recipe = load_recipe(RECIPES / "relational_synthetic.yaml", sets)
    out = tmp_path_factory.mktemp("zeroshot_run") / "relational"
    run_pretraining(recipe, out)
    return out / "checkpoint.pt"
