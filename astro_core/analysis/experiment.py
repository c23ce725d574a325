"""ASTRO vs Direct over seeds: intervals, paired differences, RL curves and the backtracks test.

Input: the evaluation summaries each seed's run wrote (one per checkpoint: base, both SFT
arms, every saved RL checkpoint of each arm), turned into `CheckpointScore`s. Output: an
`ExperimentResult` (plain data, written as report.json) and its Markdown rendering.

- Accuracy per arm and stage: the mean over seeds with a Student t interval
  (mean +- t_{(1+c)/2, n-1} s / sqrt(n)); one seed gives the mean and no interval.
- ASTRO - Direct: the paired difference per seed (same seed = same problems, trees, settings),
  with the t interval of those differences.
- RL curves: per arm and RL step (step 0 is the arm's SFT checkpoint) the mean over seeds of
  accuracy, backtracks per response and response length.
- Backtracks vs accuracy: Pearson r and its p-value across RL checkpoints (every seed's,
  pooled), per arm and for both arms together (`astro_core.analysis.stats.pearson`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy.stats import t as student_t

from astro_core.analysis.stats import Correlation, pearson

ARMS = ("astro", "direct")
STAGES = ("base", "sft", "rl")
# The evaluation's arm names (services/coordinator/runs/evaluation.py) -> (arm, stage)
EVAL_ARMS: dict[str, tuple[str, str]] = {
    "base": ("base", "base"),
    "sft": ("astro", "sft"),
    "rl": ("astro", "rl"),
    "direct_sft": ("direct", "sft"),
    "direct_rl": ("direct", "rl"),
}


@dataclass(frozen=True)
class Interval:
    """A mean over `n` values and its two-sided t interval (None with fewer than two)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    confidence: float

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else self.high - self.mean


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of `values` with its Student t confidence interval."""
    if not values:
        raise ValueError("t_interval: no values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, None, None, n, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(student_t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence)


def paired_difference(
    first: Sequence[float], second: Sequence[float], confidence: float = 0.95
) -> Interval:
    """The mean of first[i] - second[i] with its t interval (a paired comparison)."""
    if len(first) != len(second):
        raise ValueError(f"paired_difference: {len(first)} values against {len(second)}")
    return t_interval([a - b for a, b in zip(first, second, strict=True)], confidence)


@dataclass(frozen=True)
class CheckpointScore:
    """One evaluated checkpoint of one seed on one benchmark."""

    seed: int
    arm: str  # base, astro, direct
    stage: str  # base, sft, rl
    step: int | None  # the RL step; None for base and SFT
    benchmark: str
    accuracy: float
    backtracks: float  # mean per response
    tokens: float  # mean response length in tokens
    label: str = ""


def scores_from_summary(summary: Mapping[str, Any], seed: int) -> list[CheckpointScore]:
    """The scores of one evaluation summary (summary.json of an eval directory)."""
    model = summary.get("model") or {}
    eval_arm = str(model.get("arm") or "")
    if eval_arm not in EVAL_ARMS:
        raise ValueError(f"evaluation {model.get('label')!r} has unknown arm {eval_arm!r}")
    arm, stage = EVAL_ARMS[eval_arm]
    step = model.get("step") if stage == "rl" else None
    scores = []
    for name, result in summary["benchmarks"].items():
        scores.append(
            CheckpointScore(
                seed=seed,
                arm=arm,
                stage=stage,
                step=int(step) if step is not None else None,
                benchmark=name,
                accuracy=float(result["accuracy"]),
                backtracks=float(result.get("mean_backtracks", 0.0)),
                tokens=float(result.get("mean_tokens", 0.0)),
                label=str(model.get("label") or ""),
            )
        )
    return scores


def stage_score(
    scores: Iterable[CheckpointScore], seed: int, arm: str, stage: str, benchmark: str
) -> CheckpointScore | None:
    """A seed's checkpoint of an arm and stage (RL: the last step; base: either arm)."""
    found = [
        s
        for s in scores
        if s.seed == seed
        and s.benchmark == benchmark
        and s.stage == stage
        and (s.arm == arm or stage == "base")
    ]
    if not found:
        return None
    return max(found, key=lambda s: s.step if s.step is not None else -1)


@dataclass(frozen=True)
class StageRow:
    """Accuracy of both arms at one stage on one benchmark, over the seeds both have."""

    benchmark: str
    stage: str
    seeds: list[int]
    astro: Interval
    direct: Interval
    difference: Interval  # ASTRO - Direct, paired by seed


