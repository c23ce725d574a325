"""The eval and report stages of a run.

eval: every checkpoint the plan names (base, sft, grpo, each grpo checkpoint for `grpo:all`,
the direct arms, each direct RL checkpoint for `direct_grpo:all`) is loaded into the generator
service (LoadModel) and evaluated on every eval set with astro_core.evaluation, into
eval/<label>/ (samples.jsonl + summary.json). The
generator does the heavy work, so the coordinator stays responsive, and evaluation resumes
from the samples on disk when the stage is started again.

report: astro_core.analysis.report.build_report over the eval directories, the GRPO train
log, the trees and the traces, into report/ (report.html, report.md, PNGs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astro_core.pipeline.plan import BASE
from astro_core.pipeline.stage_configs import ReportConfig
from services.coordinator.runs.context import StageContext, StageFailed, StageResult
from services.coordinator.runs.stages import StageServices, stage_config

# eval_checkpoints label -> the arm name evaluation reports use
ARMS = {
    "base": "base",
    "sft": "sft",
    "grpo": "rl",
    "direct_sft": "direct_sft",
    "direct_grpo": "direct_rl",
}


@dataclass(frozen=True)
class Checkpoint:
    label: str  # the directory name under eval/
    ref: str  # a path or NAME:VERSION
    arm: str
    step: int | None = None


def checkpoints(ctx: StageContext, svc: StageServices) -> list[Checkpoint]:
    """The checkpoints to evaluate, in the plan's order (`grpo:all` and `direct_grpo:all`
    expand to each saved RL checkpoint of their arm, oldest first)."""
    found = []
    for key, source in ctx.stage.inputs.items():
        if not key.startswith("checkpoint."):
            continue
        label = key.removeprefix("checkpoint.")
        if source == BASE:
            found.append(Checkpoint("base", ctx.spec.base_model.describe(), "base"))
            continue
        value = ctx.artifacts.get(source)
        if not value:
            raise StageFailed(f"input {source} was not recorded")
        if label.endswith(":all"):  # grpo:all, direct_grpo:all
            stage = label.removesuffix(":all")
            for ref in value.split(","):
                step = _step_of(svc, ref)
                found.append(Checkpoint(f"{stage}-step{step}", ref, ARMS[stage], step))
            continue
        arm = ARMS[label]
        found.append(
            Checkpoint(label, value, arm, _step_of(svc, value) if arm.endswith("rl") else None)
        )
    return found


def _step_of(svc: StageServices, ref: str) -> int:
    if svc.registry is None:
        return 0
    name, _, version = ref.partition(":")
    return int(svc.registry.get(name, version=int(version or 0)).step)


def run_eval(ctx: StageContext, svc: StageServices) -> StageResult:
    from astro_core.evaluation import EvalConfig, EvaluatedModel, evaluate

    config = stage_config(ctx, svc.settings)
    assert isinstance(config, EvalConfig)
    sets = {k.removeprefix("eval."): v for k, v in ctx.inputs.items() if k.startswith("eval.")}
    if not sets:
        raise StageFailed("the run has no eval sets")
    config = config.model_copy(update={"benchmarks": list(sets.values())})
    if svc.verifier is None:
        raise StageFailed("this coordinator has no verifier (settings.worker is off)")
    todo = checkpoints(ctx, svc)
    sizes = [_count_lines(Path(p)) for p in sets.values()]
    total = sum(min(n, config.limit or n) for n in sizes) * len(todo)
    artifacts: dict[str, str] = {}
    metrics: dict[str, float] = {}
    finished = 0
    for checkpoint in todo:
        generator, template = svc.policy(ctx, checkpoint.ref)
        out = ctx.stage_dir / checkpoint.label
        on_progress = _reporter(ctx, finished, total, checkpoint.label)
        try:
            summary = evaluate(
                list(sets.values()),
                generator,
                svc.verifier,
                config,
                out,
                template=template,
                model=EvaluatedModel(
                    label=checkpoint.label,
                    arm=checkpoint.arm,
                    step=checkpoint.step,
                    source=checkpoint.ref,
                ),
                progress=on_progress,
            )
        except ValueError as exc:
            raise StageFailed(f"evaluating {checkpoint.label} ({checkpoint.ref}): {exc}") from exc
        finished += sum(b.get("problems", 0) for b in summary["benchmarks"].values())
        artifacts[checkpoint.label] = str(out)
        for name, scores in summary["benchmarks"].items():
            metrics[f"{checkpoint.label}.{name}.accuracy"] = float(scores["accuracy"])
            metrics[f"{checkpoint.label}.{name}.backtracks"] = float(
                scores.get("mean_backtracks", 0.0)
            )
            # Where it goes back: the shares of wrong and right attempts (by the truth, and
            # by what the attempt's own check said) that a move back follows; a share with
            # no attempts behind it is left out.
            for rate, value in scores.get("where_it_goes_back", {}).items():
                if rate.startswith("back_after_") and value is not None:
                    metrics[f"{checkpoint.label}.{name}.{rate}"] = float(value)
    artifacts["dirs"] = ",".join(artifacts[c.label] for c in todo)
    return StageResult(artifacts, metrics)


def _reporter(ctx: StageContext, before: int, total: int, label: str) -> Callable[[Any], None]:
    """An evaluate() progress callback: problems done over all checkpoints; a cancelled run
    stops the evaluation between rounds."""
    done: dict[str, int] = {}

    def report(event: Any) -> None:
        done[event.benchmark] = event.problems_done
        ctx.report(before + sum(done.values()), total, message=label)
        ctx.check()

    return report


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def run_report(ctx: StageContext, svc: StageServices) -> StageResult:
    from astro_core.analysis.report import build_report

    config = stage_config(ctx, svc.settings)
    assert isinstance(config, ReportConfig)
    evals = [Path(p) for p in ctx.input_ref("evals").split(",") if p]
    optional = {}
    for kind in ("trees", "traces", "train_log"):
        if kind in ctx.stage.inputs and ctx.artifacts.get(ctx.stage.inputs[kind]):
            optional[kind] = ctx.input_path(kind)
    out = ctx.stage_dir
    ctx.report(0, 1)
    try:
        report = build_report(
            evals,
            out,
            train_logs=[optional["train_log"]] if "train_log" in optional else [],
            trees=optional.get("trees"),
            traces=optional.get("traces"),
            allow_mixed=config.allow_mixed,
            title=config.title if not ctx.spec.name else f"{config.title}: {ctx.spec.name}",
        )
    except ValueError as exc:
        raise StageFailed(str(exc)) from exc
    artifacts = {"html": str(report.html), "markdown": str(report.markdown)}
    figures = {"evaluations": float(len(evals)), "plots": float(len(report.plots))}
    return StageResult(artifacts, figures)
