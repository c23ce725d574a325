"""A benchmark's scores from its graded samples: overall, per subject and per level.

Every share in the summary is a fraction in [0, 1]; tables print percentages. A breakdown
group holds the problems whose metadata names it, and its `problems` and `correct_samples`
add up to the benchmark's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from astro_core.evaluation.metrics import ProblemScore, score_problem
from astro_core.evaluation.samples import SampleRecord
from astro_core.problems import Problem

BREAKDOWNS = ("subject", "level")


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _scores(scores: Sequence[ProblemScore], ks: Sequence[int]) -> dict[str, Any]:
    accuracies = [s.accuracy for s in scores]
    mean = _mean(accuracies)
    spread = (
        math.fsum((a - mean) ** 2 for a in accuracies) / (len(scores) - 1)
        if len(scores) > 1
        else 0.0
    )
    return {
        "problems": len(scores),
        "samples": sum(s.n for s in scores),
        "correct_samples": sum(s.correct for s in scores),
        "accuracy": mean,
        "accuracy_stderr": math.sqrt(spread / len(scores)) if scores else 0.0,
        "majority": _mean([float(s.majority) for s in scores]),
        "pass_at_k": {str(k): _mean([s.pass_at[k] for s in scores]) for k in ks},
    }


def summarize_benchmark(
    name: str,
    problems: Sequence[Problem],
    samples: dict[str, list[SampleRecord]],
    ks: Sequence[int],
) -> dict[str, Any]:
    """Scores of one benchmark; `samples` maps each problem id to its n samples."""
    scores = {
        p.id: score_problem(
            p.id,
            [r.extracted_answer for r in samples[p.id]],
            [r.correct for r in samples[p.id]],
            ks,
        )
        for p in problems
    }
    records = [r for p in problems for r in samples[p.id]]
    summary = _scores(list(scores.values()), ks)
    summary.update(
        mean_tokens=_mean([r.tokens for r in records]),
        mean_backtracks=_mean([r.backtracks for r in records]),
        mean_reflections=_mean([r.reflections for r in records]),
        mean_positive_verdicts=_mean([r.positive_verdicts for r in records]),
        responses_with_backtrack=_mean([float(r.backtracks > 0) for r in records]),
        no_answer=sum(1 for r in records if not r.extracted_answer),
        verifier_timeouts=sum(1 for r in records if r.verdict == "timeout"),
        finish_reasons=dict(sorted(Counter(r.finish_reason for r in records).items())),
        backtracks_histogram={
            str(k): v for k, v in sorted(Counter(r.backtracks for r in records).items())
        },
        model_versions=sorted({r.model_version for r in records}),
    )
    for key in BREAKDOWNS:
        groups: dict[str, list[ProblemScore]] = {}
        for p in problems:
            if key in p.metadata:
                groups.setdefault(p.metadata[key], []).append(scores[p.id])
        if groups:
            summary[f"by_{key}"] = {g: _scores(groups[g], ks) for g in sorted(groups, key=_order)}
    return {"benchmark": name, **summary}


def _order(group: str) -> tuple[int, float, str]:
    """Numeric levels in numeric order, then names alphabetically."""
    try:
        return (0, float(group), group)
    except ValueError:
        return (1, 0.0, group)


def format_table(summary: dict[str, Any]) -> str:
    """The printed table of one evaluation: a row per benchmark, then MATH-500's breakdown."""
    protocol = summary["protocol"]
    n = protocol["n"]
    ks = [str(k) for k in protocol["pass_k"] if k > 1]
    header = f"{'benchmark':<12} {'problems':>8} {f'avg@{n}':>8} {f'maj@{n}':>8}"
    header += "".join(f" {f'pass@{k}':>8}" for k in ks)
    header += f" {'tokens':>8} {'backtr.':>8}"
    lines = [header]
    for name, result in summary["benchmarks"].items():
        row = f"{name:<12} {result['problems']:>8} {100 * result['accuracy']:>8.1f}"
        row += f" {100 * result['majority']:>8.1f}"
        row += "".join(f" {100 * result['pass_at_k'][k]:>8.1f}" for k in ks)
        row += f" {result['mean_tokens']:>8.0f} {result['mean_backtracks']:>8.2f}"
        lines.append(row)
    for name, result in summary["benchmarks"].items():
        going_back = _going_back_line(result.get("where_it_goes_back"))
        if going_back and result["mean_backtracks"] > 0:
            lines += ["", f"{name} goes back after {going_back}"]
    for name, result in summary["benchmarks"].items():
        for key in BREAKDOWNS:
            groups = result.get(f"by_{key}")
            if not groups:
                continue
            lines.append("")
            lines.append(
                f"{name} by {key}: "
                + ", ".join(
                    f"{g} {100 * s['accuracy']:.1f}% ({s['problems']})" for g, s in groups.items()
                )
            )
    lines.append("")
    lines.append(
        f"protocol: {protocol['metric']}, temperature {protocol['temperature']}, "
        f"top-p {protocol['top_p']}, max tokens {protocol['max_tokens']}, seed {protocol['seed']}"
    )
    return "\n".join(lines)


def _going_back_line(counts: Any) -> str:
    """Where a benchmark's responses go back, as one phrase ("" when nothing was counted)."""
    if not isinstance(counts, dict):
        return ""

    def share(rate: str, whole: str, what: str) -> str | None:
        if counts.get(rate) is None or not counts.get(whole):
            return None
        return f"{100 * counts[rate]:.0f}% of {counts[whole]} {what}"

    parts = [
        share("back_after_wrong", "wrong_attempts", "wrong attempts"),
        share("back_after_right", "right_attempts", "right ones"),
        share("back_after_called_wrong", "called_wrong", "its check called wrong"),
        share("back_after_called_right", "called_right", "it called right"),
    ]
    return ", ".join(part for part in parts if part)
