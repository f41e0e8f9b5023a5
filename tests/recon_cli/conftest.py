"""Shared fixtures: tiny synthetic objects in every layout and one short ReCon pretraining run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cmcr_cli.app import app

torch.set_num_threads(1)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
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
