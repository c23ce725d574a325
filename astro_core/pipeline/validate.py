"""Validate a RunSpec whole before anything runs: stages, data, model, every stage's config.

The checks that need the world (reading a dataset file under the coordinator's roots, asking
the registry about a model) go through the `RunWorld` seam, so this stays free of services.
Every error is a RunSpecError whose message starts with the field at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from astro_core.pipeline.plan import PlannedStage, plan
from astro_core.pipeline.sections import SECTIONS, parse_section
from astro_core.pipeline.spec import TRAINER_BACKENDS, ModelSpec, RunSpec, RunSpecError
from astro_core.problems import Problem
from astro_core.synthetic import is_synth_spec, parse_synth_spec

# Dataset names a problem set may use (files of the coordinator's benchmark folder).
NAMED_SETS = {
    "math500": "math500.jsonl",
    "amc23": "amc23.jsonl",
    "aime24": "aime24.jsonl",
    "math_train": "math_train.jsonl",
}


class WorldUnavailable(Exception):
    """A check could not be made now (the registry unreachable): not the spec's fault."""


class RunWorld(Protocol):
    """What validation asks the platform (the coordinator implements it)."""

    def read_problems(self, given: str) -> list[Problem]:
        """The problems of a dataset name (NAMED_SETS) or a JSONL path the coordinator may
        read; ValueError saying why not (the caller adds the field)."""
        ...

    def check_model(self, model: ModelSpec) -> None:
        """ValueError / LookupError when the model does not exist or cannot be used;
        WorldUnavailable when that cannot be told now."""
        ...

    def check_trainer_backend(self, name: str) -> None:
        """ValueError when training cannot run on that backend here."""
        ...


@dataclass
class ValidatedRun:
    """A spec that passed every check, with what it resolved to."""

    spec: RunSpec
    stages: list[PlannedStage]
    configs: dict[str, BaseModel] = field(default_factory=dict)  # section -> its config
    config_fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # as given + preset
    problems: list[Problem] = field(default_factory=list)
    rl_prompts: list[Problem] = field(default_factory=list)
    eval_sets: dict[str, list[Problem]] = field(default_factory=dict)  # label -> problems

    def chosen(self, kind: str) -> bool:
        return any(s.kind == kind and s.planned for s in self.stages)


def resolve_problem_set(given: str, where: str, world: RunWorld) -> list[Problem]:
    """The problems a `synth:...`, dataset name or path names; RunSpecError naming `where`."""
    try:
        problems = (
            parse_synth_spec(given).problems()
            if is_synth_spec(given)
            else world.read_problems(given)
        )
    except (ValueError, OSError) as exc:
        message = str(exc)
        if message.startswith("dataset_path: "):  # the coordinator's reader names its own field
            message = message.removeprefix("dataset_path: ")
        raise RunSpecError(f"{where}: {message}") from exc
    if not problems:
        raise RunSpecError(f"{where}: {given!r} holds no problems")
    return problems


def eval_label(given: str, taken: set[str]) -> str:
    """A short file-safe name for an eval set: the dataset name, the file's stem, or
    `synth-<family>-<split>-n<N>-s<seed>`; unique among `taken`."""
    if is_synth_spec(given):
        s = parse_synth_spec(given)
        base = f"synth-{s.family}-{s.split}-n{s.n}-s{s.seed}"
    else:
        base = given.rstrip("/").rsplit("/", 1)[-1].removesuffix(".jsonl").removesuffix(".json")
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "set"
    label, index = base, 2
    while label in taken:
        label, index = f"{base}-{index}", index + 1
    return label


def validate_spec(
    spec: RunSpec, world: RunWorld, default_search_preset: str = "paper"
) -> ValidatedRun:
    """Every check of a RunSpec at StartRun (RunSpecError naming the first field at fault)."""
    stages = plan(spec)
    run = ValidatedRun(spec, stages)
    if spec.trainer_backend not in TRAINER_BACKENDS:
        raise RunSpecError(
            f"trainer_backend: {spec.trainer_backend!r} is not local or kubernetes (or empty)"
        )
    for name in spec.config:
        if name not in SECTIONS:
            raise RunSpecError(
                f"config_yaml.{name}: unknown section; sections: {', '.join(SECTIONS)}"
            )
    needed = {s.kind for s in stages if s.planned} | set(spec.config)
    for name in SECTIONS:
        if name in needed:
            config, fields = parse_section(name, spec.config.get(name), default_search_preset)
            run.configs[name] = config
            run.config_fields[name] = fields
    model = spec.base_model
    if not (model.path or model.name):
        raise RunSpecError("base_model: give a path or a registered name")
    if model.path and (model.name or model.version or model.alias):
        # one would be silently ignored: the run would start from a model the user did not mean
        raise RunSpecError("base_model: give a path or a registered name, not both")
    try:
        world.check_model(model)
    except (ValueError, LookupError, OSError, RuntimeError) as exc:
        raise RunSpecError(f"base_model: {exc}") from exc
    if run.chosen("sft") or run.chosen("grpo"):
        try:
            world.check_trainer_backend(spec.trainer_backend)
        except (ValueError, RuntimeError) as exc:
            raise RunSpecError(f"trainer_backend: {exc}") from exc
    wants_rl = run.chosen("select_prompts") or run.chosen("grpo")
    if run.chosen("search") or (wants_rl and not spec.rl_prompts_path):
        if not spec.problems_path:
            raise RunSpecError("problems_path: is empty (the problems to search)")
        run.problems = resolve_problem_set(spec.problems_path, "problems_path", world)
    if wants_rl:
        run.rl_prompts = (
            resolve_problem_set(spec.rl_prompts_path, "rl_prompts_path", world)
            if spec.rl_prompts_path
            else run.problems
        )
    if run.chosen("eval"):
        if not spec.eval_benchmarks:
            raise RunSpecError("eval_benchmarks: name at least one (eval is in stages)")
        for index, given in enumerate(spec.eval_benchmarks):
            where = f"eval_benchmarks[{index}]"
            if not given:
                raise RunSpecError(f"{where}: is empty")
            problems = resolve_problem_set(given, where, world)
            run.eval_sets[eval_label(given, set(run.eval_sets))] = problems
    return run
