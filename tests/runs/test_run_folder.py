"""`--overwrite` on the core side (`claim_output`): what it frees, what it deletes, what it never touches."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.runs.run_folder import claim_output

runner = CliRunner()


def test_absent_and_empty_outputs_are_free(tmp_path: Path) -> None:
    claim_output(tmp_path / "absent", overwrite=False)
    (tmp_path / "empty").mkdir()
    claim_output(tmp_path / "empty", overwrite=False)
    assert (tmp_path / "empty").is_dir()  # left in place


def test_an_existing_output_needs_overwrite_and_is_then_deleted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "seed0").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: x\n")
    (run / "seed0" / "checkpoint.pt").write_bytes(b"0")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        claim_output(run, overwrite=False)
    assert (run / "recipe.yaml").is_file()
    claim_output(run, overwrite=True)
    assert not run.exists()
    scores = tmp_path / "scores.json"
    scores.write_text("{}")
    with pytest.raises(FileExistsError):
        claim_output(scores, overwrite=False)
    claim_output(scores, overwrite=True)
    assert not scores.exists()


def test_a_folder_without_cmcr_output_is_never_deleted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="holds no cmcr output"):
        claim_output(home, overwrite=True)
    assert (home / "thesis.tex").read_text() == "years of work"


def test_overwrite_is_refused_under_torchrun_with_several_processes(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="remove .* before launching"):
        claim_output(run, overwrite=True)
    assert (run / "checkpoint.pt").exists()


def test_a_command_refuses_its_old_output_until_overwrite(tmp_path: Path) -> None:
    args = ["analyze", "toy", "--clusters", "1", "--iterations", "8", "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "toy_1.json").stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --overwrite" in " ".join(again.output.split())
    assert (tmp_path / "toy_1.json").stat().st_mtime_ns == before
    replaced = runner.invoke(app, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert (tmp_path / "toy_1.json").stat().st_mtime_ns != before


def test_a_finished_run_names_both_ways_on(tmp_path: Path) -> None:
    from cmcr_core import config
    from cmcr_core.runs.run_folder import check_run_folder

    (tmp_path / "checkpoint.pt").write_bytes(b"0")
    with pytest.raises(FileExistsError, match="--resume to continue it, --overwrite to start again"):
        check_run_folder(config.PretrainRecipe(), tmp_path, resume=False)
