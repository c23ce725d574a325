"""Stage runners: what each kind of stage does, in terms of the coordinator's own parts.

    search          a search job in the coordinator's JobStore (any replica's SearchWorker
                    searches it); the trees are exported to search/trees.jsonl
    clone           astro_core.cloning over those trees (self-evaluation votes through the
                    generator); clone/traces.jsonl (+ direct_traces.jsonl for the control)
    sft, grpo       a trainer job through the TrainerBackend (services/coordinator/runs/
                    training.py)
    select_prompts  astro_core.training.select_prompts through the generator and verifier
    eval            astro_core.evaluation for each checkpoint, loaded into the generator
    report          astro_core.analysis.report.build_report over the run's files

Each returns a StageResult; the driver records it and the file digests. A runner that is
started again (a resume) finds its earlier work: the search by its idempotency key, the
trainer from its output directory, eval from the samples on disk.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from astro_core.pipeline.sections import parse_section
from astro_core.problems import load_problems
from astro_core.protocols import Generator, Verifier
from astro_core.trees import SearchTree, read_trees, write_trees
from services.coordinator.jobs import JobStore
from services.coordinator.runs.context import (
    StageCancelled,
    StageContext,
    StageFailed,
    StageResult,
    write_atomic,
)
from services.coordinator.settings import CoordinatorSettings

POLL_SECONDS = 0.5


@dataclass
class StageServices:
    """The parts of the coordinator stages use."""

    jobs: JobStore
    settings: CoordinatorSettings
    generator: Generator | None = None
    verifier: Verifier | None = None
    template: Callable[[], Any] | None = None
    # Make the generator serve a model (a ModelRef as a dict); also tells the search worker.
    use_model: Callable[[dict[str, Any]], None] | None = None
    # the trainer backend by name ("" = the coordinator's), the checkpoint registry, Redis
    trainer: Callable[[str], Any] | None = None
    registry: Any = None
    redis_url: str = ""

    def policy(self, ctx: StageContext, ref: str) -> tuple[Generator, Any]:
        """The generator serving `ref` (a path or NAME:VERSION / NAME@ALIAS) and its chat
        template."""
        if self.generator is None or self.template is None:
            raise StageFailed("this coordinator has no generator (settings.worker is off)")
        if self.use_model is not None:
            self.use_model(model_ref(ref))
        ctx.check()
        return self.generator, self.template()


def model_ref(ref: str) -> dict[str, Any]:
    """A model text (path, NAME:VERSION, NAME@ALIAS) as a ModelRef dict."""
    from astro_core.pipeline.spec import parse_model_text

    return parse_model_text(ref).as_dict()


def stage_config(ctx: StageContext, settings: CoordinatorSettings) -> BaseModel:
    """The stage's config, parsed from the spec exactly as StartRun validated it."""
    config, _ = parse_section(
        ctx.stage.kind, ctx.spec.config.get(ctx.stage.kind), settings.default_preset
    )
    return config


# ---- search ------------------------------------------------------------------------------


def run_search(ctx: StageContext, svc: StageServices) -> StageResult:
    from astro_core.search.config import SearchConfig

    config = stage_config(ctx, svc.settings)
    assert isinstance(config, SearchConfig)
    section = ctx.spec.config.get("search") or {}
    preset = str(section.get("preset") or svc.settings.default_preset)
    problems = load_problems(ctx.input_path("problems"))
    # The idempotency key finds the search of an earlier attempt, which goes on from the
    # trees already in Redis.
    sid, _ = svc.jobs.create(
        problems,
        config,
        preset,
        ctx.spec.base_model.as_dict(),
        client_request_id=f"run-{ctx.run_id}-search",
    )
    ctx.save_handle({"search_id": sid})
    while True:
        try:
            ctx.check()
        except StageCancelled as exc:
            svc.jobs.end(sid, "cancelled", "run cancelled")
            raise StageCancelled(f"search {sid} {svc.jobs.state(sid)}") from exc
        status = svc.jobs.status(sid)
        metrics = {"nodes": status.nodes, "solved_fraction": status.solved_fraction}
        ctx.report(status.problems_done, status.problems_total, metrics)
        if status.state == "succeeded":
            break
        if status.state != "running":
            raise StageFailed(f"search {sid} {status.state}: {status.message}")
        ctx.wake.wait(POLL_SECONDS)
    trees = []
    for index in range(status.problems_total):
        tree = svc.jobs.tree(sid, index)
        if tree is None:
            raise StageFailed(f"search {sid} has no tree for problem {index}")
        trees.append(tree)
    path = write_atomic(ctx.stage_dir / "trees.jsonl", lambda tmp: write_trees(tmp, trees))
    return StageResult({"trees": str(path), "search_id": sid}, tree_metrics(trees))


