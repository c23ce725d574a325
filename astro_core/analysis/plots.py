"""The report's plots (matplotlib, Agg backend: no display needed), each saved as a PNG.

Each function returns the path it wrote, or None when there is nothing to draw (the report
then says why instead of showing an empty plot).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from astro_core.analysis.paper import PAPER_ACCURACY  # noqa: E402
from astro_core.analysis.runs import EvalRun, Trend  # noqa: E402
from astro_core.analysis.trainlog import TrainLog  # noqa: E402

DPI = 110
MAX_HISTOGRAMS = 6


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def accuracy_bars(runs: Sequence[EvalRun], out: Path) -> Path | None:
    """avg@n per benchmark, one bar per checkpoint; the paper's numbers as markers."""
    names = list(dict.fromkeys(b for run in runs for b in run.benchmarks))
    if not names:
        return None
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(names) * max(1, len(runs)) / 2), 4))
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        xs = [k + (i - (len(runs) - 1) / 2) * width for k in range(len(names))]
        values = [100 * run.benchmarks.get(b, {}).get("accuracy", 0.0) for b in names]
        axes.bar(xs, values, width, label=run.label)
    for arm, marker in (("base", "v"), ("sft", "s"), ("rl", "^")):
        points = [
            (k, PAPER_ACCURACY[arm][b]) for k, b in enumerate(names) if b in PAPER_ACCURACY[arm]
        ]
        if points:
            axes.scatter(
                [p[0] for p in points],
                [p[1] for p in points],
                marker=marker,
                facecolors="none",
                edgecolors="black",
                label=f"paper {arm}",
                zorder=3,
            )
    axes.set_xticks(range(len(names)), names)
    axes.set_ylabel("pass@1 (avg@n), %")
    axes.set_ylim(0, 100)
    axes.set_title("Accuracy per benchmark and checkpoint")
    axes.legend(fontsize=7, ncol=2)
    return _save(figure, out)


def accuracy_vs_backtracks(trends: dict[str, Trend], out: Path) -> Path | None:
    """The paper's figure: accuracy against backtracks per response, fitted line and r."""
    if not trends:
        return None
    figure, axes_list = plt.subplots(
        1, len(trends), figsize=(4.2 * len(trends), 3.8), squeeze=False
    )
    for axes, trend in zip(axes_list[0], trends.values(), strict=True):
        xs, ys = trend.backtracks, [100 * a for a in trend.accuracy]
        axes.scatter(xs, ys, color="#2166ac", zorder=3)
        for x, y, label in zip(xs, ys, trend.labels, strict=True):
            axes.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        c = trend.correlation
        if c.defined and len(set(xs)) > 1:
            slope, intercept = _fit(xs, ys)
            low, high = min(xs), max(xs)
            axes.plot(
                [low, high], [slope * low + intercept, slope * high + intercept], color="#d73027"
            )
            title = f"{trend.benchmark}: r = {c.r:.2f}, p = {c.p:.3g} (n={c.n})"
        else:
            title = f"{trend.benchmark}: no r ({c.reason})"
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("backtracks per response")
        axes.set_ylabel("pass@1, %")
    return _save(figure, out)


def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line y = slope * x + intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def _stepped(runs: Sequence[EvalRun]) -> list[EvalRun]:
    return sorted((r for r in runs if r.step is not None), key=lambda r: r.step or 0)


