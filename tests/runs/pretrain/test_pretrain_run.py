"""`cmcr pretrain` end to end on the synthetic world, training on the test device (CMCR_TEST_DEVICE, through
`tiny_sets`): learning, resume, NaN guard, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core import config
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.engine.loop import NonFiniteLossError
from cmcr_core.runs.pretrain import run_pretraining

from .conftest import RECIPES


def losses_of(run_dir: Path) -> list[float]:
    return [json.loads(line)["total"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["ppkt", "slidr"])
def test_losses_fall_over_training(method, tiny_sets, tmp_path):
    recipe = config.load_recipe(RECIPES / f"{method}_synthetic.yaml", [*tiny_sets, "train.max_steps=50"])
    run = run_pretraining(recipe, tmp_path / method)
    losses = [r["total"] for r in run.result.records]
    assert len(losses) == 50 and all(np.isfinite(losses))
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.05, losses
    saved = load_checkpoint(tmp_path / method / "checkpoint.pt")
    assert saved["recipe"]["method"] == method and "student" in saved
    assert (tmp_path / method / "recipe.yaml").exists()


def test_resume_reproduces_the_uninterrupted_losses(tiny_sets, tmp_path, device, tolerance):
    recipe = config.load_recipe(RECIPES / "ppkt_synthetic.yaml", [*tiny_sets, "train.max_steps=6"])
    straight = run_pretraining(recipe, tmp_path / "straight")
    run_pretraining(recipe, tmp_path / "stopped", stop_at=3)
    assert len(losses_of(tmp_path / "stopped")) == 3
    resumed = run_pretraining(recipe, tmp_path / "stopped", resume=True)
    assert resumed.result.position.step == 6
    tolerance.same(device, losses_of(tmp_path / "stopped"), losses_of(tmp_path / "straight"))
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["student"]
    b = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["student"]
    for k in a:
        tolerance.same(device, b[k], a[k], msg=k)
    assert straight.result.position.step == 6


def test_the_checkpoint_holds_the_state_of_the_generator_that_drew(tiny_sets, tmp_path, device):
    """The pair generator draws on the training device; the checkpoint holds its state after the steps (a
    generator handed over before the method moved there would stay at its seed, and a resumed run would
    draw the first steps' pairs again)."""
    recipe = config.load_recipe(RECIPES / "ppkt_synthetic.yaml", [*tiny_sets, "train.max_steps=2"])
    run = run_pretraining(recipe, tmp_path / "run")
    saved = load_checkpoint(run.out_dir / "checkpoint.pt")["rng"][0]["generators"]["pairs"]["state"]
    fresh = torch.Generator(device=device).manual_seed(recipe.train.seed)
    assert saved.shape == fresh.get_state().shape and not torch.equal(saved, fresh.get_state())


def test_recalibrated_batch_norm_statistics_reach_the_handoff(tiny_sets, tmp_path, device, tolerance):
    """student.recalibrate_bn_batches: the final checkpoint's running statistics are plain averages over
    that many batches (counter = batches, no leftover of the initial variance 1), the weights are those of
    the plain run, and only the last step recalibrates (an interrupted run hands off the usual ones)."""
    sets = [*tiny_sets, "train.max_steps=3", "data.intensity_scale=0.00392156862745098"]
    plain_recipe = config.load_recipe(RECIPES / "ppkt_synthetic.yaml",
                                      [*sets, "student.recalibrate_bn_batches=0"])
    plain = run_pretraining(plain_recipe, tmp_path / "plain")
    recipe = config.load_recipe(RECIPES / "ppkt_synthetic.yaml", [*sets, "student.recalibrate_bn_batches=2"])
    run_pretraining(recipe, tmp_path / "stopped", stop_at=2)
    stopped = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["student"]
    assert stopped["bn0.bn.num_batches_tracked"].item() == 2  # the usual exponential averages
    run_pretraining(recipe, tmp_path / "stopped", resume=True)
    a = load_checkpoint(plain.out_dir / "checkpoint.pt")["student"]
    b = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["student"]
    assert b["bn0.bn.num_batches_tracked"].item() == 2 and a["bn0.bn.num_batches_tracked"].item() == 3
    # 3 steps at momentum 0.05 leave 0.95^3 = 0.86 of the initial variance in the plain run; the first
    # layer's true variance at intensity / 255 is ~1e-3.
    assert a["bn0.bn.running_var"].min() > 0.8 and b["bn0.bn.running_var"].max() < 0.05
    for k in a:
        if "running" not in k and "num_batches" not in k:
            tolerance.same(device, b[k], a[k], msg=k)


def test_resume_refuses_a_changed_recipe_and_a_rerun_refuses_to_overwrite(tiny_sets, tmp_path):
    recipe = config.load_recipe(RECIPES / "ppkt_synthetic.yaml", [*tiny_sets, "train.max_steps=2"])
    run_pretraining(recipe, tmp_path / "run")
    with pytest.raises(FileExistsError, match="--resume"):
        run_pretraining(recipe, tmp_path / "run")
    changed = config.load_recipe(
        RECIPES / "ppkt_synthetic.yaml", [*tiny_sets, "train.max_steps=2", "optim.lr=0.1"]
    )
    with pytest.raises(ValueError, match="optim.lr"):
        run_pretraining(changed, tmp_path / "run", resume=True)


class PoisonedSource:
    """The prepared split, but from the `after`-th fetched item on, intensities are NaN."""

    def __init__(self, dataset: PreparedDataset, after: int) -> None:
        self.dataset, self.after, self.fetched = dataset, after, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        self.fetched += 1
        if self.fetched <= self.after:
            return item
        points = item.points.copy()
        points[:, 3] = np.nan

        class Poisoned:
            token, pairings, images, superpixels = item.token, item.pairings, item.images, item.superpixels

        Poisoned.points = points
        return Poisoned


def test_nan_in_a_batch_stops_with_the_named_error_and_a_loadable_checkpoint(
    tiny_sets, prepared_world, tmp_path
):
    sets = [*tiny_sets, "train.max_steps=10", "train.checkpoint_every=1", "data.batch_size=2"]
    recipe = config.load_recipe(RECIPES / "ppkt_synthetic.yaml", sets)
    source = PoisonedSource(PreparedDataset(prepared_world, recipe.data.split), after=6)  # steps 1-3 clean
    with pytest.raises(NonFiniteLossError) as info:
        run_pretraining(recipe, tmp_path / "run", source=source)
    assert info.value.step == 4 and info.value.loss_name == "point_nce"
    assert info.value.last_checkpoint == tmp_path / "run" / "checkpoint.pt"
    assert load_checkpoint(info.value.last_checkpoint)["step"] == 3


def test_cli_dry_run_and_run(tiny_sets, tmp_path):
    runner = CliRunner()
    args = ["pretrain", "--recipe", str(RECIPES / "ppkt_synthetic.yaml")]
    for item in tiny_sets:
        args += ["--set", item]
    dry = runner.invoke(app, [*args, "--dry-run", "--set", "optim.lr=0.125"])
    assert dry.exit_code == 0, dry.output
    assert "lr: 0.125" in dry.output and "method: ppkt" in dry.output
    bad = runner.invoke(app, [*args, "--set", "loss.num_match=3"])
    assert bad.exit_code == 2 and "loss.num_matches" in bad.output
    result = runner.invoke(app, [*args, "--set", "train.max_steps=2", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "checkpoint.pt").exists() and len(losses_of(tmp_path / "cli")) == 2
    missing = runner.invoke(
        app, [*args, "--set", "teacher.weights=/nonexistent/moco.pth", "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "/nonexistent/moco.pth" in missing.output
