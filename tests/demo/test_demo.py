"""`cmcr demo --quick` end to end: the report's tables and plots, its numbers against the run folders,
resume without training, and the refusal of a folder started with other settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.demo import plan as demo
from cmcr_core.demo import report as demo_report

PRETRAINED_NAMES = [name for name, _, _ in demo.PRETRAINED]
ALL_MODELS = ["random_init", *PRETRAINED_NAMES]


def _invoke(*args: str):
    result = CliRunner().invoke(app, ["demo", *args, "--threads", str(torch.get_num_threads())])
    return result


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    result = _invoke("--quick", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "report" in result.output and str(out / "report.md") in result.output.replace("\n", "")
    return out


def _section(text: str, title: str) -> str:
    """The Markdown from heading `title` up to the next heading of the same or a higher level."""
    level = len(title) - len(title.lstrip("#"))
    start = text.index(title + "\n")
    rest = text[start + len(title) + 1:]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{level}}} ", rest, flags=re.M)]
    return rest[: ends[0]] if ends else rest


def _table_rows(section: str) -> dict[str, list[str]]:
    rows = {}
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_report_holds_every_table_and_plot(quick_demo: Path) -> None:
    text = (quick_demo / "report.md").read_text(encoding="utf-8")
    for protocol, title in demo_report.PROTOCOL_TITLES.items():
        rows = _table_rows(_section(text, f"### {title}"))
        summaries = {m: json.loads((quick_demo / protocol / m / "metrics.json").read_text())
                     for m in ALL_MODELS}
        for model in ALL_MODELS:
            assert model in rows, f"{protocol}: no row for {model}"
            mean, std = (100 * summaries[model]["miou"][k] for k in ("mean", "std"))
            assert rows[model][2] == f"{mean:.2f} ± {std:.2f}"
        for model in PRETRAINED_NAMES:  # the delta column against the random-init row
            delta = summaries[model]["miou"]["mean"] - summaries["random_init"]["miou"]["mean"]
            assert rows[model][4] == f"{100 * delta:+.1f}"
    structure = json.loads((quick_demo / "analysis" / "structure.json").read_text())
    rows = _table_rows(_section(text, "## Structure of each pretrained space against its teacher"))
    for model in PRETRAINED_NAMES:
        m = structure["models"][model]
        assert rows[model][3:] == [f"{m[key]:.3f}" for _, key in demo_report.STRUCTURE_COLUMNS]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"analysis/structure_bars.png", "analysis/pca.png"} <= set(links)
    assert {f"analysis/pca_joint_{m}.png" for m in PRETRAINED_NAMES} <= set(links)
    for link in links:
        path = quick_demo / link
        assert path.is_file(), f"report.md links {link}, which does not exist"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{link} is not a PNG"
    finetune = {m: json.loads((quick_demo / "finetune" / m / "metrics.json").read_text())["miou"]["mean"]
                for m in ALL_MODELS}
    best, worst = max(finetune, key=finetune.get), min(finetune, key=finetune.get)
    assert [link for link in links if link.startswith("pictures/")] == [
        f"pictures/finetune_best_{best}.png", f"pictures/finetune_worst_{worst}.png"]
    verdict = _section(text, "## Verdict").strip()
    assert "random initialisation" in verdict and "--quick" in verdict


def test_report_json_equals_the_run_folders(quick_demo: Path) -> None:
    report = json.loads((quick_demo / "report.json").read_text())
    assert report["settings"]["mode"] == "quick" and report["settings"]["seeds"] == 1
    for protocol in ("probe", "finetune"):
        for model in ALL_MODELS:
            folder = quick_demo / protocol / model
            seed_runs = sorted(folder.glob("seed*/metrics.json"))
            assert len(seed_runs) == 1
            per_seed = [json.loads(p.read_text())["miou"] for p in seed_runs]
            row = report["miou"][protocol][model]
            assert row["per_seed"] == per_seed
            assert row["mean"] == json.loads((folder / "metrics.json").read_text())["miou"]["mean"]
            assert row["mean"] == pytest.approx(sum(per_seed) / len(per_seed), abs=1e-12)
            weights = json.loads((folder / "seed0" / "init.json").read_text())["weights"]
            checkpoint = quick_demo / "pretrain" / model / "checkpoint.pt"
            expected = None if model == "random_init" else str(checkpoint)
            assert weights == expected, f"{protocol}/{model} was initialised from {weights}"
    structure = json.loads((quick_demo / "analysis" / "structure.json").read_text())
    for model in PRETRAINED_NAMES:
        for _, key in demo_report.STRUCTURE_COLUMNS:
            assert report["structure"]["models"][model][key] == structure["models"][model][key]
    teacher = json.loads((quick_demo / "teacher" / "metrics.json").read_text())
    assert report["teacher"]["holdout_miou"] == teacher["holdout"]["miou"]
    # Every pretraining run reached its step count and the semantic ones used the demo's teacher.
    for name, _, kind in demo.PRETRAINED:
        recipe = (quick_demo / "pretrain" / name / "recipe.yaml").read_text()
        assert ("teacher.pt" in recipe) == (kind == "semantic")
        assert report["stages"][f"pretrain_{name}"]["steps"] == report["settings"]["pretrain_steps"]
    assert set(report["stages"]) == set(report["invocation"]["ran"])
    # worlds, teacher, prepare, one pretraining per model, probe and fine-tuning per model, analysis
    assert len(report["stages"]) == 2 + 1 + 1 + len(demo.PRETRAINED) + 2 * len(ALL_MODELS) + 1


def _run_files(out: Path) -> dict[Path, int]:
    names = ("checkpoint.pt", "metrics.json", "teacher.pt", "structure.json")
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name in names}


def test_rerun_skips_every_finished_stage(quick_demo: Path) -> None:
    before = _run_files(quick_demo)
    assert len(before) > 20
    result = _invoke("--quick", "--out", str(quick_demo))
    assert result.exit_code == 0, result.output
    assert _run_files(quick_demo) == before, "a rerun rewrote run files"
    report = json.loads((quick_demo / "report.json").read_text())
    assert report["invocation"]["ran"] == []
    assert len(report["invocation"]["skipped"]) == len(report["stages"])
    assert result.output.count("skipped") >= len(report["stages"])


def test_other_settings_are_refused(quick_demo: Path) -> None:
    settings = (quick_demo / "demo.json").read_text()
    result = _invoke("--quick", "--seeds", "2", "--out", str(quick_demo))
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "other settings" in message and "--overwrite" in message and "seeds" in message
    result = _invoke("--out", str(quick_demo))  # the full demo into a quick one
    assert result.exit_code == 2 and "--overwrite" in " ".join(result.output.split())
    assert (quick_demo / "demo.json").read_text() == settings


def test_a_folder_that_is_not_a_demo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = _invoke("--quick", "--out", str(tmp_path))
    assert result.exit_code == 2 and "not a demo folder" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_force_deletes_only_the_demo_files(tmp_path: Path) -> None:
    plan = demo.make_plan(quick=True)
    demo.check_settings(tmp_path, plan, force=False)
    for folder in demo.DEMO_FOLDERS:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.json").write_text("{}")
    (tmp_path / "keep.txt").write_text("mine")
    other = demo.make_plan(quick=True, seeds=2)
    with pytest.raises(demo.DemoSettingsError, match="--overwrite"):
        demo.check_settings(tmp_path, other, force=False)
    demo.check_settings(tmp_path, other, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "keep.txt"]
    assert json.loads((tmp_path / "demo.json").read_text())["settings"]["seeds"] == 2


@pytest.mark.parametrize(("delta", "spread", "seeds", "expected"), [
    (0.05, 0.01, 3, "beats"),
    (0.005, 0.01, 3, "does not clearly beat"),
    (-0.005, 0.01, 3, "does not clearly beat"),
    (-0.05, 0.01, 3, "is worse than"),
    (0.001, 0.0, 1, "beats"),
    (-0.001, 0.0, 1, "is worse than"),
])
def test_judgement_of_a_delta(delta: float, spread: float, seeds: int, expected: str) -> None:
    assert demo_report.judge(delta, spread, seeds) == expected


def test_verdict_names_the_gain_and_its_spread() -> None:
    def row(mean: float, std: float) -> dict:
        return {"mean": mean, "std": std, "pretraining": "x"}

    rows = {"random_init": row(0.10, 0.01), "cmcr_semantic": row(0.25, 0.02), "cmcr_random": row(0.11, 0.02),
            "ppkt_semantic": row(0.20, 0.01), "ppkt_random": row(0.09, 0.03),
            "slidr_semantic": row(0.12, 0.02)}
    for name, r in rows.items():
        if name != "random_init":
            r["delta_vs_random_init"] = r["mean"] - 0.10
            r["spread"] = (r["std"] ** 2 + 0.01 ** 2) ** 0.5
            r["judgement"] = demo_report.judge(r["delta_vs_random_init"], r["spread"], 3)
    text = demo_report.verdict({"probe": rows, "finetune": rows}, seeds=3, quick=False)
    assert ("the best pretrained model (cmcr_semantic, x) beats random initialisation (10.0 % mIoU) by "
            "+15.0 points (seed spread ±2.2)") in text
    assert "from the semantic teacher, 2 of 3 pretrained models beat it" in text  # SLidR's +2 is within ±2.2
    assert "from the random ResNet-18, 0 of 2 pretrained models beat it" in text
    assert "--quick" not in text


def test_cmcr_is_compared_with_ppkt_and_slidr_at_equal_teacher() -> None:
    def row(mean: float, std: float) -> dict:
        return {"mean": mean, "std": std}

    rows = {"cmcr_semantic": row(0.25, 0.03), "ppkt_semantic": row(0.20, 0.04),
            "slidr_semantic": row(0.30, 0.0)}
    comparison = demo_report.method_comparison({"probe": rows}, seeds=3)["probe"]
    assert comparison["ppkt_semantic"]["delta"] == pytest.approx(0.05)
    assert comparison["ppkt_semantic"]["spread"] == pytest.approx(0.05)  # hypot(0.03, 0.04)
    assert comparison["ppkt_semantic"]["judgement"] == "does not clearly beat"  # 0.05 is not > 0.05
    assert comparison["slidr_semantic"]["judgement"] == "is worse than"  # -0.05 against a spread of 0.03
    assert comparison["slidr_semantic"]["delta"] == pytest.approx(-0.05)


def test_report_compares_the_methods(quick_demo: Path) -> None:
    text = (quick_demo / "report.md").read_text(encoding="utf-8")
    section = _section(text, "## CMCR against PPKT and SLidR (same semantic teacher, same steps)")
    rows = [line for line in section.splitlines() if line.startswith("| ") and "protocol" not in line]
    assert len(rows) == 4 and all(("ppkt_semantic" in r) != ("slidr_semantic" in r) for r in rows)
    report = json.loads((quick_demo / "report.json").read_text())
    probe = {m: json.loads((quick_demo / "probe" / m / "metrics.json").read_text())["miou"]["mean"]
             for m in ("cmcr_semantic", "ppkt_semantic")}
    delta = report["cmcr_vs_methods"]["probe"]["ppkt_semantic"]["delta"]
    assert delta == pytest.approx(probe["cmcr_semantic"] - probe["ppkt_semantic"])


def test_methods_are_named_as_their_papers_write_them() -> None:
    labels = {name: demo_report._pretraining_of(name) for name in demo_report.MODELS}
    assert labels["slidr_semantic"] == "SLidR from the semantic teacher"
    assert labels["ppkt_random"] == "PPKT from the random ResNet-18"
    assert labels["cmcr_semantic"] == "CMCR from the semantic teacher"
    assert labels["random_init"] == "none (random initialisation)"
