"""Eval directories as checkpoints: loading, protocol checks, backtracks vs accuracy.

An eval directory is what `evaluate` writes (summary.json, samples.jsonl). Several of them
(e.g. the RL checkpoints of one run) are compared per benchmark: mean backtracks per
response against accuracy, with the Pearson r across checkpoints. The correlation uses the
checkpoints marked `rl` when any is, else every one given; it needs at least three.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_core.analysis.stats import Correlation, pearson
from astro_core.evaluation.samples import SAMPLES_FILE, SUMMARY_FILE, SampleRecord, iter_samples

# Protocol fields that make two evaluations comparable.
COMPARED_KEYS = ("n", "temperature", "top_p", "greedy", "max_tokens")
ARM_ORDER = ("base", "sft", "rl", "direct_sft", "direct_rl", "")


class ReportInputError(ValueError):
    """An input of the analysis is missing or unusable; the message names it."""


class MixedProtocols(ReportInputError):
    """Evaluations with different sampling protocols were given for one comparison."""


@dataclass
class EvalRun:
    """One evaluated checkpoint."""

    path: Path
    label: str
    arm: str
    step: int | None
    summary: dict[str, Any]

    @property
    def protocol(self) -> dict[str, Any]:
        return dict(self.summary.get("protocol", {}))

    @property
    def benchmarks(self) -> dict[str, dict[str, Any]]:
        return dict(self.summary.get("benchmarks", {}))

    def samples(self) -> Iterator[SampleRecord]:
        path = self.path / SAMPLES_FILE
        if path.is_file():
            yield from iter_samples(path)


def load_run(path: str | Path) -> EvalRun:
    """An eval directory; raises ReportInputError naming what is missing."""
    folder = Path(path)
    if not folder.is_dir():
        raise ReportInputError(f"eval dir not found: {folder}")
    summary_file = folder / SUMMARY_FILE
    if not summary_file.is_file():
        raise ReportInputError(
            f"eval dir {folder} has no {SUMMARY_FILE} (has its evaluation finished?)"
        )
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"{summary_file} is not valid JSON: {exc}") from exc
    if not isinstance(summary, dict) or not isinstance(summary.get("benchmarks"), dict):
        raise ReportInputError(f"{summary_file} is not an evaluation summary (no benchmarks)")
    if not isinstance(summary.get("protocol"), dict):
        raise ReportInputError(f"{summary_file} has no protocol")
    for name, result in summary["benchmarks"].items():
        if not isinstance(result, dict) or not isinstance(result.get("accuracy"), int | float):
            raise ReportInputError(f"{summary_file}: benchmark {name} has no accuracy")
    model: dict[str, Any] = summary["model"] if isinstance(summary.get("model"), dict) else {}
    step = model.get("step")
    return EvalRun(
        path=folder,
        label=str(model.get("label") or folder.resolve().name),
        arm=str(model.get("arm") or ""),
        step=step if isinstance(step, int) else None,
        summary=summary,
    )


def load_runs(paths: Sequence[str | Path]) -> list[EvalRun]:
    """Eval directories in the order given; labels made unique."""
    if not paths:
        raise ReportInputError("give at least one eval dir")
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} ({seen[run.label]})"
    return runs


def check_protocols(runs: Sequence[EvalRun], allow_mixed: bool = False) -> list[str]:
    """Differences in sampling protocol: an error, or (allowed) warnings to print."""
    differences = []
    for key in COMPARED_KEYS:
        values = {run.label: run.protocol.get(key) for run in runs}
        if len({json.dumps(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{label}: {value}" for label, value in values.items())
            differences.append(f"{key} differs ({shown})")
    if differences and not allow_mixed:
        raise MixedProtocols(
            "evaluations with different protocols: "
            + "; ".join(differences)
            + " (pass --allow-mixed to compare them anyway)"
        )
    return differences


@dataclass
class Trend:
    """Backtracks per response and accuracy of one benchmark across checkpoints."""

    benchmark: str
    labels: list[str] = field(default_factory=list)
    backtracks: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    correlation: Correlation = field(default_factory=lambda: Correlation(0))


def correlation_runs(runs: Sequence[EvalRun]) -> list[EvalRun]:
    """The checkpoints a correlation is taken over: the RL ones if any is marked, else all."""
    rl = [run for run in runs if run.arm == "rl"]
    return rl or list(runs)


def trends(runs: Sequence[EvalRun]) -> dict[str, Trend]:
    """Per benchmark: each checkpoint's mean backtracks and accuracy, and Pearson r."""
    chosen = correlation_runs(runs)
    result: dict[str, Trend] = {}
    for run in chosen:
        for name, scores in run.benchmarks.items():
            trend = result.setdefault(name, Trend(name))
            trend.labels.append(run.label)
            trend.backtracks.append(float(scores.get("mean_backtracks", 0.0)))
            trend.accuracy.append(float(scores["accuracy"]))
    for trend in result.values():
        trend.correlation = pearson(trend.backtracks, trend.accuracy)
    return result


def arm_rank(run: EvalRun) -> tuple[int, int]:
    """Sort key: arm (base, sft, rl, direct...), then step."""
    arm = run.arm if run.arm in ARM_ORDER else ""
    return ARM_ORDER.index(arm), run.step if run.step is not None else -1
