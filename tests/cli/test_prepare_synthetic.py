"""`cmcr prepare synthetic`: runs, reports, scales intrinsics, and rejects bad input clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cmcr_cli.app import app

runner = CliRunner()


def test_command_writes_a_world_and_prints_a_summary(tmp_path: Path):
    out = tmp_path / "w"
    result = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), "--scenes", "2",
                                 "--samples-per-scene", "1", "--seed", "3", "--image-size", "64x36"])
    assert result.exit_code == 0, result.output
    assert "2 samples" in result.output and "points per sweep" in result.output and str(out) in result.output
    calib = json.loads((out / "v1.0-mini" / "calibrated_sensor.json").read_text())
    sensors = json.loads((out / "v1.0-mini" / "sensor.json").read_text())
    front = next(s["token"] for s in sensors if s["channel"] == "CAM_FRONT")
    k = next(c["camera_intrinsic"] for c in calib if c["sensor_token"] == front)
    # 64x36 is 0.04 of 1600x900: CAM_FRONT's 1266.4 px focal length and (816.3, 491.5) centre scale with it.
    np.testing.assert_allclose(k, [[50.656, 0, 32.652], [0, 50.656, 19.66], [0, 0, 1]], atol=1e-9)
    scenes = json.loads((out / "v1.0-mini" / "scene.json").read_text())
    assert [s["name"] for s in scenes] == ["scene-0061", "scene-0103"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-size", "64by36"], "64by36"),
        (["--image-size", "8x8"], "8x8"),
        (["--scenes", "11"], "scenes=11"),
        (["--scenes", "0"], "scenes=0"),
        (["--samples-per-scene", "0"], "samples_per_scene=0"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, args: list[str], message: str):
    result = runner.invoke(app, ["prepare", "synthetic", "--out", str(tmp_path / "w"), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())  # rich may wrap long messages
    assert not (tmp_path / "w" / "v1.0-mini").exists()


def test_existing_world_needs_overwrite(tmp_path: Path):
    base = ["prepare", "synthetic", "--out", str(tmp_path), "--scenes", "1", "--samples-per-scene", "1",
            "--image-size", "32x18"]
    assert runner.invoke(app, base).exit_code == 0
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert runner.invoke(app, [*base, "--overwrite"]).exit_code == 0


def test_prepare_cli_module_does_not_import_numpy():
    code = "import sys, cmcr_cli.prepare; print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