def accuracy_table(scores: Sequence[CheckpointScore], confidence: float = 0.95) -> list[StageRow]:
    """One row per benchmark and stage (base, sft, rl), over the seeds with both arms."""
    rows = []
    for benchmark in _benchmarks(scores):
        for stage in STAGES:
            pairs = []
            for seed in sorted({s.seed for s in scores}):
                a = stage_score(scores, seed, "astro", stage, benchmark)
                d = stage_score(scores, seed, "direct", stage, benchmark)
                if a is not None and d is not None:
                    pairs.append((seed, a.accuracy, d.accuracy))
            if not pairs:
                continue
            astro = [p[1] for p in pairs]
            direct = [p[2] for p in pairs]
            rows.append(
                StageRow(
                    benchmark=benchmark,
                    stage=stage,
                    seeds=[p[0] for p in pairs],
                    astro=t_interval(astro, confidence),
                    direct=t_interval(direct, confidence),
                    difference=paired_difference(astro, direct, confidence),
                )
            )
    return rows


@dataclass(frozen=True)
class CurvePoint:
    """One RL step of one arm: means over the seeds that saved a checkpoint there."""

    step: int
    seeds: int
    accuracy: Interval
    backtracks: Interval
    tokens: Interval


def rl_curves(
    scores: Sequence[CheckpointScore], confidence: float = 0.95
) -> dict[str, dict[str, list[CurvePoint]]]:
    """benchmark -> arm -> points by step; step 0 is the arm's SFT checkpoint."""
    curves: dict[str, dict[str, list[CurvePoint]]] = {}
    for benchmark in _benchmarks(scores):
        for arm in ARMS:
            by_step: dict[int, list[CheckpointScore]] = {}
            for s in scores:
                if s.benchmark != benchmark or s.arm != arm or s.stage == "base":
                    continue
                step = 0 if s.stage == "sft" else (s.step or 0)
                by_step.setdefault(step, []).append(s)
            points = [
                CurvePoint(
                    step=step,
                    seeds=len(group),
                    accuracy=t_interval([g.accuracy for g in group], confidence),
                    backtracks=t_interval([g.backtracks for g in group], confidence),
                    tokens=t_interval([g.tokens for g in group], confidence),
                )
                for step, group in sorted(by_step.items())
            ]
            curves.setdefault(benchmark, {})[arm] = points
    return curves


def backtrack_correlations(scores: Sequence[CheckpointScore]) -> dict[str, dict[str, Correlation]]:
    """benchmark -> astro | direct | both -> Pearson r of backtracks and accuracy across the
    RL checkpoints of every seed."""
    result: dict[str, dict[str, Correlation]] = {}
    for benchmark in _benchmarks(scores):
        rl = [s for s in scores if s.benchmark == benchmark and s.stage == "rl"]
        groups = {arm: [s for s in rl if s.arm == arm] for arm in ARMS}
        groups["both"] = rl
        result[benchmark] = {
            name: pearson([s.backtracks for s in group], [s.accuracy for s in group])
            for name, group in groups.items()
        }
    return result


def mean_series(series: Sequence[tuple[Sequence[float], Sequence[float]]]) -> list[list[float]]:
    """[step, mean value, seeds] per step over several (steps, values) series (train logs)."""
    by_step: dict[float, list[float]] = {}
    for steps, values in series:
        for step, value in zip(steps, values, strict=True):
            by_step.setdefault(step, []).append(value)
    return [[step, math.fsum(v) / len(v), float(len(v))] for step, v in sorted(by_step.items())]


@dataclass
class ExperimentResult:
    """Everything the report shows; `to_dict` is report.json."""

    name: str
    seeds: list[int]
    confidence: float
    table: list[StageRow]
    curves: dict[str, dict[str, list[CurvePoint]]]
    correlations: dict[str, dict[str, Correlation]]
    train_curves: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    scores: list[CheckpointScore] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    # "<arm> <stage>" -> where that checkpoint goes back (astro_core.experiments.behaviour)
    behaviour: dict[str, dict[str, Any]] = field(default_factory=dict)
    # what the ASTRO traces teach: "<verdict> <context>" -> reflections (every seed)
    trace_verdicts: dict[str, int] = field(default_factory=dict)

    def rl_ratio(self, benchmark: str | None = None) -> float | None:
        """Mean ASTRO-RL accuracy / mean Direct-RL accuracy (None when Direct scores 0)."""
        rows = [r for r in self.table if r.stage == "rl"]
        if benchmark is not None:
            rows = [r for r in rows if r.benchmark == benchmark]
        if not rows or rows[0].direct.mean == 0:
            return None
        return rows[0].astro.mean / rows[0].direct.mean

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seeds": self.seeds,
            "confidence": self.confidence,
            "table": [asdict(row) for row in self.table],
            "curves": {
                b: {arm: [asdict(p) for p in points] for arm, points in arms.items()}
                for b, arms in self.curves.items()
            },
            "correlations": {
                b: {name: asdict(c) for name, c in groups.items()}
                for b, groups in self.correlations.items()
            },
            "train_curves": self.train_curves,
            "rl_ratio": self.rl_ratio(),
            "scores": [asdict(s) for s in self.scores],
            "behaviour": self.behaviour,
            "trace_verdicts": self.trace_verdicts,
            "meta": self.meta,
        }


