"""Errors that say what to do, through the command line: a recipe for another command names that command,
an unreadable checkpoint names the file and what was expected, a recipe value that cannot run fails at
load (so `--dry-run` catches it). Every case: exit code 2, the message, no traceback, nothing written.

Each case runs in an empty working directory with `--out` inside it: "nothing written" is that the
directory is still empty afterwards (no run folder, no default `runs/`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core import config
from cmcr_core.data.label_fractions import LABEL_FRACTIONS

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def refused(args: list[str], workdir: Path, *expected: str) -> str:
    """Run `cmcr args` and check: exit 2, every `expected` text in the message, no traceback, no file."""
    result = runner.invoke(app, args)
    message = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in message, f"{text!r} not in: {message}"
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert sorted(workdir.iterdir()) == [], "the failed command wrote files"
    return message


# --- a recipe for another command ------------------------------------------------------------------------

WRONG_KIND = [
    (["finetune", "--recipe", "ppkt_synthetic"], "is a pretraining recipe; use `cmcr pretrain`"),
    (["probe", "--recipe", "cmcr_synthetic", "--data", "P"], "is a pretraining recipe; use `cmcr pretrain`"),
    (["pretrain", "--recipe", "finetune_synthetic"],
     "is a segmentation fine-tuning or probing recipe; use `cmcr finetune` or `cmcr probe`"),
    (["pretrain", "--recipe", "recon_probe_synthetic"],
     "is an object-classification recipe; use `cmcr finetune` or `cmcr probe`"),
    (["finetune", "--recipe", "recon_synthetic"], "is a ReCon pretraining recipe; use `cmcr pretrain`"),
    (["teacher", "train", "--recipe", "ppkt_synthetic"], "is a pretraining recipe; use `cmcr pretrain`"),
    (["pretrain", "--recipe", "semantic_teacher_synthetic"],
     "is a teacher-training recipe; use `cmcr teacher train`"),
    (["probe", "--recipe", "finetune_synthetic"],
     "is a finetune recipe (train.mode: finetune); use `cmcr finetune`"),
    (["finetune", "--recipe", "probe_synthetic"], "is a probe recipe (train.mode: probe); use `cmcr probe`"),
]


@pytest.mark.parametrize(("args", "expected"), WRONG_KIND, ids=[" ".join(a[:3]) for a, _ in WRONG_KIND])
def test_a_recipe_for_another_command_names_that_command(args, expected, workdir):
    refused([*args, "--out", "run"], workdir, expected)
    refused([*args, "--out", "run", "--dry-run"], workdir, expected)


def test_an_invalid_file_still_reports_the_key_against_the_commands_schema(workdir):
    Path("../bad.yaml").write_text("data:\n  voxelsize: 0.2\n")
    refused(["pretrain", "--recipe", "../bad.yaml", "--dry-run"], workdir, "data.voxelsize",
            "data.voxel_size")


# --- an unreadable checkpoint ----------------------------------------------------------------------------


@pytest.fixture()
def truncated(tmp_path: Path) -> Path:
    whole = tmp_path / "whole.pt"
    torch.save({"format": "cmcr-train", "student": {"w": torch.zeros(64, 64)}}, whole)
    data = whole.read_bytes()
    cut = tmp_path / "checkpoint.pt"
    cut.write_bytes(data[: len(data) // 2])  # an interrupted copy
    return cut


@pytest.fixture()
def not_torch(tmp_path: Path) -> Path:
    path = tmp_path / "notes.pt"
    path.write_text("this is not a checkpoint\n")
    return path


CHECKPOINT_COMMANDS = {
    "finetune": ["finetune", "--recipe", "finetune_synthetic", "--data", "P", "--out", "run"],
    "probe": ["probe", "--recipe", "probe_synthetic", "--data", "P", "--out", "run"],
    "analyze": ["analyze", "--data", "P", "--out", "run"],
    "zeroshot": ["zeroshot", "--data", "P", "--out", "run"],
}


@pytest.mark.parametrize("command", sorted(CHECKPOINT_COMMANDS))
@pytest.mark.parametrize("damage", ["truncated", "not_torch"])
def test_an_unreadable_checkpoint_names_the_file_and_what_was_expected(command, damage, workdir, request):
    path = request.getfixturevalue(damage)
    message = refused([*CHECKPOINT_COMMANDS[command], "--weights", str(path)], workdir,
                      str(path), "cannot be read", "expected a checkpoint written by `cmcr pretrain`")
    assert "truncated or damaged" in message


def test_an_unreadable_teacher_file_names_the_file(truncated, workdir):
    refused(["teacher", "info", "--weights", str(truncated)], workdir, str(truncated), "cannot be read",
            "expected a file written by torch.save")


# --- recipe values checked at load (the dry run catches them) -----------------------------------------------

BAD_VALUES = [
    (["pretrain", "--recipe", "ppkt_synthetic", "--set", "optim.lr=-1"],
     "recipe key 'optim.lr' (given on the command line) must be > 0, got -1.0"),
    (["pretrain", "--recipe", "ppkt_synthetic", "--set", "data.crop_size=[16, 64]"],
     "'data.crop_size' (given on the command line) is (height, width) in pixels; each side must be >= 32"),
    (["pretrain", "--recipe", "cmcr_synthetic", "--set", "loss.codebook_decay=1.5"],
     "'loss.codebook_decay' (given on the command line) must be in [0, 1)"),
    (["pretrain", "--recipe", "ppkt_synthetic", "--batch-size", "0"], "'data.batch_size'", "must be >= 1"),
    (["pretrain", "--recipe", "ppkt_synthetic", "--device", "gpu"], "must be auto, cpu, cuda or cuda:N"),
    (["finetune", "--recipe", "finetune_synthetic", "--label-fraction", "0.3"],
     "'data.label_fraction' (given on the command line) must be one of the published label fractions "
     "0.01, 0.05, 0.1, 0.25, 1.0, got 0.3"),
    (["probe", "--recipe", "probe_synthetic", "--set", "optim.lr_head=0"], "'optim.lr_head'", "must be > 0"),
    (["teacher", "train", "--recipe", "semantic_teacher_synthetic", "--set", "train.epochs=0"],
     "'train.epochs'", "must be >= 1"),
    (["pretrain", "--recipe", "recon_synthetic", "--set", "model.mask_ratio=1.2"],
     "'model.mask_ratio'", "must be in [0, 1)"),
    (["probe", "--recipe", "recon_probe_synthetic", "--set", "eval.probe_c=0"], "'eval.probe_c'", "> 0"),
]


@pytest.mark.parametrize(("args", "expected"), [(a, e) for a, *e in BAD_VALUES],
                         ids=[a[a.index("--recipe") + 1] + " " + a[-1] for a, *_ in BAD_VALUES])
def test_a_recipe_value_that_cannot_run_fails_the_dry_run(args, expected, workdir):
    refused([*args, "--out", "run", "--dry-run"], workdir, *expected)
    refused([*args, "--out", "run"], workdir, *expected)


def test_a_bad_value_in_a_file_names_the_file(workdir):
    Path("../lr.yaml").write_text("base: ppkt_synthetic.yaml\noptim:\n  lr: 0.0\n")
    refused(["pretrain", "--recipe", "../lr.yaml", "--dry-run"], workdir,
            "'optim.lr' in ../lr.yaml must be > 0")


MISSING_TEACHER_FILES = [
    (["pretrain", "--recipe", "ppkt_synthetic", "--set", "teacher.weights=absent/moco.pth.tar"],
     "'teacher.weights'"),
    (["pretrain", "--recipe", "nuscenes"], "'teacher.weights' in nuscenes"),  # published recipe, no weights
    (["pretrain", "--recipe", "recon_synthetic", "--set", "data.targets=absent/targets.npz"],
     "'data.targets'"),
]


@pytest.mark.parametrize(("args", "key"), MISSING_TEACHER_FILES,
                         ids=lambda v: v if isinstance(v, str) else v[2])
def test_a_teacher_file_that_is_not_there_fails_the_dry_run(args, key, workdir):
    refused([*args, "--out", "run", "--dry-run"], workdir, key, "names no existing file or folder",
            "weights are never downloaded")


def test_recipe_show_reads_a_recipe_whose_teacher_file_is_elsewhere(workdir):
    # inspecting the published recipe does not need its weights; running it (above) does
    result = runner.invoke(app, ["recipe", "show", "--recipe", "nuscenes"])
    assert result.exit_code == 0 and "moco_v2_800ep_pretrain.pth.tar" in result.output


def test_every_published_label_fraction_passes_and_the_two_tables_agree():
    from cmcr_core.config.checks import LABEL_FRACTIONS as CHECKED

    assert CHECKED == LABEL_FRACTIONS  # the recipe check and the data subsets know the same fractions
    for fraction in LABEL_FRACTIONS:
        recipe = config.load_recipe("finetune_synthetic", [f"data.label_fraction={fraction}"],
                                    kind=config.FinetuneRecipe)
        assert recipe.data.label_fraction == fraction


def test_every_packaged_recipe_passes_the_value_checks():
    for summary in config.recipe_summaries():  # loads each with load_any: the value checks run
        assert summary.path.is_file()


def test_resume_and_overwrite_together_are_refused(workdir):
    refused(["pretrain", "--recipe", "ppkt_synthetic", "--data", "P", "--out", "run", "--resume",
             "--overwrite"], workdir, "--resume continues the run in --out, --overwrite deletes it")
