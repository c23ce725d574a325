"""Prompt selection by difficulty: keep the prompts the starting policy solves sometimes.

The paper trains GRPO on 8.7K "moderately difficult" prompts. A prompt the policy always or
never solves gives every completion of its group the same reward, hence no learning signal;
so each prompt is sampled n times with the starting policy and kept when its pass rate lies
in the open interval (pass_rate_low, pass_rate_high).

Every prompt's pass rate is appended to a record file as soon as it is known, so a stopped
selection resumes where it was; the kept prompts are then written from that record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from astro_core.problems import Problem, problem_from_row
from astro_core.prompts import SOLVE_INSTRUCTION, ChatTemplate
from astro_core.protocols import Generator, RewardMapping, Verifier, VerifyItem
from astro_core.training.data import DatasetError
from astro_core.training.rollouts import prompt_text


@dataclass(frozen=True)
class PromptRow:
    """A dataset line: its position, the parsed problem and the JSON object as written."""

    index: int
    problem: Problem
    row: dict[str, Any]


def read_prompt_rows(path: str | Path) -> list[PromptRow]:
    """Every line of a prompts JSONL (fields problem, answer); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"prompts file {path} does not exist")
    rows = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number + 1}: not valid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number + 1}: expected a JSON object")
            try:
                problem = problem_from_row(row, number, str(path))
            except ValueError as exc:
                raise DatasetError(str(exc)) from exc
            rows.append(PromptRow(number, problem, row))
    if not rows:
        raise DatasetError(f"prompts file {path} holds no prompts")
    return rows


class SelectPromptsConfig(BaseModel):
    """`astro train select-prompts`: which prompts, which policy, which pass rates to keep."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(..., min_length=1, description="Prompts JSONL (problem, answer).")
    output: str = Field(..., min_length=1, description="JSONL of the kept prompts.")
    record: str = Field(
        "",
        description="JSONL of every prompt's pass rate, appended as measured (a stopped "
        "selection resumes from it); default: OUTPUT.rates.jsonl.",
    )
    model: str = Field(
        "",
        description="The starting policy: a model directory or NAME:VERSION / NAME@ALIAS. "
        "With generator_address the generator must serve it; without, it runs in process.",
    )
    generator_address: str = Field("", description="Generator service HOST:PORT.")
    verifier_address: str = Field(
        "", description="Verifier service HOST:PORT; empty: a local worker pool."
    )
    registry_address: str = Field(
        "", description="Registry HOST:PORT or directory, for registered models."
    )
    num_samples: int = Field(8, ge=1, le=1024, description="Completions per prompt (n).")
    pass_rate_low: float = Field(
        0.0, ge=0, le=1, description="Keep prompts whose pass rate is above this..."
    )
    pass_rate_high: float = Field(
        1.0, ge=0, le=1, description="...and below this (an open interval)."
    )
    max_completion_length: int = Field(8192, ge=1, description="Token budget per completion.")
    temperature: float = Field(1.0, ge=0, le=10, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, ge=0, description="Sampling seed (per batch of prompts).")
    prompts_per_call: int = Field(
        16, ge=1, le=4096, description="Prompts sent to the generator in one call."
    )
    instruction: str = Field(SOLVE_INSTRUCTION, description="Appended to each problem.")

    @model_validator(mode="after")
    def _interval(self) -> SelectPromptsConfig:
        Interval(self.pass_rate_low, self.pass_rate_high)
        return self

    @property
    def record_path(self) -> Path:
        return Path(self.record) if self.record else Path(self.output + ".rates.jsonl")


@dataclass(frozen=True)
class Interval:
    """An open interval of pass rates: low < rate < high."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(
                f"the pass-rate interval ({self.low}, {self.high}) must satisfy "
                "0 <= low < high <= 1"
            )

    def __contains__(self, rate: float) -> bool:
        return self.low < rate < self.high


@dataclass(frozen=True)
class SelectionSummary:
    total: int
    kept: int
    too_easy: int  # pass rate >= high
    too_hard: int  # pass rate <= low
    resumed: int  # prompts whose pass rate came from the record of an earlier run


