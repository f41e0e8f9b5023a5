"""`cmcr demo`: the whole chain on two small synthetic worlds, with a report (docs/demo.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import console, fail, setup_logging


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Output folder; a rerun continues it."),
    quick: bool = typer.Option(False, "--quick", help="Tiny worlds and a few steps (under 3 minutes; CI)."),
    threads: int = typer.Option(2, "--threads", help="Torch CPU threads."),
    seeds: int = typer.Option(None, "--seeds", help="Probing/fine-tuning seeds (default 3; --quick 1)."),
    force: bool = typer.Option(False, "--force", help="Delete a demo of other settings in --out, restart."),
    recipes: Path = typer.Option(None, "--recipes", help="Recipes folder (default: the repository's)."),
) -> None:
    """Write two worlds, train a teacher, pretrain CMCR and PPKT, probe, fine-tune, analyse; DIR/report.md."""
    setup_logging()
    from cmcr_core.demo import DemoSettingsError, run_demo
    from cmcr_core.engine.loop import NonFiniteLossError

    console.print(f"[bold]cmcr demo[/] ({'quick' if quick else 'full'}) into {out}", highlight=False)
    try:
        result = run_demo(out, quick=quick, seeds=seeds, threads=threads, force=force, recipes_dir=recipes,
                          say=lambda line: console.print(line, highlight=False))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: finished stages are kept; run `cmcr demo --out {out}` with "
                      "the same options to continue", highlight=False)
        raise typer.Exit(130) from None
    except NonFiniteLossError as exc:
        fail(str(exc), code=3)
    except (DemoSettingsError, ValueError, FileExistsError, FileNotFoundError) as exc:
        fail(str(exc))
    report = result.report
    for protocol, title in (("probe", "linear probing"), ("finetune", "fine-tuning")):
        rows = report["miou"][protocol]
        line = ", ".join(f"{name} {100 * r['mean']:.1f}" + (f"±{100 * r['std']:.1f}" if len(r["per_seed"]) > 1
                                                             else "") for name, r in rows.items())
        console.print(f"{title} mIoU %: {line}", highlight=False)
    console.print(report["verdict"], highlight=False)
    console.print(f"[green]done[/]: report {result.report_md} (and {result.report_json.name}); plots in "
                  f"{out / 'analysis'}; runs in {out}/pretrain, {out}/probe, {out}/finetune; teacher "
                  f"{out / 'teacher' / 'teacher.pt'}; worlds in {out / 'worlds'}", highlight=False)
