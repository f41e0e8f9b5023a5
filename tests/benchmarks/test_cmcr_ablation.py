"""benchmarks/cmcr_ablation.py: the statistics of its table, and its --quick mode end to end (how CI
keeps the benchmark from rotting)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import cmcr_ablation as ablation  # noqa: E402


def _write_scores(family: ablation.Family, variant: str, seed: int, probe: float, finetune: float) -> None:
    for mode, value in (("probe", probe), ("finetune", finetune)):
        folder = family.dir / "runs" / variant / f"seed{seed}" / mode
        folder.mkdir(parents=True)
        miou = {"mean": value / 100, "std": 0.0, "n": 2} if mode == "probe" else value / 100  # both forms
        (folder / "metrics.json").write_text(json.dumps({"miou": miou}))


def test_table_statistics_against_hand_computed_values(tmp_path: Path) -> None:
    family = ablation.Family(tmp_path, "dev", ablation.FULL, threads=1)
    scores = {"ppkt": ([20, 22, 24], [30, 30, 33]), "cmcr_full": ([25, 26, 27], [29, 31, 30]),
              "base": ([21, 23], [28, 28])}
    for variant, (probe, finetune) in scores.items():
        for seed, (p, f) in enumerate(zip(probe, finetune, strict=True)):
            _write_scores(family, variant, seed, p, f)
    records = {r["variant"]: r for r in ablation.table(family, ["ppkt", "cmcr_full", "base"], [0, 1, 2],
                                                       "ppkt", "cmcr_full")}
    full = records["cmcr_full"]["probe"]
    assert full["mean"] == pytest.approx(26.0) and full["std"] == pytest.approx(1.0) and full["n"] == 3
    diff = full["vs_ppkt"]  # 26 - 22, SE = sqrt(1/3 + 4/3)
    assert diff["delta"] == pytest.approx(4.0) and diff["se"] == pytest.approx(math.sqrt(5 / 3))
    assert diff["exceeds"]  # 4 > 2 * 1.29
    ft = records["cmcr_full"]["finetune"]["vs_ppkt"]  # 30 - 31, SE = sqrt(1/3 + 3/3)
    assert ft["delta"] == pytest.approx(-1.0) and not ft["exceeds"]
    assert "vs_full" not in full and "vs_ppkt" not in records["ppkt"]["probe"]
    assert records["base"]["probe"]["n"] == 2  # seed 2 missing: reported over the seeds measured
    text = ablation.markdown(list(records.values()), "dev", ablation.FULL, [0, 1, 2])
    assert "| 26.0 ± 1.0 | +4.0 ± 1.3 * | — |" in text


@pytest.mark.slow
def test_quick_mode_runs_resumes_and_refuses_changed_definitions(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCHMARKS / "cmcr_ablation.py"), "--work", str(tmp_path), "--quick"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    records = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert [r["variant"] for r in records] == list(ablation.QUICK_VARIANTS)
    for record in records:
        for mode in ("probe", "finetune"):
            assert 0.0 <= record[mode]["mean"] <= 100.0 and record[mode]["n"] == 1
    assert (tmp_path / "dev" / "table.md").read_text().count("\n| ") == 1 + len(records)
    # A rerun finds everything done: no command but the dry runs (logs of the first run untouched).
    logs = {p: p.stat().st_mtime for p in (tmp_path / "dev" / "logs").iterdir()}
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "[dev]" not in again.stderr
    assert logs == {p: p.stat().st_mtime for p in (tmp_path / "dev" / "logs").iterdir()}
    # A field that cmcr added later (absent from the stored recipe) does not invalidate a unit ...
    resolved = tmp_path / "dev" / "runs" / "ppkt" / "seed0" / "resolved.json"
    stored = json.loads(resolved.read_text())
    older = stored["pretrain"].replace("  recalibrate_bn_batches: 8\n", "")
    assert older != stored["pretrain"]
    resolved.write_text(json.dumps({**stored, "pretrain": older}))
    assert subprocess.run(command, capture_output=True, text=True, timeout=600).returncode == 0
    # ... but a unit whose resolved recipe sets a known key differently is refused, not silently mixed.
    other_lr = stored["pretrain"].replace("lr: 0.05", "lr: 0.07")
    resolved.write_text(json.dumps({**stored, "pretrain": other_lr}))
    refused = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "other resolved recipes" in refused.stdout + refused.stderr
