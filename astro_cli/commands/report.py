"""`astro report`: eval directories (+ trainer logs, trees, traces) -> report.html and report.md.

    astro report --evals runs/base --evals runs/sft --evals runs/rl-100 --out report/
    astro report --evals runs/rl-* --train-log runs/train.jsonl --out report/

`--evals` may be repeated, and further eval dirs may follow as plain arguments (a shell glob
after --evals); plain arguments that are files are taken as more trainer logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from astro_cli.errors import fail


def report(
    out: Annotated[Path, typer.Option(help="Output directory: report.html, report.md, PNGs.")],
    evals: Annotated[
        list[Path] | None,
        typer.Option("--evals", help="Eval directory (summary.json); repeat for each checkpoint."),
    ] = None,
    more: Annotated[
        list[Path] | None,
        typer.Argument(help="More eval directories (or trainer log files).", show_default=False),
    ] = None,
    train_log: Annotated[
        list[Path] | None,
        typer.Option("--train-log", help="Trainer per-step JSONL log (repeatable)."),
    ] = None,
    trees: Annotated[
        Path | None, typer.Option(help="Search trees JSONL: one tree is drawn.")
    ] = None,
    traces: Annotated[
        Path | None, typer.Option(help="Cloned traces JSONL: one trace is drawn.")
    ] = None,
    allow_mixed: Annotated[
        bool, typer.Option(help="Compare evals of different n / temperature anyway.")
    ] = False,
    phrases: Annotated[
        Path | None,
        typer.Option(help="YAML of Phrases fields: the paraphrase patterns of examples."),
    ] = None,
    title: Annotated[str, typer.Option(help="Title of the report.")] = "ASTRO evaluation report",
) -> None:
    """Write a self-contained HTML report (plots embedded) and a Markdown summary."""
    from astro_core.analysis.report import build_report
    from astro_core.cloning.graphs import GraphRenderError
    from astro_core.cloning.phrases import Phrases
    from astro_core.config import ConfigError, load_config

    eval_dirs = list(evals or [])
    logs = list(train_log or [])
    for path in more or []:
        if path.is_dir():
            eval_dirs.append(path)
        elif path.is_file():
            logs.append(path)
        else:
            fail(f"{path}: no such eval directory or trainer log")
    if not eval_dirs:
        fail("give at least one eval directory with --evals DIR")
    try:
        chosen = load_config(Phrases, phrases, env_prefix=None) if phrases else None
    except ConfigError as exc:
        fail(f"--phrases: {exc}")
    try:
        result = build_report(
            eval_dirs,
            out,
            train_logs=logs,
            trees=trees,
            traces=traces,
            allow_mixed=allow_mixed,
            phrases=chosen,
            title=title,
        )
    except GraphRenderError as exc:
        fail(str(exc), code=1)
    except (ValueError, OSError) as exc:
        fail(str(exc), code=1)
    typer.echo(
        f"wrote {result.html} and {result.markdown} "
        f"({len(result.plots)} plots, {len(result.graphs)} graphs)"
    )


def register(app: typer.Typer) -> None:
    app.command("report")(report)
