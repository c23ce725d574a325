"""The ASTRO-vs-Direct experiment: one run per seed through the Runs service, then the report.

For each seed: the starting model (the configured one, or a family model warm-started with the
seed), then ONE RunSpec with `direct_control: true`, so both arms come from the same search
trees and train with the same sections and seed; evaluation covers the base model, both SFT
checkpoints and every saved RL checkpoint of each arm (`grpo:all`, `direct_grpo:all`) on the
same held-out problems. The runs are started through a `RunPipeline` callable (the CLI's is a
gRPC client of the coordinator), so this module never talks to a service itself.

Layout of the output folder:

    <out>/config.yaml            the ExperimentConfig as run
    <out>/seed-<s>/model/        the warm-started model (when no base_model is given;
                                 <out>/warm-start/ when one is shared by every seed)
    <out>/seed-<s>/run.json      the seed's run: id, state, output folder, artifacts
    <out>/report.md, report.json, *.png
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from astro_core.experiments.config import SEEDED_SECTIONS, ExperimentConfig
from astro_core.pipeline.spec import RunSpec

EVAL_CHECKPOINTS = ["base", "sft", "grpo:all", "direct_sft", "direct_grpo:all"]
ARM_STAGES = {"astro": "grpo", "direct": "grpo_direct"}


class ExperimentFailed(RuntimeError):
    """A seed's run did not succeed; the message names the seed and the run's reason."""


@dataclass
class RunOutcome:
    """What a finished run left: its state, folder and artifacts (`stage.kind` -> value)."""

    run_id: str
    state: str
    message: str = ""
    output_dir: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)


RunPipeline = Callable[[RunSpec, float], RunOutcome]  # (spec, timeout seconds) -> outcome
WarmStart = Callable[[Path, int], Path]  # (folder, seed) -> model directory
Progress = Callable[[str], None]


def problems_path(config: ExperimentConfig, seed: int) -> str:
    """The problems a seed searches: the configured set, or the family's train split."""
    if config.problems_path:
        return config.problems_path
    return f"synth:{config.family}?n={config.train_problems}&seed={seed}&split=train"


def eval_benchmarks(config: ExperimentConfig) -> list[str]:
    """The held-out sets, the same for every seed."""
    if config.eval_benchmarks:
        return list(config.eval_benchmarks)
    size = f"n={config.heldout_problems}&" if config.heldout_problems else ""
    return [f"synth:{config.family}?{size}seed=0&split=heldout"]


def run_spec(config: ExperimentConfig, seed: int, base_model: str) -> RunSpec:
    """One seed's RunSpec: both arms, every RL checkpoint evaluated, the seed in each section."""
    sections: dict[str, Any] = {k: dict(v or {}) for k, v in config.sections.items()}
    for name in SEEDED_SECTIONS:
        if name in config.stages:
            sections.setdefault(name, {})["seed"] = seed
    return RunSpec.model_validate(
        {
            "name": f"{config.name} seed {seed}",
            "base_model": {"path": base_model},
            "problems_path": problems_path(config, seed),
            "eval_benchmarks": eval_benchmarks(config),
            "direct_control": True,
            "eval_checkpoints": EVAL_CHECKPOINTS,
            "stages": list(config.stages),
            "config": sections,
            "trainer_backend": config.trainer_backend,
        }
    )


@dataclass
class SeedRun:
    seed: int
    base_model: str
    spec: dict[str, Any]
    outcome: RunOutcome
    seconds: float

    @property
    def eval_dirs(self) -> list[Path]:
        return [Path(p) for p in self.outcome.artifacts.get("eval.dirs", "").split(",") if p]

    def train_log(self, arm: str) -> Path | None:
        value = self.outcome.artifacts.get(f"{ARM_STAGES[arm]}.train_log")
        return Path(value) if value else None


def run_seed(
    config: ExperimentConfig,
    seed: int,
    out: Path,
    run: RunPipeline,
    warm_start: WarmStart | None,
    progress: Progress,
) -> SeedRun:
    """Warm-start (unless a base model is given) and run one seed; ExperimentFailed unless
    the run succeeds."""
    folder = out / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if config.base_model:
        model = config.base_model
    else:
        if warm_start is None:
            raise ExperimentFailed("no base_model is configured and no warm start is available")
        first = config.seeds[0]
        own = config.warm_start_per_seed or seed == first
        where = folder / "model" if config.warm_start_per_seed else out / "warm-start"
        if own:
            progress(f"seed {seed}: warm-starting a {config.family} model")
        # a shared warm start is made once (warm_start returns a finished model as it is)
        model = str(warm_start(where, seed if config.warm_start_per_seed else first))
    spec = run_spec(config, seed, model)
    progress(f"seed {seed}: run started ({', '.join(config.stages)}, both arms)")
    outcome = run(spec, config.run_timeout_seconds)
    result = SeedRun(seed, model, spec.model_dump(), outcome, time.monotonic() - started)
    (folder / "run.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    if outcome.state != "succeeded":
        raise ExperimentFailed(
            f"seed {seed}: run {outcome.run_id} {outcome.state}: {outcome.message}"
        )
    progress(f"seed {seed}: run {outcome.run_id} succeeded in {result.seconds:.0f}s")
    return result


def run_experiment(
    config: ExperimentConfig,
    out: Path,
    run: RunPipeline,
    warm_start: WarmStart | None = None,
    progress: Progress | None = None,
    meta: dict[str, Any] | None = None,
) -> Any:
    """Every seed, then the report; returns the ExperimentResult."""
    from astro_core.experiments.report import collect, write_report

    say = progress or (lambda _: None)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    started = time.monotonic()
    seeds = [run_seed(config, seed, out, run, warm_start, say) for seed in config.seeds]
    info = {
        **(meta or {}),
        "wall_seconds": round(time.monotonic() - started, 1),
        "seed_seconds": {str(s.seed): round(s.seconds, 1) for s in seeds},
        "runs": {str(s.seed): s.outcome.run_id for s in seeds},
        "problems": {str(s.seed): problems_path(config, s.seed) for s in seeds},
        "eval_benchmarks": eval_benchmarks(config),
    }
    result = collect(config.name, seeds, info)
    write_report(result, out)
    say(f"report: {out / 'report.md'}")
    return result


def load_seed_runs(out: Path) -> list[SeedRun]:
    """The seeds an experiment in `out` finished (their seed-<s>/run.json), by seed."""
    runs = []
    for path in sorted(out.glob("seed-*/run.json")):
        data = json.loads(path.read_text())
        if data["outcome"]["state"] == "succeeded":
            outcome = RunOutcome(**data["outcome"])
            runs.append(
                SeedRun(data["seed"], data["base_model"], data["spec"], outcome, data["seconds"])
            )
    return sorted(runs, key=lambda run: run.seed)


def report_again(out: Path, name: str, meta: dict[str, Any] | None = None) -> Any:
    """The report of the seeds already run in `out` (after a change to the analysis, or of
    the seeds that finished when a later one failed)."""
    from astro_core.experiments.report import collect, write_report

    seeds = load_seed_runs(out)
    if not seeds:
        raise ExperimentFailed(f"no finished seed in {out} (seed-*/run.json)")
    previous = out / "report.json"  # keeps what the first report measured (wall time, runs)
    kept = json.loads(previous.read_text()).get("meta", {}) if previous.is_file() else {}
    result = collect(name, seeds, {**kept, **(meta or {})})
    write_report(result, out)
    return result
