"""Real `cmcr-train` pretraining checkpoints of a narrow student (cylindrical and cartesian voxels), for the
loading and downstream tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cmcr_core.engine.loop import TrainSettings, train
from cmcr_core.engine.method import Method
from cmcr_core.engine.schedules import OptimizerSettings
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.sparse import SparseTensor

TINY_UNET = {"planes": (8, 8, 8, 8, 8, 8, 8, 8), "layers": (1,) * 8, "init_dim": 8}
"""A narrow MinkUNet: the tests check behaviour, not accuracy."""


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
                                 planes: tuple[int, ...] = TINY_UNET["planes"],
                                 intensity_scale: float = 1.0) -> Path:
    """A real `cmcr-train` checkpoint: 2 engine steps of a student with a 64-channel head."""
    student = MinkUNet34C(1, 64, planes=planes, layers=TINY_UNET["layers"], init_dim=TINY_UNET["init_dim"])
    student.init_weights(torch.Generator().manual_seed(11))
    generator = torch.Generator().manual_seed(5)
    coords = torch.unique(torch.randint(0, 64, (600, 3), generator=generator), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int64), coords], 1).int()
    feats = torch.rand(len(coords), 1, generator=generator)
    recipe = {"name": "toy", "method": "ppkt",
              "data": {"voxel_size": voxel_size, "cylindrical": cylindrical,
                       "intensity_scale": intensity_scale}}
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
