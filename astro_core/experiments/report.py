"""The experiment's report: scores read from each seed's evaluations, then report.json,
report.md and the plots (matplotlib, Agg) in the output folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from astro_core.analysis.behaviours import BacktrackConditions, merge  # noqa: E402
from astro_core.analysis.experiment import (  # noqa: E402
    ARMS,
    CheckpointScore,
    ExperimentResult,
    analyse,
    mean_series,
    render_markdown,
    scores_from_summary,
)
from astro_core.analysis.trainlog import read_train_log  # noqa: E402
from astro_core.evaluation.samples import SAMPLES_FILE, SUMMARY_FILE  # noqa: E402
from astro_core.experiments.behaviour import (  # noqa: E402
    conditions_of,
    read_answers,
    verdict_contexts,
)

if TYPE_CHECKING:
    from astro_core.experiments.driver import SeedRun

COLOURS = {"astro": "tab:blue", "direct": "tab:orange"}
TRAIN_METRICS = ("completion_length", "reward")
DPI = 100


def _save(figure: Any, path: Path) -> Path:
    """Lay out, write and close a figure (a closed figure frees its memory)."""
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def seed_scores(seed: int, eval_dirs: Sequence[Path]) -> list[CheckpointScore]:
    scores: list[CheckpointScore] = []
    for folder in eval_dirs:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        scores += scores_from_summary(summary, seed)
    return scores


def collect(name: str, seeds: Sequence[SeedRun], meta: dict[str, Any]) -> ExperimentResult:
    """The analysis of every seed's evaluations and GRPO logs."""
    scores = [s for run in seeds for s in seed_scores(run.seed, run.eval_dirs)]
    train: dict[str, dict[str, list[list[float]]]] = {}
    for metric in TRAIN_METRICS:
        for arm in ARMS:
            series = []
            for run in seeds:
                path = run.train_log(arm)
                if path is not None and path.is_file():
                    series.append(read_train_log(path).series(metric))
            train.setdefault(metric, {})[arm] = mean_series(series)
    result = analyse(name, scores, train_curves=train, meta=meta)
    result.behaviour = behaviour(seeds, scores)
    verdicts: dict[str, int] = {}
    for run in seeds:
        traces = run.outcome.artifacts.get("clone.traces")
        if traces and Path(traces).is_file():
            for key, count in verdict_contexts(Path(traces)).items():
                verdicts[key] = verdicts.get(key, 0) + count
    result.trace_verdicts = dict(sorted(verdicts.items()))
    return result


def behaviour(seeds: Sequence[SeedRun], scores: Sequence[CheckpointScore]) -> dict[str, Any]:
    """Where each arm's base, SFT and last RL checkpoint goes back, over every seed."""
    last_rl = {
        (s.seed, s.arm): s.label
        for s in sorted(scores, key=lambda s: s.step or 0)
        if s.stage == "rl"
    }
    wanted = {s.label: f"{s.arm} {s.stage}" for s in scores if s.stage in ("base", "sft")}
    wanted.update({label: f"{arm} rl (last)" for (_, arm), label in last_rl.items()})
    grouped: dict[str, list[BacktrackConditions]] = {}
    for run in seeds:
        inputs = Path(run.outcome.output_dir) / "inputs" / "eval"
        for folder in run.eval_dirs:
            name = wanted.get(folder.name)
            if name is None:
                continue
            counts = _summary_conditions(folder)
            if counts is None and (folder / SAMPLES_FILE).is_file():  # an older summary
                counts = conditions_of(folder / SAMPLES_FILE, read_answers(inputs.glob("*.jsonl")))
            if counts is not None:
                grouped.setdefault(name, []).append(counts)
    order = ["base base", "astro sft", "astro rl (last)", "direct sft", "direct rl (last)"]
    return {name: merge(grouped[name]).to_dict() for name in order if name in grouped}


def _summary_conditions(eval_dir: Path) -> BacktrackConditions | None:
    """The counts the evaluation kept in its summary, over its benchmarks; None when the
    summary is missing or was written before they were kept."""
    path = eval_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    benchmarks = json.loads(path.read_text(encoding="utf-8")).get("benchmarks") or {}
    counts = [
        BacktrackConditions.from_dict(scores.get("where_it_goes_back") or {})
        for scores in benchmarks.values()
    ]
    if not counts or any(c is None for c in counts):
        return None
    return merge(c for c in counts if c is not None)