def _eval_series(
    stepped: Sequence[EvalRun], key: str
) -> dict[str, tuple[list[float], list[float]]]:
    """Per benchmark, (steps, values) of one summary field across checkpoints with a step."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for run in stepped:
        for bench, scores in run.benchmarks.items():
            steps, values = series.setdefault(bench, ([], []))
            steps.append(float(run.step or 0))
            values.append(float(scores.get(key, 0.0)))
    return series


def training_curves(logs: Sequence[TrainLog], runs: Sequence[EvalRun], out: Path) -> Path | None:
    """Response length and reward over RL steps (trainer logs; eval lengths by step)."""
    stepped = _stepped(runs)
    length_series = [(log.name, *log.series("completion_length")) for log in logs]
    reward_series = [(log.name, *log.series("reward")) for log in logs]
    has_eval = len(stepped) > 0
    if not any(s[1] for s in length_series + reward_series) and not has_eval:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, steps, values in length_series:
        if steps:
            left.plot(steps, values, label=f"{name} (training)")
    for bench, (steps, values) in _eval_series(stepped, "mean_tokens").items():
        left.plot(steps, values, marker="o", linestyle="--", label=f"eval {bench}")
    left.set_title("Response length over RL steps")
    left.set_xlabel("step")
    left.set_ylabel("tokens per response")
    left.legend(fontsize=7)
    drawn = False
    for name, steps, values in reward_series:
        if steps:
            right.plot(steps, values, label=name, color="#1a9850")
            drawn = True
    right.set_title("Reward over RL steps" if drawn else "Reward over RL steps (no trainer log)")
    right.set_xlabel("step")
    right.set_ylabel("mean reward")
    if drawn:
        right.legend(fontsize=7)
    return _save(figure, out)


def backtracks_over_steps(
    logs: Sequence[TrainLog], runs: Sequence[EvalRun], out: Path
) -> Path | None:
    """Backtracks per response over RL steps: the trainer's rollouts and the evaluations."""
    stepped = _stepped(runs)
    series = [(log.name, *log.series("backtracks")) for log in logs]
    if not any(s[1] for s in series) and not stepped:
        return None
    figure, axes = plt.subplots(figsize=(7, 3.8))
    for name, steps, values in series:
        if steps:
            axes.plot(steps, values, label=f"{name} (rollouts)")
    for bench, (steps, values) in _eval_series(stepped, "mean_backtracks").items():
        axes.plot(steps, values, marker="o", linestyle="--", label=f"eval {bench}")
    axes.set_title("Backtracks per response over RL steps")
    axes.set_xlabel("step")
    axes.set_ylabel("backtracks per response")
    axes.legend(fontsize=7)
    return _save(figure, out)


def backtracks_histogram(runs: Sequence[EvalRun], out: Path) -> Path | None:
    """Share of responses by number of backtracks, per checkpoint (all benchmarks pooled)."""
    histograms = []
    for run in runs:
        counts: dict[int, int] = {}
        for scores in run.benchmarks.values():
            for key, value in scores.get("backtracks_histogram", {}).items():
                counts[int(key)] = counts.get(int(key), 0) + int(value)
        if counts:
            histograms.append((run.label, counts))
    if not histograms:
        return None
    if len(histograms) > MAX_HISTOGRAMS:  # the first, the last and evenly spaced between
        step = (len(histograms) - 1) / (MAX_HISTOGRAMS - 1)
        histograms = [histograms[round(i * step)] for i in range(MAX_HISTOGRAMS)]
    top = max(k for _, counts in histograms for k in counts)
    figure, axes = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(histograms)
    for i, (label, counts) in enumerate(histograms):
        total = sum(counts.values())
        xs = [k + (i - (len(histograms) - 1) / 2) * width for k in range(top + 1)]
        axes.bar(xs, [100 * counts.get(k, 0) / total for k in range(top + 1)], width, label=label)
    axes.set_title("Backtracks per response")
    axes.set_xlabel("backtracks in a response")
    axes.set_ylabel("% of responses")
    axes.legend(fontsize=7)
    return _save(figure, out)


def levels(runs: Sequence[EvalRun], out: Path, benchmark: str = "math500") -> Path | None:
    """Accuracy per difficulty level of MATH-500, one bar per checkpoint."""
    with_levels = [r for r in runs if r.benchmarks.get(benchmark, {}).get("by_level")]
    if not with_levels:
        return None
    names = list(
        dict.fromkeys(level for r in with_levels for level in r.benchmarks[benchmark]["by_level"])
    )
    figure, axes = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(with_levels)
    for i, run in enumerate(with_levels):
        by_level = run.benchmarks[benchmark]["by_level"]
        xs = [k + (i - (len(with_levels) - 1) / 2) * width for k in range(len(names))]
        axes.bar(
            xs,
            [100 * by_level.get(n, {}).get("accuracy", 0.0) for n in names],
            width,
            label=run.label,
        )
    axes.set_xticks(range(len(names)), [f"level {n}" for n in names])
    axes.set_ylabel("pass@1, %")
    axes.set_ylim(0, 100)
    axes.set_title(f"{benchmark} accuracy by level")
    axes.legend(fontsize=7)
    return _save(figure, out)