def analyse(
    name: str,
    scores: Sequence[CheckpointScore],
    confidence: float = 0.95,
    train_curves: dict[str, dict[str, list[list[float]]]] | None = None,
    meta: dict[str, Any] | None = None,
) -> ExperimentResult:
    """The whole analysis of an experiment's checkpoint scores."""
    return ExperimentResult(
        name=name,
        seeds=sorted({s.seed for s in scores}),
        confidence=confidence,
        table=accuracy_table(scores, confidence),
        curves=rl_curves(scores, confidence),
        correlations=backtrack_correlations(scores),
        train_curves=train_curves or {},
        scores=list(scores),
        meta=meta or {},
    )


def _benchmarks(scores: Iterable[CheckpointScore]) -> list[str]:
    return list(dict.fromkeys(s.benchmark for s in scores))


# --- Markdown -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_interval(interval: Interval, signed: bool = False) -> str:
    """`41.2 [35.0, 47.4]` in percentage points (`+3.1 [...]` when signed)."""
    mean = f"{100 * interval.mean:+.1f}" if signed else _pct(interval.mean)
    if interval.low is None or interval.high is None:
        return mean
    return f"{mean} [{_pct(interval.low)}, {_pct(interval.high)}]"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _format_correlation(c: Correlation) -> str:
    if c.r is None or c.p is None:
        return f"undefined ({c.reason})"
    return f"r = {c.r:+.3f}, p = {c.p:.3g} (n = {c.n})"


def render_markdown(result: ExperimentResult, plots: Mapping[str, str] | None = None) -> str:
    """report.md: the table, the difference, the curves and the correlation."""
    level = f"{100 * result.confidence:.0f}%"
    lines = [
        f"# ASTRO vs Direct: {result.name}",
        "",
        f"Seeds: {', '.join(map(str, result.seeds))}. Accuracy is pass@1 (avg@n) on held-out "
        f"problems, in %, the mean over seeds with its {level} t interval; ASTRO - Direct is "
        "paired by seed.",
        "",
        "| benchmark | stage | ASTRO | Direct | ASTRO - Direct | seeds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result.table:
        difference = "-" if row.stage == "base" else format_interval(row.difference, signed=True)
        lines.append(
            f"| {row.benchmark} | {row.stage} | {format_interval(row.astro)} | "
            f"{format_interval(row.direct)} | {difference} | {len(row.seeds)} |"
        )
    ratio = result.rl_ratio()
    lines += ["", f"ASTRO-RL / Direct-RL accuracy: {'-' if ratio is None else f'{ratio:.3f}'}", ""]
    lines += ["## Backtracks vs accuracy across RL checkpoints", ""]
    for benchmark, groups in result.correlations.items():
        for group, c in groups.items():
            lines.append(f"- {benchmark}, {group}: {_format_correlation(c)}")
    lines += ["", "## Over RL steps (step 0: the SFT checkpoint; means over seeds)", ""]
    for benchmark, arms in result.curves.items():
        lines += [
            f"### {benchmark}",
            "",
            "| arm | step | seeds | accuracy % | backtracks / response | tokens / response |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for arm, points in arms.items():
            for p in points:
                lines.append(
                    f"| {arm} | {p.step} | {p.seeds} | {_pct(p.accuracy.mean)} | "
                    f"{p.backtracks.mean:.2f} | {p.tokens.mean:.1f} |"
                )
        lines.append("")
    if result.behaviour:
        lines += [
            "## Where the models go back (held-out samples, every seed)",
            "",
            "| checkpoint | responses | wrong attempts | back after wrong | right attempts | "
            "back after right | first wrong, recovered |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, b in result.behaviour.items():
            lines.append(
                f"| {name} | {b['responses']} | {b['wrong_attempts']} | "
                f"{_share(b['back_after_wrong'])} | {b['right_attempts']} | "
                f"{_share(b['back_after_right'])} | {b['recovered']} / {b['first_wrong']} |"
            )
        lines.append("")
    if result.trace_verdicts:
        lines += [
            "## What the ASTRO traces teach (reflections in the SFT data, every seed)",
            "",
            "A reflection's verdict against the attempt before it: back = not sure and a "
            "backtrack, ok = seems correct; P = the product the attempt states.",
            "",
            "| verdict and attempt | reflections |",
            "| --- | --- |",
        ]
        lines += [f"| {key} | {count} |" for key, count in result.trace_verdicts.items()]
        lines.append("")
    if result.train_curves:
        lines += ["## GRPO training log (means over seeds)", ""]
        for metric, logged in result.train_curves.items():
            for arm, rows in logged.items():
                if rows:
                    first, last = rows[0], rows[-1]
                    lines.append(
                        f"- {metric}, {arm}: step {first[0]:.0f} {first[1]:.3g} -> "
                        f"step {last[0]:.0f} {last[1]:.3g}"
                    )
        lines.append("")
    for title, path in (plots or {}).items():
        lines += [f"![{title}]({path})", ""]
    return "\n".join(lines)
