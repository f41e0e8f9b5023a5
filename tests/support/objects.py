"""Object point clouds: small synthetic objects in memory, tiny synthetic objects in every layout on disk
(`cmcr prepare objects --synthetic`) and one short ReCon pretraining run (`cmcr pretrain`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.data.objects import SyntheticObjects, make_synthetic_objects
from support import RECIPES

CLASSES = ("box", "sphere", "cylinder", "torus")
# tiny pretraining: preset ci (C = 32, G = 8, K = 16), 128 points, batch 8 -> 4 steps per epoch
PRETRAIN_SETS = [
    "model.preset=ci",
    "data.num_points=128",
    "data.batch_size=8",
    "train.epochs=6",
    "train.log_every=1",
    "optim.lr=2e-3",
]


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def objects_root(tmp_path_factory: pytest.TempPathFactory, runner: CliRunner) -> Path:
    """`cmcr prepare objects --synthetic`: 4 train + 2 test objects per class (8 classes), 512 points."""
    root = tmp_path_factory.mktemp("objects")
    result = runner.invoke(
        app,
        [
            "prepare",
            "objects",
            "--synthetic",
            "--out",
            str(root),
            "--image-size",
            "32",
            "--train-per-class",
            "4",
            "--test-per-class",
            "2",
            "--points",
            "512",
        ],
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="session")
def pretrain_run(objects_root: Path, tmp_path_factory: pytest.TempPathFactory, runner: CliRunner) -> Path:
    """`cmcr pretrain --recipe recipes/recon_synthetic.yaml` for 24 steps; returns the run folder."""
    out = tmp_path_factory.mktemp("runs") / "pre"
    args = [
        "pretrain",
        "--recipe",
        str(RECIPES / "recon_synthetic.yaml"),
        "--data",
        str(objects_root / "ShapeNet55-34"),
        "--out",
        str(out),
        "--set",
        f"data.targets={objects_root / 'teacher_targets.npz'}",
    ]
    for item in PRETRAIN_SETS:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def small_objects() -> tuple[SyntheticObjects, SyntheticObjects]:
    """(train, test): 4 classes, 6 + 2 objects per class, 256 points, 16 x 16 renders."""
    train = make_synthetic_objects(6, 256, seed=3, classes=CLASSES, image_size=16)
    test = make_synthetic_objects(2, 256, seed=3, classes=CLASSES, image_size=16, first_index=24)
    return train, test
