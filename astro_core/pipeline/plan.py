"""The stages a RunSpec runs, in order, each naming the artifacts it reads.

    search          problems               -> search.trees
    clone           search.trees           -> clone.traces (+ clone.direct_traces)
    sft             clone.traces, base     -> sft.checkpoint
    sft_direct      clone.direct_traces    -> sft_direct.checkpoint        (direct_control)
    select_prompts  rl prompts, policy     -> select_prompts.prompts
    grpo            prompts, sft.checkpoint -> grpo.checkpoint (+ grpo.checkpoints)
    grpo_direct     prompts, sft_direct.checkpoint -> grpo_direct.checkpoint (direct_control)
    eval            each checkpoint named   -> eval.<label> (a directory per checkpoint)
    report          eval dirs, grpo log, trees, traces -> report.html

An input is `<stage>.<kind>` (an earlier stage's artifact) or `input.<kind>` (the run's own
inputs, written into its output directory at the start: input.problems, input.rl_prompts,
input.eval.<name>). A stage left out of `stages` is skipped; what a later stage would have
read from it then comes from the inputs (GRPO on the RL prompts without selection, a
policy from the base model without SFT), or the spec is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from astro_core.pipeline.spec import EVAL_CHECKPOINTS, PIPELINE_STAGES, RunSpec, RunSpecError

# Every stage name a run can have, in order.
STAGE_ORDER = (
    "search",
    "clone",
    "sft",
    "sft_direct",
    "select_prompts",
    "grpo",
    "grpo_direct",
    "eval",
    "report",
)
BASE = "input.base_model"


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a run: its name, what it does (kind), its arm and what it reads."""

    name: str
    kind: str  # search, clone, sft, select_prompts, grpo, eval, report
    arm: str = ""  # "" or "direct"
    inputs: dict[str, str] = field(default_factory=dict)
    planned: bool = True  # False: left out of `stages`, shown as skipped


def chosen_stages(spec: RunSpec) -> list[str]:
    """The spec's stages (all when empty), checked: RunSpecError for an unknown or repeated
    name."""
    if not spec.stages:
        return list(PIPELINE_STAGES)
    seen: set[str] = set()
    for index, name in enumerate(spec.stages):
        if name not in PIPELINE_STAGES:
            raise RunSpecError(
                f"stages[{index}]: unknown stage {name!r}; choose from {', '.join(PIPELINE_STAGES)}"
            )
        if name in seen:
            raise RunSpecError(f"stages[{index}]: {name} is named twice")
        seen.add(name)
    return [s for s in PIPELINE_STAGES if s in seen]


def default_eval_checkpoints(spec: RunSpec, chosen: list[str]) -> list[str]:
    labels = ["base"]
    for stage in ("sft", "grpo"):
        if stage in chosen:
            labels.append(stage)
            if spec.direct_control:
                labels.append(f"direct_{stage}")
    return labels


def eval_checkpoints(spec: RunSpec, chosen: list[str]) -> list[str]:
    """What eval evaluates: the spec's eval_checkpoints, each checked against the stages that
    make it, or the default (base and each trained arm's last checkpoint)."""
    if not spec.eval_checkpoints:
        return default_eval_checkpoints(spec, chosen)
    seen: set[str] = set()
    for index, label in enumerate(spec.eval_checkpoints):
        where = f"eval_checkpoints[{index}]"
        stage = label.split(":")[0].removeprefix("direct_")
        if label not in EVAL_CHECKPOINTS:
            raise RunSpecError(
                f"{where}: unknown checkpoint {label!r}; choose from {', '.join(EVAL_CHECKPOINTS)}"
            )
        if label in seen:
            raise RunSpecError(f"{where}: {label} is named twice")
        seen.add(label)
        if label != "base" and stage not in chosen:
            raise RunSpecError(f"{where}: {label} needs the {stage} stage in stages")
        if label.startswith("direct_") and not spec.direct_control:
            raise RunSpecError(f"{where}: {label} needs direct_control: true")
    return list(spec.eval_checkpoints)


def checkpoint_source(label: str) -> str:
    """Where an eval checkpoint label comes from: `input.base_model` or `<stage>.checkpoint`
    (`grpo:all`: `grpo.checkpoints`; `direct_grpo:all`: `grpo_direct.checkpoints`)."""
    if label == "base":
        return BASE
    stage, _, every = label.partition(":")
    kind = "checkpoints" if every == "all" else "checkpoint"
    if stage.startswith("direct_"):
        return f"{stage.removeprefix('direct_')}_direct.{kind}"
    return f"{stage}.{kind}"


def plan(spec: RunSpec) -> list[PlannedStage]:
    """Every stage of the run in order (skipped ones too); RunSpecError when a chosen stage
    has nothing to read (clone without search, report without eval)."""
    chosen = chosen_stages(spec)
    direct = spec.direct_control

    def needs(stage: str, what: str, by: str) -> None:
        if stage not in chosen:
            raise RunSpecError(f"stages: {by} reads {what}; add {stage}")

    stages: list[PlannedStage] = []

    def add(name: str, kind: str, arm: str = "", **inputs: str) -> None:
        stages.append(PlannedStage(name, kind, arm, dict(inputs), kind in chosen))

    add("search", "search", problems="input.problems")
    if "clone" in chosen:
        needs("search", "the search trees", "clone")
    add("clone", "clone", trees="search.trees")
    for arm, suffix in (("", ""), ("direct", "_direct")):
        if arm and not direct:
            continue
        if "sft" in chosen:
            needs("clone", "the traces", "sft")
        traces = "clone.direct_traces" if arm else "clone.traces"
        add(f"sft{suffix}", "sft", arm, traces=traces, model=BASE)
    policy = "sft.checkpoint" if "sft" in chosen else BASE
    add("select_prompts", "select_prompts", prompts="input.rl_prompts", model=policy)
    prompts = "select_prompts.prompts" if "select_prompts" in chosen else "input.rl_prompts"
    for arm, suffix in (("", ""), ("direct", "_direct")):
        if arm and not direct:
            continue
        start = f"sft{suffix}.checkpoint" if "sft" in chosen else BASE
        add(f"grpo{suffix}", "grpo", arm, prompts=prompts, model=start)
    labels = eval_checkpoints(spec, chosen) if "eval" in chosen else []
    add("eval", "eval", **{f"checkpoint.{label}": checkpoint_source(label) for label in labels})
    if "report" in chosen:
        needs("eval", "the evaluations", "report")
    report_inputs = {"evals": "eval.dirs"}
    if "search" in chosen:
        report_inputs["trees"] = "search.trees"
    if "clone" in chosen:
        report_inputs["traces"] = "clone.traces"
    if "grpo" in chosen:
        report_inputs["train_log"] = "grpo.train_log"
    add("report", "report", **report_inputs)
    return stages
