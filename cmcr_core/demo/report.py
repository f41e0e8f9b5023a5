"""The report of `cmcr demo`: DIR/report.json and DIR/report.md, built only from the files the runs wrote.

Numbers come from the run folders (`probe/<model>/metrics.json` and `finetune/<model>/metrics.json`, the
multi-seed summaries of `cmcr_core.runs.finetune.run_seeds`; `analysis/structure.json`;
`teacher/metrics.json`; the stage records `stages/*.json`), so the report can be regenerated at any time
and checked against them. mIoUs stay fractions in report.json (as in metrics.json) and are shown in percent
in report.md.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from cmcr_core.demo.plan import MODELS, PRETRAINED, PROTOCOLS, RANDOM_INIT, TEACHER_LABELS
from cmcr_core.ops.atomic import atomic_write_text
from cmcr_core.runs.run_folder import METRICS_JSON, STRUCTURE_JSON

__all__ = ["collect", "judge", "method_comparison", "render_markdown", "verdict", "write"]

STRUCTURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("U 3D", "uniformity_3d"), ("U 2D", "uniformity_2d"), ("ΔU", "delta_uniformity"),
    ("T 3D", "tolerance_3d"), ("T 2D", "tolerance_2d"), ("ΔT", "delta_tolerance"),
    ("G", "modality_gap"), ("A", "alignment"),
)
PROTOCOL_TITLES = {"probe": "Linear probing", "finetune": "Fine-tuning with one labelled scene (1 %-style)"}
PLOT_TITLES = {"structure_bars.png": "uniformity, tolerance and modality gap of each 3D space",
               "pca.png": "PCA of the sampled features, coloured by class"}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise FileNotFoundError(f"the demo report needs {path}, which is missing or unreadable ({error})") \
            from error


METHOD_NAMES = {"cmcr": "CMCR", "ppkt": "PPKT", "slidr": "SLidR"}  # as the papers write them


def _pretraining_of(name: str) -> str:
    for model, method, teacher in PRETRAINED:
        if model == name:
            return f"{METHOD_NAMES.get(method, method)} from the {TEACHER_LABELS[teacher]}"
    return "none (random initialisation)"


def _teacher_of(name: str) -> str:
    return next(TEACHER_LABELS[teacher] for model, _, teacher in PRETRAINED if model == name)


def judge(delta: float, spread: float, seeds: int) -> str:
    """'beats', 'is worse than' or 'does not clearly beat' (|delta| within the combined seed spread)."""
    if seeds > 1 and abs(delta) <= spread:
        return "does not clearly beat"
    return "beats" if delta > 0 else "is worse than" if delta < 0 else "does not clearly beat"


def _segmentation(out: Path, protocol: str, seeds: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name in MODELS:
        path = out / protocol / name / METRICS_JSON
        summary = _read_json(path)
        rows[name] = {"pretraining": _pretraining_of(name), "mean": summary["miou"]["mean"],
                      "std": summary["miou"]["std"], "per_seed": summary["per_seed_miou"],
                      "seeds": summary["seeds"], "metrics_json": str(path.relative_to(out)),
                      "labelled_scans": summary["protocol"]["scans"],
                      "steps": summary["protocol"]["total_steps"]}
    base = rows[RANDOM_INIT]
    for name, row in rows.items():
        if name == RANDOM_INIT:
            continue
        row["delta_vs_random_init"] = row["mean"] - base["mean"]
        row["spread"] = math.hypot(row["std"], base["std"])  # std of the two seed sets, combined
        row["judgement"] = judge(row["delta_vs_random_init"], row["spread"], seeds)
    return rows


# CMCR against the other methods pretrained from the same (semantic) teacher for the same steps.
COMPARED = ("cmcr_semantic", ("ppkt_semantic", "slidr_semantic"))


def method_comparison(segmentation: dict[str, dict[str, Any]], seeds: int) -> dict[str, Any]:
    """{protocol: {other: {delta, spread, judgement}}}: CMCR minus each other method, same teacher and steps.

    The spread combines the downstream-seed standard deviations of the two rows; the demo pretrains each
    model once, so the pretraining-seed spread (docs/cmcr.md) is not in it.
    """
    cmcr, others = COMPARED
    result: dict[str, Any] = {}
    for protocol, rows in segmentation.items():
        entry = {}
        for other in others:
            delta = rows[cmcr]["mean"] - rows[other]["mean"]
            spread = math.hypot(rows[cmcr]["std"], rows[other]["std"])
            entry[other] = {"delta": delta, "spread": spread, "judgement": judge(delta, spread, seeds)}
        result[protocol] = entry
    return result


def _structure(out: Path) -> dict[str, Any]:
    report = _read_json(out / "analysis" / STRUCTURE_JSON)
    models = {name: {"method": m["method"], "teacher": m["teacher"],
                     **{key: m[key] for _, key in STRUCTURE_COLUMNS}}
              for name, m in report["models"].items()}
    return {"models": models, "selection": report["selection"], "shared_teacher": report["shared_teacher"],
            "correlation_with_probe_miou": report.get("correlation", {})}


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def verdict(segmentation: dict[str, dict[str, Any]], seeds: int, quick: bool) -> str:
    """One honest paragraph computed from the mIoU tables."""
    sentences = []
    for protocol in PROTOCOLS:
        rows = segmentation[protocol]
        pretrained = [n for n in MODELS if n != RANDOM_INIT]
        best = max(pretrained, key=lambda n: rows[n]["delta_vs_random_init"])
        b = rows[best]
        what = "linear probing" if protocol == "probe" else "fine-tuning with one labelled scene"
        spread = f" (seed spread ±{100 * b['spread']:.1f})" if seeds > 1 else ""
        parts = [f"In {what}, the best pretrained model ({best}, {b['pretraining']}) {b['judgement']} random "
                 f"initialisation ({100 * rows[RANDOM_INIT]['mean']:.1f} % mIoU) by "
                 f"{_points(b['delta_vs_random_init'])} points{spread}"]
        for kind in ("semantic", "random"):
            names = [n for n, _, t in PRETRAINED if t == kind]
            wins = sum(rows[n]["judgement"] == "beats" for n in names)
            deltas = ", ".join(f"{n} {_points(rows[n]['delta_vs_random_init'])}" for n in names)
            parts.append(f"from the {TEACHER_LABELS[kind]}, {wins} of {len(names)} pretrained models beat it "
                         f"({deltas})")
        sentences.append("; ".join(parts) + ".")
    if seeds > 1:
        sentences.append(f"'Beat' means a mean gain over {seeds} seeds larger than the combined seed "
                         "standard deviation; smaller gains are reported as not clear.")
    else:
        sentences.append("With one seed there is no spread: differences of a point or two may be noise.")
    if quick:
        sentences.append("This is the --quick demo (a few pretraining steps, one epoch, a handful of "
                         "scans): it checks that the chain runs, its numbers are no evidence either way; run "
                         "the full demo for them.")
    return " ".join(sentences)


def collect(out: str | Path, settings: dict[str, Any], invocation: dict[str, Any]) -> dict[str, Any]:
    """Everything report.md shows, read from the run folders under `out`."""
    out = Path(out)
    stages = {p.stem: _read_json(p) for p in sorted((out / "stages").glob("*.json"),
                                                      key=lambda p: p.stat().st_mtime)}
    teacher = _read_json(out / "teacher" / METRICS_JSON)
    holdout = teacher.get("holdout") or {}
    seeds = settings["seeds"]
    segmentation = {protocol: _segmentation(out, protocol, seeds) for protocol in PROTOCOLS}
    structure = _structure(out)
    analysis = out / "analysis"
    order = ("structure_bars", "pca.", "pca_joint_")  # the overview first, then per model, then vs mIoU
    plots = sorted((str(p.relative_to(out)) for p in analysis.glob("*.png")),
                   key=lambda rel: (next((i for i, k in enumerate(order) if Path(rel).name.startswith(k)),
                                         len(order)), rel))
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": settings,
        "invocation": invocation,
        "stages": stages,
        "stage_totals": {"wall_s": sum(s["wall_s"] for s in stages.values()),
                         "cpu_s": sum(s["cpu_s"] for s in stages.values())},
        "teacher": {"steps": teacher["steps"], "holdout_scenes": holdout.get("scenes"),
                    "holdout_miou": holdout.get("miou"),
                    "holdout_pixel_accuracy": holdout.get("pixel_accuracy")},
        "miou": segmentation,
        "cmcr_vs_methods": method_comparison(segmentation, seeds),
        "structure": structure,
        "plots": plots,
        "predictions": _predictions(out, segmentation["finetune"]),
        "verdict": verdict(segmentation, seeds, settings["mode"] == "quick"),
    }


def _predictions(out: Path, finetune: dict[str, Any]) -> list[dict[str, Any]]:
    """The pictures of the best and the worst fine-tuned model (`pictures/finetune_<role>_<model>.png`)."""
    found = []
    for role in ("best", "worst"):
        for path in sorted((out / "pictures").glob(f"finetune_{role}_*.png")):
            model = path.stem.removeprefix(f"finetune_{role}_")
            found.append({"role": role, "model": model, "miou": finetune.get(model, {}).get("mean"),
                          "picture": str(path.relative_to(out))})
    return found


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _what_was_run(report: dict[str, Any]) -> list[str]:
    s, stages = report["settings"], report["stages"]
    lines = ["## What was run", ""]
    for key, seed in (("world_a", 0), ("world_b", 1)):
        scenes, samples = s[key]
        record = stages.get(key, {})
        points = record.get("mean_points")
        lines.append(f"- **{key}** (seed {seed}): {scenes} scenes × {samples} keyframes, "
                     f"{s['image_size'][0]}x{s['image_size'][1]} images"
                     + (f", {points:.0f} LiDAR points per sweep on average" if points else "") + ".")
    t = report["teacher"]
    lines.append(f"- **semantic teacher**: {t['steps']} steps on world_a (batch {s['teacher_batch']}, crops "
                 f"{s['teacher_crop'][0]}x{s['teacher_crop'][1]}); held-out scene(s) "
                 f"{', '.join(t['holdout_scenes'] or []) or '–'}: pixel accuracy "
                 f"{_fmt(t['holdout_pixel_accuracy'])}, mIoU {_fmt(t['holdout_miou'])}.")
    lines.append(f"- **pretraining**: CMCR (the recommended recipe, `cmcr_synthetic.yaml`) and PPKT, "
                 f"{s['pretrain_steps']} steps of batch {s['pretrain_batch']} on world_b's mini_train "
                 "scenes, each from the semantic teacher and from a random ResNet-18; SLidR from the "
                 "semantic teacher.")
    probe, fine = report["miou"]["probe"][RANDOM_INIT], report["miou"]["finetune"][RANDOM_INIT]
    lines.append(f"- **linear probing**: {s['probe_epochs']} epoch(s), label fraction "
                 f"{s['probe_label_fraction']} ({probe['labelled_scans']} labelled scans, "
                 f"{probe['steps']} steps); "
                 f"**fine-tuning**: {s['finetune_epochs']} epoch(s), label fraction "
                 f"{s['finetune_label_fraction']} (one scene, {fine['labelled_scans']} labelled scans, "
                 f"{fine['steps']} steps); {s['seeds']} seed(s) each; evaluation on the whole mini_val "
                 "split.")
    lines += ["", "| stage | wall s | CPU s | load average (start → end) |", "|---|---:|---:|---|"]
    for key, record in stages.items():
        lines.append(f"| {key} | {record['wall_s']:.1f} | {record['cpu_s']:.1f} | "
                     f"{record['load_before']:.2f} → {record['load_after']:.2f} |")
    totals, inv = report["stage_totals"], report["invocation"]
    lines += [f"| **all stages** | **{totals['wall_s']:.1f}** | **{totals['cpu_s']:.1f}** | |", "",
              f"This invocation: {inv['wall_s']:.1f} s wall, {inv['cpu_s']:.1f} s CPU, {inv['threads']} "
              f"thread(s); stages run: {len(inv['ran'])}, found complete and skipped: "
              f"{len(inv['skipped'])}.", ""]
    return lines


def _miou_tables(report: dict[str, Any]) -> list[str]:
    lines = ["## Segmentation mIoU on mini_val (%)", ""]
    for protocol in PROTOCOLS:
        rows = report["miou"][protocol]
        lines += [f"### {PROTOCOL_TITLES[protocol]}", "",
                  "| model | pretraining | mIoU (mean ± std) | per seed | Δ vs random init | |",
                  "|---|---|---:|---|---:|---|"]
        for name in MODELS:
            r = rows[name]
            per_seed = ", ".join(f"{100 * v:.2f}" for v in r["per_seed"])
            delta = "–" if name == RANDOM_INIT else f"{_points(r['delta_vs_random_init'])}"
            judgement = "" if name == RANDOM_INIT else r["judgement"]
            lines.append(f"| {name} | {r['pretraining']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | "
                         f"{per_seed} | {delta} | {judgement} |")
        lines.append("")
    return lines


def _comparison_table(report: dict[str, Any]) -> list[str]:
    cmcr, others = COMPARED
    seeds = report["settings"]["seeds"]
    lines = ["## CMCR against PPKT and SLidR (same semantic teacher, same steps)", "",
             "| protocol | vs | Δ mIoU (points) | downstream-seed spread | |", "|---|---|---:|---:|---|"]
    for protocol, entry in report["cmcr_vs_methods"].items():
        for other in others:
            e = entry[other]
            lines.append(f"| {PROTOCOL_TITLES[protocol]} | {other} | {_points(e['delta'])} | "
                         f"±{100 * e['spread']:.1f} | {cmcr} {e['judgement']} {other} |")
    lines += ["", f"Each model is pretrained once here, so the spread covers the {seeds} downstream seed(s) "
              "only; the spread over pretraining seeds is larger (docs/cmcr.md, \"What each part buys\", "
              "measures it over 3 pretraining seeds on worlds this demo never uses).", ""]
    return lines


def _structure_table(report: dict[str, Any]) -> list[str]:
    st = report["structure"]
    sel = st["selection"]
    lines = ["## Structure of each pretrained space against its teacher", "",
             f"{sel['num_features']} sampled mini_val points (at most {sel['per_class']} per class, seed "
             f"{sel['seed']}). U: uniformity, T: tolerance (3D student, 2D teacher, Δ = 3D − 2D), G: "
             "modality gap, A: alignment (docs/analysis.md).", "",
             "| model | method | teacher | " + " | ".join(c for c, _ in STRUCTURE_COLUMNS) + " |",
             "|---|---|---|" + "---:|" * len(STRUCTURE_COLUMNS)]
    for name, m in st["models"].items():
        values = " | ".join(_fmt(m[key]) for _, key in STRUCTURE_COLUMNS)
        lines.append(f"| {name} | {m['method']} | {_teacher_of(name)} | {values} |")
    correlation = st["correlation_with_probe_miou"]
    if correlation:
        pairs = ", ".join(f"{k} r = {v['pearson']:.2f}" for k, v in correlation.items()
                          if k in ("abs_delta_uniformity", "abs_delta_tolerance", "modality_gap"))
        lines += ["", f"Pearson correlation with the probing mIoU over these {len(st['models'])} models: "
                  f"{pairs} (four points: indicative only)."]
    lines.append("")
    return lines


def _fmt_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [f"# cmcr demo report ({s['mode']})", "",
             f"Generated {report['generated']}. Two synthetic worlds, a semantic teacher, CMCR, PPKT and "
             "SLidR pretraining, linear probing and one-scene fine-tuning against random initialisation and "
             "against each other, and the structure of each space. Machine-readable: "
             "[report.json](report.json).", ""]
    lines += _what_was_run(report)
    lines += _miou_tables(report)
    lines += _comparison_table(report)
    lines += _structure_table(report)
    if report.get("predictions"):
        lines += ["## Predictions of the best and the worst fine-tuned model", "",
                  "The first mini_val scan from above, coloured by the labels, the prediction and its errors "
                  "(red), and the points on the six cameras (`cmcr render`).", ""]
        for item in report["predictions"]:
            lines += [f"![{item['role']}: {item['model']}, mIoU {_fmt_percent(item['miou'])}]"
                      f"({item['picture']})", ""]
    lines += ["## Plots", ""]
    for rel in report["plots"]:
        name = Path(rel).name
        title = PLOT_TITLES.get(name) or name.removesuffix(".png").replace("_", " ")
        lines += [f"![{title}]({rel})", ""]
    lines += ["## Verdict", "", report["verdict"], ""]
    return "\n".join(lines)


def write(out: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write report.json and report.md into `out` (atomically); returns their paths."""
    out = Path(out)
    paths = (out / "report.md", out / "report.json")
    texts = (render_markdown(report), json.dumps(report, indent=1) + "\n")
    for path, text in zip(paths, texts, strict=True):
        atomic_write_text(path, text)
    return paths
