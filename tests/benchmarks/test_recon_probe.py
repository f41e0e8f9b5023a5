"""benchmarks/recon_probe.py: its table against hand-computed statistics, the commands it issues against the
CLI's own parser (a renamed option or recipe key would break the benchmark silently otherwise), and a tiny
run end to end that reuses its finished steps."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cmcr_core.runs.run_folder import METRICS_JSON

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import recon_probe as bench  # noqa: E402


def _report(values: dict[str, dict[str, list[float]]]) -> dict:
    report = {}
    for kind, protocols in values.items():
        report[kind] = {}
        for protocol, per_seed in protocols.items():
            report[kind][protocol] = {
                "overall_accuracy": bench.mean_std(per_seed),
                "per_seed": [{"seed": s, "overall_accuracy": v} for s, v in enumerate(per_seed)],
            }
    return report


def test_table_rows_are_mean_and_population_std_per_protocol() -> None:
    values = {"random": {p: [0.2, 0.4, 0.6] for p in bench.PROTOCOLS},
              "pretrained": {p: [0.5, 0.5, 0.5] for p in bench.PROTOCOLS}}
    values["pretrained"]["zeroshot"] = [0.1, 0.3, 0.2]
    lines = bench.table(_report(values)).splitlines()
    assert len(lines) == 2 + len(bench.PROTOCOLS)
    fine = next(line for line in lines if line.startswith("| fine-tuning"))
    # population std of 0.2, 0.4, 0.6: sqrt(((0.2)^2 + 0 + (0.2)^2) / 3) = 0.163
    assert "| 0.400 ± 0.163 | 0.500 ± 0.000 |" in fine
    assert "0.200 / 0.500, 0.400 / 0.500, 0.600 / 0.500" in fine
    zero = next(line for line in lines if line.startswith("| zero-shot"))
    assert "| 0.200 ± 0.082 |" in zero  # 0.1, 0.3, 0.2


def _args(**extra) -> argparse.Namespace:
    return argparse.Namespace(ft_epochs=2, fewshot_mode="finetune", **extra)


@pytest.mark.parametrize("protocol", ["probe", "finetune", "fewshot"])
def test_every_recipe_command_resolves_through_the_cli(protocol: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cmcr_cli.app import app

    objects = tmp_path / "objects"
    (objects / "ScanObjectNN" / "h5_files").mkdir(parents=True)
    weights = tmp_path / "checkpoint.pt"
    command = bench.downstream(protocol, objects, tmp_path / "out", 3, None, _args())
    result = CliRunner().invoke(app, [*command, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "seed: 3" in result.output and "variant: hardest" in result.output
    if protocol != "finetune":  # the fine-tuning recipe is a ScanObjectNN one already
        assert "dataset: scanobjectnn" in result.output and "normalize: false" in result.output
    pretrained = bench.downstream(protocol, objects, tmp_path, 0, weights, _args())
    assert pretrained[pretrained.index("--weights") + 1] == str(weights)


def test_a_tiny_run_end_to_end_and_again_from_its_finished_steps(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCHMARKS / "recon_probe.py"), "--work", str(tmp_path), "--seeds", "0",
               "--pretrain-per-class", "2", "--train-per-class", "2", "--test-per-class", "1",
               "--epochs", "1", "--protocols", "probe", "zeroshot"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout)
    for kind in ("random", "pretrained"):
        for protocol in ("probe", "zeroshot"):
            stored = json.loads((tmp_path / f"{protocol}_{kind}_s0" / METRICS_JSON).read_text())
            value = stored["overall_accuracy"]
            value = value["mean"] if isinstance(value, dict) else value
            assert report[kind][protocol]["per_seed"][0]["overall_accuracy"] == pytest.approx(value)
            assert 0.0 <= value <= 1.0
    assert set(report["pretraining_losses_first_last"]["0"]) == {"rec", "img", "text"}
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and json.loads(again.stdout)["pretrained"] == report["pretrained"]
