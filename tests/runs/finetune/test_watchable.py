"""Training you can watch: validation every few epochs with best.pt / last.pt, the curve in metrics.jsonl
(and, where the package is installed, identical TensorBoard scalars), kept checkpoints, and the protocol's
epochs per label fraction."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from cmcr_core import config
from cmcr_core.config import FinetuneRecipe, RecipeError
from cmcr_core.data.label_fractions import LABEL_FRACTIONS
from cmcr_core.engine import load_checkpoint
from cmcr_core.eval.segmentation import evaluate
from cmcr_core.methods.registry import build_segmentation_model
from cmcr_core.runs.finetune import open_split, resolve_epochs, run_finetune, segmentation_settings

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
EPOCHS = 3


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def validated(tiny_recipe: FinetuneRecipe, tmp_path_factory: pytest.TempPathFactory):
    """3 epochs of one step each, validated after every epoch, every checkpoint kept."""
    recipe = replace(tiny_recipe, train=replace(tiny_recipe.train, epochs=EPOCHS, eval_every=1,
                                                checkpoint_every=1, keep_checkpoints=True,
                                                tensorboard=HAS_TENSORBOARD))
    return run_finetune(recipe, tmp_path_factory.mktemp("validated") / "run")


def _scores(path: Path) -> float:
    """mIoU on the whole val split of the network a checkpoint holds, loaded by hand."""
    payload = load_checkpoint(path)
    recipe = config.resolve(FinetuneRecipe, payload["recipe"], str(path))
    source, names = open_split(recipe, recipe.data.val_split)
    model = build_segmentation_model(recipe, len(names), 0)
    model.load_state_dict({k.removeprefix("model."): v for k, v in payload["model"].items()})
    return evaluate(model, source, segmentation_settings(recipe), names, recipe.data.val_split).miou


def test_the_validation_curve_and_the_best_network(validated) -> None:
    run_dir = validated.out_dir
    curve = [r for r in _records(run_dir) if "val_miou" in r]
    assert [r["step"] for r in curve] == [1, 2, 3]  # one step per epoch
    assert all(r["val_scans"] == validated.metrics.num_scans for r in curve)  # the whole val split
    # The last validation scores the finished network: the final evaluation's number.
    assert curve[-1]["val_miou"] == pytest.approx(validated.metrics.miou, abs=1e-12)
    best = max(curve, key=lambda r: r["val_miou"])
    payload = load_checkpoint(run_dir / "best.pt")
    assert payload["step"] == best["step"] and payload["validation"]["val_miou"] == best["val_miou"]
    assert "optimizer" not in payload  # a hand-off, not a training state
    # best.pt and last.pt hold the networks that got those scores, read back independently.
    assert _scores(run_dir / "best.pt") == pytest.approx(best["val_miou"], abs=1e-12)
    assert _scores(run_dir / "last.pt") == pytest.approx(validated.metrics.miou, abs=1e-12)
    assert json.loads((run_dir / "metrics.json").read_text())["best_val_miou"] == best["val_miou"]


def test_every_checkpoint_is_kept_when_asked(validated) -> None:
    kept = sorted(p.name for p in validated.out_dir.glob("checkpoint_step*.pt"))
    assert kept == [f"checkpoint_step{s:08d}.pt" for s in (1, 2, 3)]
    assert [load_checkpoint(validated.out_dir / name)["step"] for name in kept] == [1, 2, 3]


def test_validating_does_not_change_training(validated, tiny_recipe, tmp_path: Path) -> None:
    recipe = replace(tiny_recipe, train=replace(tiny_recipe.train, epochs=EPOCHS))
    plain = run_finetune(recipe, tmp_path / "plain")
    assert not (plain.out_dir / "best.pt").exists()
    ours, theirs = (load_checkpoint(r.out_dir / "last.pt")["model"] for r in (validated, plain))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert validated.metrics.miou == plain.metrics.miou


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the tensorboard package is not installed")
def test_tensorboard_scalars_are_the_records_of_metrics_jsonl(validated) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(validated.out_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    logged = {tag: {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
              for tag in events.Tags()["tensors"]}
    expected: dict[str, dict[int, float]] = {}
    for record in _records(validated.out_dir):
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                expected.setdefault(key, {})[record["step"]] = float(value)
    assert logged == expected
    assert {"val_miou", "total", "lr"} <= logged.keys()


def test_tensorboard_without_the_package_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    recipe = config.load_recipe("finetune_synthetic", ["train.tensorboard=true"], kind=FinetuneRecipe)
    with pytest.raises(RecipeError, match=r"train.tensorboard.*pip install \"cmcr\[tb\]\""):
        config.check_values(recipe, config.FILE_CHECKS, "finetune_synthetic", ["train.tensorboard=true"])


PROTOCOL_EPOCHS = {0.01: 100, 0.05: 50, 0.1: 50, 0.25: 50, 1.0: 50}  # CMCR / SLidR fine-tuning configs


@pytest.mark.parametrize("fraction", LABEL_FRACTIONS)
def test_fine_tuning_epochs_follow_the_protocol_unless_set(fraction: float) -> None:
    published = config.load_recipe("finetune_nuscenes", [f"data.label_fraction={fraction}"],
                                   kind=FinetuneRecipe)
    assert published.train.epochs is None
    assert resolve_epochs(published).train.epochs == PROTOCOL_EPOCHS[fraction]
    kitti = config.load_recipe("finetune_kitti", [f"data.label_fraction={fraction}"], kind=FinetuneRecipe)
    assert resolve_epochs(kitti).train.epochs == PROTOCOL_EPOCHS[fraction]
    chosen = config.load_recipe("finetune_nuscenes", [f"data.label_fraction={fraction}", "train.epochs=7"],
                                kind=FinetuneRecipe)
    assert resolve_epochs(chosen).train.epochs == 7


def test_a_run_records_the_epochs_it_used(tiny_recipe, tmp_path: Path) -> None:
    recipe = replace(tiny_recipe, train=replace(tiny_recipe.train, epochs=None, max_steps=1,
                                                fraction_epochs=(4, 3, 2, 2, 2)))
    run = run_finetune(recipe, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["train"]["epochs"] == 4 and run.metrics.extra["protocol"]["epochs"] == 4