def write_report(result: ExperimentResult, out: Path) -> dict[str, Path]:
    """report.json, report.md and the PNGs; returns their paths by name."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {
        title: path.name
        for title, path in (
            ("accuracy by stage", accuracy_plot(result, out / "accuracy.png")),
            ("over RL steps", curves_plot(result, out / "rl_curves.png")),
            ("backtracks vs accuracy", scatter_plot(result, out / "backtracks_vs_accuracy.png")),
        )
        if path is not None
    }
    (out / "report.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(result, plots) + "\n")
    return {"json": out / "report.json", "markdown": out / "report.md"} | {
        k: out / v for k, v in plots.items()
    }


def _error(interval: Any) -> float:
    return 100 * (interval.half_width or 0.0)


def accuracy_plot(result: ExperimentResult, path: Path) -> Path | None:
    """Per benchmark, ASTRO and Direct bars at base, SFT and RL with their intervals."""
    benchmarks = list(dict.fromkeys(row.benchmark for row in result.table))
    if not benchmarks:
        return None
    figure, axes_list = plt.subplots(
        1, len(benchmarks), figsize=(4.5 * len(benchmarks), 3.6), squeeze=False
    )
    for axes, benchmark in zip(axes_list[0], benchmarks, strict=True):
        rows = [r for r in result.table if r.benchmark == benchmark]
        for offset, arm in ((-0.2, "astro"), (0.2, "direct")):
            intervals = [getattr(r, arm) for r in rows]
            axes.bar(
                [i + offset for i in range(len(rows))],
                [100 * iv.mean for iv in intervals],
                0.4,
                yerr=[_error(iv) for iv in intervals],
                capsize=3,
                color=COLOURS[arm],
                label="ASTRO" if arm == "astro" else "Direct",
            )
        axes.set_xticks(range(len(rows)), [r.stage for r in rows])
        axes.set_ylabel("accuracy, %")
        axes.set_title(benchmark, fontsize=9)
        axes.legend(fontsize=8)
    return _save(figure, path)


def curves_plot(result: ExperimentResult, path: Path) -> Path | None:
    """Accuracy, backtracks and tokens per response over RL steps, one line per arm."""
    benchmark = next(iter(result.curves), None)
    if benchmark is None:
        return None
    metrics = [
        ("accuracy", "accuracy, %", 100.0),
        ("backtracks", "backtracks / response", 1.0),
        ("tokens", "tokens / response", 1.0),
    ]
    figure, axes_list = plt.subplots(1, 3, figsize=(12, 3.4))
    for axes, (metric, label, scale) in zip(axes_list, metrics, strict=True):
        for arm, points in result.curves[benchmark].items():
            if not points:
                continue
            values = [getattr(p, metric) for p in points]
            axes.errorbar(
                [p.step for p in points],
                [scale * v.mean for v in values],
                yerr=[scale * (v.half_width or 0.0) for v in values],
                marker="o",
                capsize=2,
                color=COLOURS[arm],
                label="ASTRO" if arm == "astro" else "Direct",
            )
        axes.set_xlabel("RL step (0: SFT)")
        axes.set_ylabel(label)
        axes.legend(fontsize=8)
    figure.suptitle(f"{benchmark}: means over seeds", fontsize=9)
    return _save(figure, path)


def scatter_plot(result: ExperimentResult, path: Path) -> Path | None:
    """Backtracks per response against accuracy, one point per RL checkpoint and seed."""
    benchmark = next(iter(result.correlations), None)
    rl = [s for s in result.scores if s.stage == "rl" and s.benchmark == benchmark]
    if benchmark is None or not rl:
        return None
    figure, axes = plt.subplots(figsize=(5, 3.8))
    for arm in ARMS:
        points = [s for s in rl if s.arm == arm]
        c = result.correlations[benchmark][arm]
        shown = f"r={c.r:+.2f}, p={c.p:.2g}" if c.r is not None and c.p is not None else c.reason
        axes.scatter(
            [s.backtracks for s in points],
            [100 * s.accuracy for s in points],
            color=COLOURS[arm],
            label=f"{'ASTRO' if arm == 'astro' else 'Direct'} ({shown})",
        )
    axes.set_xlabel("backtracks / response")
    axes.set_ylabel("accuracy, %")
    axes.set_title(f"{benchmark}: RL checkpoints of every seed", fontsize=9)
    axes.legend(fontsize=7)
    return _save(figure, path)
