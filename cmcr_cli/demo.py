"""`cmcr demo`: the whole chain on two small synthetic worlds, with a report (docs/demo.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from cmcr_cli.common import DEVICE_OPTION, console, print_report, run_or_fail, setup_logging
from cmcr_core import api


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Output folder; a rerun continues it."),
    quick: bool = typer.Option(False, "--quick", help="Tiny worlds and a few steps (under 3 minutes; CI)."),
    threads: int = typer.Option(2, "--threads", help="Torch CPU threads."),
    seeds: int = typer.Option(None, "--seeds", help="Probing/fine-tuning seeds (default 3; --quick 1)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete a demo of other settings in --out, restart (default: continue)."
    ),
    recipes: Path = typer.Option(None, "--recipes", help="Recipes folder (default: the packaged recipes)."),
    device: str = DEVICE_OPTION,
) -> None:
    """Write two worlds, train a teacher, pretrain CMCR and PPKT, probe, fine-tune, analyse; DIR/report.md."""
    setup_logging()
    console.print(f"[bold]cmcr demo[/] ({'quick' if quick else 'full'}) into {out}", highlight=False)
    try:
        result = run_or_fail(api.demo, out, quick=quick, seeds=seeds, threads=threads, overwrite=overwrite,
                             recipes=recipes, device=device,
                             say=lambda line: console.print(line, highlight=False))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: finished stages are kept; run `cmcr demo --out {out}` with "
                      "the same options to continue", highlight=False)
        raise typer.Exit(130) from None
    print_report(result.summary())