def tree_metrics(trees: list[SearchTree]) -> dict[str, float]:
    """Headline figures of a search: trees with a correct terminal, with correct and
    incorrect ones (what cloning needs), nodes (terminals as cloning counts them)."""
    from astro_core.cloning.linearize import terminal_pools

    pools = [terminal_pools(tree) for tree in trees]
    correct = sum(1 for p in pools if p.correct)
    return {
        "trees": float(len(trees)),
        "nodes": float(sum(len(t.nodes) for t in trees)),
        "trees_with_correct": float(correct),
        "trees_with_incorrect": float(sum(1 for p in pools if p.wrong)),
        "trees_with_correct_and_incorrect": float(sum(1 for p in pools if p.correct and p.wrong)),
        "solved_fraction": correct / len(trees) if trees else 0.0,
    }


# ---- clone -------------------------------------------------------------------------------


def run_clone(ctx: StageContext, svc: StageServices) -> StageResult:
    from astro_core.cloning import CloningConfig, clone_trees
    from astro_core.cloning.dataset import summary_path, write_summary, write_traces

    config = stage_config(ctx, svc.settings)
    assert isinstance(config, CloningConfig)
    try:
        trees = list(read_trees(ctx.input_path("trees")))
    except ValueError as exc:
        raise StageFailed(str(exc)) from exc
    generator = template = None
    if config.self_eval or config.rewrite == "llm":
        generator, template = svc.policy(ctx, ctx.spec.base_model.describe())
    styles = ["astro", "direct"] if ctx.spec.direct_control else ["astro"]
    total = len(trees) * len(styles)
    done = 0

    def on_tree(_tree: SearchTree, _count: int) -> None:
        nonlocal done
        done += 1
        ctx.report(done, total)
        ctx.check()  # a cancel stops between trees

    artifacts: dict[str, str] = {}
    metrics: dict[str, float] = {}
    for style in styles:
        result = clone_trees(
            trees,
            config,
            style="direct" if style == "direct" else "astro",
            generator=generator,
            template=template,
            on_tree=on_tree,
        )
        kind = "traces" if style == "astro" else "direct_traces"
        path = ctx.stage_dir / f"{kind}.jsonl"
        write_atomic(summary_path(path), partial(write_summary, summary=result.summary))
        write_atomic(path, partial(write_traces, records=result.records))
        artifacts[kind] = str(path)
        artifacts[f"{kind}_summary"] = str(summary_path(path))
        backtracks = [r.backtracks for r in result.records]
        prefix = "" if style == "astro" else "direct_"
        metrics[f"{prefix}traces"] = float(len(result.records))
        metrics[f"{prefix}trees_traced"] = float(result.summary["trees_traced"])
        metrics[f"{prefix}backtracks_per_trace"] = (
            statistics.fmean(backtracks) if backtracks else 0.0
        )
    metrics["trees"] = float(len(trees))
    if not metrics["traces"] and needs_traces(ctx):
        raise StageFailed(
            f"no traces: none of the {len(trees)} trees has a correct terminal that passed "
            "self-evaluation (search more, or start from a stronger model)"
        )
    return StageResult(artifacts, metrics)


def needs_traces(ctx: StageContext) -> bool:
    """Whether a later stage of the run reads this clone's traces."""
    return not ctx.spec.stages or "sft" in ctx.spec.stages


# ---- dispatch ----------------------------------------------------------------------------

Runner = Callable[[StageContext, StageServices], StageResult]


def runners() -> dict[str, Runner]:
    """Runner by stage kind (the training, eval and report runners import their packages
    lazily, so a build without them can still search and clone)."""
    from services.coordinator.runs import evaluation, training

    return {
        "search": run_search,
        "clone": run_clone,
        "sft": training.run_training,
        "grpo": training.run_training,
        "select_prompts": training.run_select_prompts,
        "eval": evaluation.run_eval,
        "report": evaluation.run_report,
    }


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
