"""`build_report`: eval directories (+ trainer logs, trees, traces) -> report.html, report.md, PNGs.

report.html is self-contained: plots are embedded as PNG data URIs and graphs as inline SVG,
so it opens from disk with no network. The same plots are written beside it as PNG files
(and the graphs as SVG files), which report.md links to.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_core.analysis.graphs import (
    inline_svg,
    pick_examples,
    pick_tree,
    response_graph,
    svg_text,
    tree_svg,
)
from astro_core.analysis.paper import ARM_NAMES, PAPER_ACCURACY, PAPER_CORRELATION, PAPER_MODEL
from astro_core.analysis.runs import EvalRun, check_protocols, correlation_runs, load_runs, trends
from astro_core.analysis.trainlog import TrainLog, read_train_log
from astro_core.cloning.phrases import Phrases

MAX_DRAWN_TREE_NODES = 400
_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #222; line-height: 1.4; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.paper td { color: #666; font-style: italic; }
img.plot { display: block; max-width: 100%; height: auto; margin: 8px 0; }
svg.graph { display: block; max-width: 100%; height: auto; margin: 8px 0; }
.note { color: #8a4b00; } .muted { color: #666; font-size: 13px; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 8px; font-size: 12px; }
"""


@dataclass
class Report:
    html: Path
    markdown: Path
    plots: dict[str, Path] = field(default_factory=dict)
    graphs: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Page:
    """The report as HTML and Markdown, written side by side."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.html: list[str] = []
        self.md: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md += ["", "#" * level + " " + text, ""]

    def text(self, text: str, css: str = "") -> None:
        attr = f' class="{css}"' if css else ""
        self.html.append(f"<p{attr}>{html.escape(text)}</p>")
        self.md += [f"*{text}*" if css == "note" else text, ""]

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[str]], paper_rows: int = 0
    ) -> None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = []
        for index, row in enumerate(rows):
            css = ' class="paper"' if index >= len(rows) - paper_rows else ""
            cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
            body.append(f"<tr{css}>{cells}</tr>")
        self.html.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
        self.md.append("| " + " | ".join(headers) + " |")
        self.md.append("|" + "---|" * len(headers))
        self.md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        self.md.append("")

    def plot(self, path: Path | None, alt: str, missing: str) -> None:
        if path is None:
            self.text(missing, "note")
            return
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.html.append(
            f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        )
        self.md += [f"![{alt}]({path.name})", ""]

    def graph(self, svg: str, name: str, caption: str, body: str = "") -> Path:
        path = self.out / f"{name}.svg"
        path.write_text(svg, encoding="utf-8")
        self.html.append(f'<p class="muted">{html.escape(caption)}</p>')
        self.html.append(inline_svg(svg, name))
        if body:
            self.html.append(
                f"<details><summary>text</summary><pre>{html.escape(body)}</pre></details>"
            )
        self.md += [caption, "", f"![{name}]({path.name})", ""]
        return path


def _percent(value: Any) -> str:
    return f"{100 * float(value):.1f}" if isinstance(value, int | float) else "-"


def _accuracy_section(page: _Page, runs: Sequence[EvalRun], protocol: dict[str, Any]) -> None:
    n = protocol.get("n", "n")
    names = list(dict.fromkeys(b for run in runs for b in run.benchmarks))
    headers = ["checkpoint", "arm", "step"]
    for name in names:
        headers += [f"{name} avg@{n}", f"{name} maj@{n}", f"{name} paper"]
    rows = []
    for run in runs:
        row = [run.label, ARM_NAMES.get(run.arm, run.arm or "-"), str(run.step or "-")]
        for name in names:
            scores = run.benchmarks.get(name, {})
            paper = PAPER_ACCURACY.get(run.arm, {}).get(name)
            row += [
                _percent(scores.get("accuracy")),
                _percent(scores.get("majority")),
                f"{paper:.1f}" if paper is not None else "-",
            ]
        rows.append(row)
    for arm, numbers in PAPER_ACCURACY.items():
        row = [f"paper: {ARM_NAMES[arm]}", arm, "-"]
        for name in names:
            value = numbers.get(name)
            row += [f"{value:.1f}" if value is not None else "-", "-", "-"]
        rows.append(row)
    page.heading("Accuracy per benchmark and checkpoint")
    page.text(
        f"pass@1 is avg@{n} in percent; maj@{n} is the majority answer's accuracy. Paper rows "
        f"and columns: {PAPER_MODEL} (ASTRO, Kim et al. 2025), for scale only."
    )
    page.table(headers, rows, paper_rows=len(PAPER_ACCURACY))


def _correlation_section(page: _Page, runs: Sequence[EvalRun], plots: dict[str, Path]) -> None:
    from astro_core.analysis import plots as draw

    found = trends(runs)
    chosen = correlation_runs(runs)
    page.heading("Backtracks per response vs accuracy")
    which = "the RL checkpoints" if any(r.arm == "rl" for r in runs) else "every checkpoint"
    page.text(f"Pearson r across {which} ({len(chosen)}), per benchmark.")
    rows = []
    for name, trend in found.items():
        c = trend.correlation
        paper = PAPER_CORRELATION.get(name)
        rows.append(
            [
                name,
                str(c.n),
                f"{c.r:.3f}" if c.r is not None else "-",
                f"{c.p:.3g}" if c.p is not None else "-",
                c.reason or "",
                f"{paper:.2f}" if paper is not None else "-",
            ]
        )
    page.table(["benchmark", "checkpoints", "r", "p", "why no r", "paper r"], rows)
    if any(not t.correlation.defined for t in found.values()):
        page.text(
            "No r where fewer than 3 checkpoints are given or a series is constant: a "
            "correlation over so few points says nothing.",
            "note",
        )
    points = [
        [run.label]
        + [
            f"{float(run.benchmarks[b].get('mean_backtracks', 0)):.2f}"
            if b in run.benchmarks
            else "-"
            for b in found
        ]
        for run in chosen
    ]
    page.table(["checkpoint"] + [f"{b} backtracks/response" for b in found], points)
    path = draw.accuracy_vs_backtracks(found, page.out / "accuracy_vs_backtracks.png")
    if path:
        plots["accuracy_vs_backtracks"] = path
    page.plot(path, "accuracy vs backtracks per response", "no benchmark to correlate")


def _share_of(rate: Any, whole: Any) -> str:
    """A share with the count it is of ("85% of 40"), or "-" where there is none."""
    if not isinstance(rate, int | float) or not isinstance(whole, int) or not whole:
        return "-"
    return f"{100 * rate:.0f}% of {whole}"


def _going_back_section(page: _Page, runs: Sequence[EvalRun]) -> None:
    page.heading("Where it goes back")
    rows = [
        (run, name, scores["where_it_goes_back"])
        for run in runs
        for name, scores in run.benchmarks.items()
        if isinstance(scores.get("where_it_goes_back"), dict)
    ]
    if not rows:
        page.text(
            "No eval dir counts its attempts (summaries written before this count existed): "
            "evaluate again into a new dir.",
            "note",
        )
        return
    page.text(
        "A response is read as attempts (each step with a boxed answer); a share is of the "
        "attempts that a backtrack or restart follows. A model that searches goes back after "
        "wrong attempts and goes on after right ones; equal shares mean a habit copied from "
        "the traces. Recovery: of the responses whose first attempt is wrong, the share whose "
        "final answer is right."
    )
    checks = any(counts.get("called_wrong") or counts.get("called_right") for *_, counts in rows)
    headers = ["checkpoint", "benchmark", "back after wrong", "back after right", "recovery"]
    if checks:
        headers += ["back after its check said wrong", "back after its check said right"]
    table = []
    for run, name, counts in rows:
        row = [
            run.label,
            name,
            _share_of(counts.get("back_after_wrong"), counts.get("wrong_attempts")),
            _share_of(counts.get("back_after_right"), counts.get("right_attempts")),
            _share_of(counts.get("recovery"), counts.get("first_wrong")),
        ]
        if checks:
            row += [
                _share_of(counts.get("back_after_called_wrong"), counts.get("called_wrong")),
                _share_of(counts.get("back_after_called_right"), counts.get("called_right")),
            ]
        table.append(row)
    page.table(headers, table)
    if checks:
        page.text(
            "The last two columns count the attempts that state their own check (the "
            'synthetic family\'s "(need 49): wrong.") by what the check said: a model can '
            'learn to act on its check (back after "wrong", on after "right") while the '
            "check itself is unreliable; the two pairs of columns tell those apart."
        )


def _training_section(
    page: _Page, runs: Sequence[EvalRun], logs: Sequence[TrainLog], plots: dict[str, Path]
) -> None:
    from astro_core.analysis import plots as draw

    page.heading("Over RL steps")
    for log in logs:
        if log.skipped_lines:
            page.text(f"{log.path}: {log.skipped_lines} lines without a step were skipped.", "note")
    curves = draw.training_curves(logs, runs, page.out / "training_curves.png")
    if curves:
        plots["training_curves"] = curves
    page.plot(
        curves,
        "response length and reward over RL steps",
        "No response length or reward over steps: give --train-log, or evals with a step.",
    )
    over = draw.backtracks_over_steps(logs, runs, page.out / "backtracks_over_steps.png")
    if over:
        plots["backtracks_over_steps"] = over
    page.plot(
        over,
        "backtracks per response over RL steps",
        "No backtracks over steps: the trainer log has no backtracks_mean and no eval has a step.",
    )


def _examples_section(
    page: _Page, runs: Sequence[EvalRun], phrases: Phrases, graphs: dict[str, Path]
) -> None:
    page.heading("Example responses")
    for run in reversed(runs):  # the latest checkpoint given that has samples
        examples = pick_examples(run.samples())
        if examples:
            break
    else:
        page.text("No samples.jsonl with responses in the eval dirs.", "note")
        return
    titles = {
        "correct_with_backtrack": "a correct response that backtracks",
        "wrong": "a wrong response",
    }
    for key, title in titles.items():
        sample = examples.get(key)
        if sample is None:
            page.text(f"{run.label}: no {title}.", "note")
            continue
        name = f"example_{key}"
        caption = (
            f"{run.label}, {title}: {sample.benchmark} problem {sample.problem_id}, sample "
            f"{sample.sample_index}, answer {sample.extracted_answer or '(none)'}, "
            f"{sample.backtracks} backtracks, {sample.tokens} tokens"
        )
        graph = response_graph(
            sample.response, phrases, name=f"{sample.benchmark} {sample.problem_id}"
        )
        graphs[name] = page.graph(svg_text(graph), name, caption, sample.response)


def _traces_section(page: _Page, traces: Path, phrases: Phrases, graphs: dict[str, Path]) -> None:
    from astro_core.cloning.dataset import read_traces

    page.heading("A cloned trace")
    records = read_traces(traces)
    if not records:
        page.text(f"{traces} holds no traces.", "note")
        return
    with_backtrack = [r for r in records if r.backtracks > 0]
    record = min(with_backtrack or records, key=lambda r: len(r.trace))
    mean = sum(r.backtracks for r in records) / len(records)
    page.text(f"{len(records)} traces, {mean:.2f} backtracks per trace on average.")
    caption = (
        f"problem {record.problem_id}, style {record.style}, k={record.k}, "
        f"{record.backtracks} backtracks"
    )
    graph = response_graph(record.trace, phrases, name=f"trace {record.problem_id}")
    graphs["trace"] = page.graph(svg_text(graph), "trace", caption, record.trace)


def _tree_section(page: _Page, trees: Path, graphs: dict[str, Path]) -> None:
    from astro_core.trees import read_trees

    page.heading("A search tree")
    tree = pick_tree(read_trees(trees))
    if tree is None:
        page.text(f"{trees} holds no trees.", "note")
        return
    if len(tree.nodes) > MAX_DRAWN_TREE_NODES:
        page.text(f"The smallest tree has {len(tree.nodes)} nodes, too many to draw.", "note")
        return
    caption = f"problem {tree.problem_id}: {len(tree.nodes)} nodes, gold answer {tree.gold}"
    graphs["tree"] = page.graph(tree_svg(tree), "tree", caption)


def build_report(
    evals: Sequence[str | Path],
    out_dir: str | Path,
    *,
    train_logs: Sequence[str | Path] = (),
    trees: str | Path | None = None,
    traces: str | Path | None = None,
    allow_mixed: bool = False,
    phrases: Phrases | None = None,
    title: str = "ASTRO evaluation report",
) -> Report:
    """Write report.html, report.md and the plots for eval dirs (in the order given).

    Raises ReportInputError (a ValueError) for an eval dir without a summary, MixedProtocols
    for evaluations of different n / temperature / top-p / max tokens unless allow_mixed,
    and ValueError for an unreadable train log, trees or traces file.
    """
    from astro_core.analysis import plots as draw

    runs = load_runs(evals)
    differences = check_protocols(runs, allow_mixed)
    logs = [read_train_log(p) for p in train_logs]
    for path in (trees, traces):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"file not found: {path}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phrases = phrases or Phrases()
    page = _Page(out)
    plots: dict[str, Path] = {}
    graphs: dict[str, Path] = {}
    protocol = runs[0].protocol
    page.heading(title, 1)
    page.text(
        f"{len(runs)} evaluation(s). Protocol: {protocol.get('metric', '?')}, temperature "
        f"{protocol.get('temperature')}, top-p {protocol.get('top_p')}, max tokens "
        f"{protocol.get('max_tokens')}, seed {protocol.get('seed')}."
    )
    for difference in differences:
        page.text(f"Mixed protocols (--allow-mixed): {difference}.", "note")
    _accuracy_section(page, runs, protocol)
    bars = draw.accuracy_bars(runs, out / "accuracy.png")
    if bars:
        plots["accuracy"] = bars
    page.plot(bars, "accuracy per benchmark and checkpoint", "no benchmark results")
    _correlation_section(page, runs, plots)
    _training_section(page, runs, logs, plots)
    page.heading("Backtracks per response")
    histogram = draw.backtracks_histogram(runs, out / "backtracks_histogram.png")
    if histogram:
        plots["backtracks_histogram"] = histogram
    page.plot(histogram, "histogram of backtracks per response", "no backtrack counts in the evals")
    _going_back_section(page, runs)
    page.heading("MATH-500 by level")
    level_plot = draw.levels(runs, out / "math500_levels.png")
    if level_plot:
        plots["math500_levels"] = level_plot
    page.plot(level_plot, "MATH-500 accuracy by level", "no MATH-500 evaluation with levels")
    _examples_section(page, runs, phrases, graphs)
    if traces is not None:
        _traces_section(page, Path(traces), phrases, graphs)
    if trees is not None:
        _tree_section(page, Path(trees), graphs)
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(page.html)
        + "\n</body></html>\n"
    )
    report = Report(out / "report.html", out / "report.md", plots, graphs, differences)
    report.html.write_text(document, encoding="utf-8")
    report.markdown.write_text("\n".join(page.md).lstrip() + "\n", encoding="utf-8")
    return report
