"""Fixtures of the fine-tuning tests: the shared synthetic world prepared once, a tiny recipe, and real
`cmcr-train` checkpoints written by the engine (cartesian and cylindrical pretraining)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cmcr_core.config import FinetuneRecipe
from cmcr_core.engine.loop import TrainSettings, train
from cmcr_core.engine.method import Method
from cmcr_core.engine.schedules import OptimizerSettings
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.sparse import SparseTensor

torch.set_num_threads(1)

TINY = {"planes": (8, 8, 8, 8, 8, 8, 8, 8), "layers": (1,) * 8, "init_dim": 8}
"""A narrow MinkUNet: the tests check behaviour, not accuracy."""


@pytest.fixture(scope="session")
def prepared_world(synthetic_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared 5-scene world (mini_train: scene-0061, scene-1094, scene-0553; mini_val: scene-0103,
    scene-0916; 2 keyframes each) prepared without superpixels."""
    from cmcr_core.data.prepare_nuscenes import PrepareOptions, prepare_nuscenes

    out = tmp_path_factory.mktemp("prepared_finetune")
    report = prepare_nuscenes(synthetic_world, "v1.0-mini", out, PrepareOptions(superpixels="none"))
    assert not report.failures
    return out


@pytest.fixture(scope="session")
def tiny_recipe(prepared_world: Path) -> FinetuneRecipe:
    """Fine-tuning on the 3rd mini_train scene (skip 3 for fraction 0.01), 2 steps, batch 2."""
    base = FinetuneRecipe()
    return replace(
        base,
        name="tiny",
        data=replace(base.data, path=str(prepared_world), train_split="mini_train", val_split="mini_val",
                     fraction_skips=(3, 2, 1, 1, 1), batch_size=2, eval_batch_size=2, num_workers=0),
        model=replace(base.model, **TINY),
        train=replace(base.train, epochs=2, checkpoint_every=0, log_every=1, device="cpu"),
    )


class _StudentOnly(Method):
    """Minimal pretraining method: pulls the student's output towards 0.1 (moves weights and BN stats)."""

    def __init__(self, student: MinkUNet34C) -> None:
        super().__init__()
        self.student = student

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats, coords = batch
        return {"l2": (self.student(SparseTensor(feats, coords)).features - 0.1).pow(2).mean()}

    def handoff(self) -> dict:
        return {"student": self.student.state_dict(), "teacher": {"arch": "none"}}


def write_pretraining_checkpoint(out: Path, cylindrical: bool, voxel_size: float = 0.1,
                                 planes: tuple[int, ...] = TINY["planes"]) -> Path:
    """A real `cmcr-train` checkpoint: 2 engine steps of a student with a 64-channel head."""
    student = MinkUNet34C(1, 64, planes=planes, layers=TINY["layers"], init_dim=TINY["init_dim"])
    student.init_weights(torch.Generator().manual_seed(11))
    generator = torch.Generator().manual_seed(5)
    coords = torch.unique(torch.randint(0, 64, (600, 3), generator=generator), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int64), coords], 1).int()
    feats = torch.rand(len(coords), 1, generator=generator)
    recipe = {"name": "toy", "method": "ppkt",
              "data": {"voxel_size": voxel_size, "cylindrical": cylindrical, "intensity_scale": 1.0}}
    settings = TrainSettings(total_steps=2, optimizer=OptimizerSettings(name="sgd", lr=0.1),
                             checkpoint_every=0)
    result = train(_StudentOnly(student), lambda epoch, start: [(feats, coords)] * (2 - start), out, settings,
                   recipe=recipe)
    assert result.checkpoint is not None
    return result.checkpoint


@pytest.fixture(scope="session")
def cylindrical_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pretraining_checkpoint(tmp_path_factory.mktemp("pre_cyl"), cylindrical=True)


@pytest.fixture(scope="session")
def cartesian_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pretraining_checkpoint(tmp_path_factory.mktemp("pre_cart"), cylindrical=False)
