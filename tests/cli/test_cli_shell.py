"""The CLI shell: fast help without torch, `cmcr recipe show` and clean errors."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from cmcr_cli.app import app

runner = CliRunner()


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, cmcr_cli.app; sys.exit(1 if 'torch' in sys.modules or 'numpy' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_help_lists_command_groups():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("prepare", "recipe"):
        assert group in result.output


def test_recipe_show_prints_resolved_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("optim:\n  name: adamw\n")
    result = runner.invoke(app, ["recipe", "show", str(path), "--set", "optim.lr=0.002"])
    assert result.exit_code == 0, result.output
    assert "name: adamw" in result.output and "lr: 0.002" in result.output
    assert "voxel_size: 0.1" in result.output  # defaults are printed too


def test_recipe_errors_exit_2_with_message(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  voxelsize: 0.2\n")
    result = runner.invoke(app, ["recipe", "show", str(path)])
    assert result.exit_code == 2
    assert "data.voxelsize" in result.output and "data.voxel_size" in result.output