def _read_record(
    path: Path, rows: Sequence[PromptRow], num_samples: int
) -> dict[int, dict[str, Any]]:
    """Pass rates already measured (by line index); refuses a record of another dataset."""
    if not path.exists():
        return {}
    by_index = {r.index: r for r in rows}
    done: dict[int, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            try:
                entry = json.loads(line)
                index, problem = int(entry["index"]), entry["problem"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by a crash: that prompt is measured again
            source = by_index.get(index)
            if source is None or source.problem.problem != problem:
                raise ValueError(
                    f"{path}:{number + 1} records another dataset (line {index + 1} differs); "
                    "remove it or choose another output"
                )
            if entry.get("num_samples") == num_samples:  # else measured again with n now
                done[index] = entry
    return done


def select_prompts(
    generator: Generator,
    verifier: Verifier,
    rows: Sequence[PromptRow],
    template: ChatTemplate,
    *,
    output: str | Path,
    record: str | Path,
    interval: Interval,
    num_samples: int,
    max_completion_length: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    prompts_per_call: int = 16,
    instruction: str = SOLVE_INSTRUCTION,
    progress: Callable[[int, int], None] | None = None,
) -> SelectionSummary:
    """Measure each prompt's pass rate over num_samples completions (appended to `record`),
    then write the rows whose rate lies in `interval` to `output` with their pass rates."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    record, output = Path(record), Path(output)
    done = _read_record(record, rows, num_samples)
    resumed = len(done)
    todo = [r for r in rows if r.index not in done]
    record.parent.mkdir(parents=True, exist_ok=True)
    with record.open("a", encoding="utf-8") as log:
        for start in range(0, len(todo), prompts_per_call):
            chunk = todo[start : start + prompts_per_call]
            completions = generator.generate(
                [prompt_text(r.problem, template, instruction) for r in chunk],
                n=num_samples,
                max_tokens=max_completion_length,
                temperature=temperature,
                top_p=top_p,
                # a seed per chunk position, so a resumed run draws what it would have drawn
                seed=None if seed is None else seed + chunk[0].index,
            )
            if len(completions) != len(chunk) * num_samples:
                raise RuntimeError(
                    f"the generator returned {len(completions)} completions for "
                    f"{len(chunk)} prompts x {num_samples}"
                )
            items = [
                VerifyItem(
                    c.text,
                    chunk[i // num_samples].problem.answer,
                    chunk[i // num_samples].problem.problem,
                )
                for i, c in enumerate(completions)
            ]
            verdicts = verifier.verify_batch(items, RewardMapping())
            for k, row in enumerate(chunk):
                group = verdicts[k * num_samples : (k + 1) * num_samples]
                correct = sum(v.correct for v in group)
                entry = {
                    "index": row.index,
                    "problem": row.problem.problem,
                    "num_correct": correct,
                    "num_samples": num_samples,
                    "pass_rate": correct / num_samples,
                }
                done[row.index] = entry
                log.write(json.dumps(entry) + "\n")
            log.flush()
            if progress is not None:
                progress(len(done), len(rows))
    return _write_kept(rows, done, interval, output, resumed)


def _write_kept(
    rows: Sequence[PromptRow],
    done: dict[int, dict[str, Any]],
    interval: Interval,
    output: Path,
    resumed: int,
) -> SelectionSummary:
    kept = too_easy = too_hard = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        for row in rows:
            entry = done[row.index]
            rate = float(entry["pass_rate"])
            if rate in interval:
                kept += 1
                line = dict(row.row)
                line.update(
                    pass_rate=rate,
                    num_correct=entry["num_correct"],
                    num_samples=entry["num_samples"],
                )
                out.write(json.dumps(line) + "\n")
            elif rate >= interval.high:
                too_easy += 1
            else:
                too_hard += 1
    partial.replace(output)  # readers never see a half-written selection
    return SelectionSummary(len(rows), kept, too_easy, too_hard, resumed)


def expected_version(model: str, store: Any) -> str:
    """The version string a generator serving `model` reports (registry ref or dir digest)."""
    from astro_core.checkpoints import parse_ref
    from astro_core.engines.base import directory_version
    from astro_core.training.models import ModelLoadError, is_registry_ref

    if not is_registry_ref(model):
        if not (Path(model) / "config.json").is_file():
            raise ModelLoadError(f"model directory {model} does not exist or has no config.json")
        return directory_version(model)
    if store is None:
        raise ModelLoadError(f"model {model!r} is a registry reference, but no registry is set")
    name, version, alias = parse_ref(model)
    try:
        return str(store.get(name, version=version, alias=alias).ref)
    except LookupError as exc:
        raise ModelLoadError(f"no registered checkpoint {model}: {exc}") from exc


def run_select_prompts(
    config: SelectPromptsConfig,
    *,
    generator: Generator | None = None,
    verifier: Verifier | None = None,
    store: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> SelectionSummary:
    """Select with the given services, or an in-process engine (config.model) and a local
    verifier pool, which are closed again at the end."""
    from contextlib import ExitStack

    from astro_core.training.rollouts import ServedModelMismatch

    rows = read_prompt_rows(config.dataset)  # bad data fails before anything starts
    with ExitStack() as stack:
        if generator is None:
            if not config.model:
                raise ValueError("select-prompts needs model (or generator_address)")
            from astro_core.engines.config import EngineConfig
            from astro_core.engines.hf import HFEngine
            from astro_core.paths import data_dir
            from astro_core.training.models import resolve_starting_model

            starting = resolve_starting_model(config.model, store, data_dir() / "checkpoint-cache")
            engine = HFEngine(
                EngineConfig(model_path=str(starting.path), model_version=starting.ref)
            )
            stack.callback(engine.close)
            generator, template = engine, engine.chat_template()
        else:
            info = getattr(generator, "model_info", None)
            if config.model and callable(info):
                want, served = expected_version(config.model, store), info().version
                if served != want:
                    raise ServedModelMismatch(
                        f"the generator serves {served!r}, not the starting policy {want!r}"
                    )
            chat_template = getattr(generator, "chat_template", None)
            if not callable(chat_template):
                raise TypeError("the generator does not report its chat template")
            template = chat_template()
        if verifier is None:
            from astro_core.answers import VerifierConfig, VerifierPool

            verifier = stack.enter_context(VerifierPool(VerifierConfig(workers=1)))
        return select_prompts(
            generator,
            verifier,
            rows,
            template,
            output=config.output,
            record=config.record_path,
            interval=Interval(config.pass_rate_low, config.pass_rate_high),
            num_samples=config.num_samples,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=config.seed,
            prompts_per_call=config.prompts_per_call,
            instruction=config.instruction,
            progress=progress,
        )
