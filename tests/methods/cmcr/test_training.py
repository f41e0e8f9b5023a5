"""CMCR end to end on the synthetic world, on the test device (CMCR_TEST_DEVICE): every loss finite, the
total falls, resume is exact (on the CPU; within the rerun tolerance elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cmcr_toys import Subsampled
from support import RECIPES

from cmcr_core.config import load_recipe
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.engine import load_checkpoint
from cmcr_core.runs.pretrain import run_pretraining

RECIPE = RECIPES / "cmcr_synthetic.yaml"
LOSSES = ("point_nce", "orthogonality", "commit_points", "commit_pixels", "cmcm", "mim", "occupancy",
          "intensity")
STEPS = 8
OVERRIDES = [
    "data.crop_size=[56,104]", "data.min_pairs=64", "data.num_workers=0", "loss.num_matches=256",
    "loss.occupancy_queries=256", f"train.max_steps={STEPS}", "train.checkpoint_every=4", "train.log_every=1",
]


def recipe_for(prepared: Path, device):
    return load_recipe(RECIPE, [f"data.path={prepared}", *OVERRIDES, f"train.device={device}"])


@pytest.fixture(scope="module")
def source(cmcr_prepared):
    # Every 8th point (about 4k per sweep) keeps the sparse student fast; pairs of the kept points stay.
    return Subsampled(PreparedDataset(cmcr_prepared, "all"), 8)


@pytest.fixture(scope="module")
def full_run(source, cmcr_prepared, tmp_path_factory, device):
    out = tmp_path_factory.mktemp("cmcr_run")
    return run_pretraining(recipe_for(cmcr_prepared, device), out, source=source)


def test_every_loss_is_finite_and_the_total_falls(full_run):
    records = full_run.result.records
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        assert all(np.isfinite(r[name]) for name in LOSSES), r
        assert 1 <= r["codebook_perplexity"] <= r["codebook_active"] <= 400
    totals = np.array([r["total"] for r in records])
    assert totals[-3:].mean() < totals[:3].mean() - 0.05, totals
    # MIM must really reconstruct the masked input's target: its loss falls too.
    mim = np.array([r["mim"] for r in records])
    assert mim[-3:].mean() < mim[:3].mean(), mim


def test_checkpoint_holds_the_codebook_and_hands_off_the_student_only(full_run):
    payload = load_checkpoint(full_run.out_dir / "checkpoint.pt")
    model = payload["model"]
    assert {"codebook.embedding", "codebook.ema_weight", "codebook.ema_count"} <= set(model)
    assert not any(k.startswith("teacher.") for k in model)
    student = payload["student"]
    assert "final.kernel" in student and not any("codebook" in k or "class_level" in k for k in student)
    assert np.allclose(model["codebook.embedding"].norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_resume_after_a_stop_reproduces_the_uninterrupted_losses(full_run, source, cmcr_prepared, tmp_path,
                                                                  device, tolerance):
    recipe = recipe_for(cmcr_prepared, device)
    first = run_pretraining(recipe, tmp_path, source=source, stop_at=STEPS // 2)
    assert first.result.position.step == STEPS // 2
    resumed = run_pretraining(recipe, tmp_path, resume=True, source=source)
    got = {r["step"]: r for r in first.result.records + resumed.result.records}
    for expected in full_run.result.records:
        for name in (*LOSSES, "codebook_perplexity", "codebook_active", "total"):
            rel = max(1e-6, tolerance.rerun(device))
            assert got[expected["step"]][name] == pytest.approx(expected[name], rel=rel, abs=1e-7), (
                expected["step"], name)
