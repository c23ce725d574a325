"""`evaluate`: sample, grade and score benchmarks through the Generator and Verifier seams.

An in-process engine gets rounds of `batch_problems` problems, one engine batch each; any
other generator (the generator service's client) gets one call per problem with twice that
many calls in flight, which the service batches together. Finished samples are graded while
the next ones generate, then appended to `samples.jsonl`. Each problem's generate call has
its own seed, derived from (seed, benchmark, problem id), and sample i draws stream i of it,
so a problem's samples do not depend on the batch it lands in, and a killed evaluation
restarted on the same directory draws exactly what remains: problems on disk are skipped, a
problem written in part is generated again and only its missing samples are kept. The
summary is computed from the samples on disk, so a resumed run ends with the summary of an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astro_core.analysis.behaviours import BacktrackConditions, count_behaviours
from astro_core.engines.base import (
    EngineBase,
    GenerationRequest,
    InvalidRequest,
    SamplingParams,
)
from astro_core.evaluation.benchmarks import Benchmark, load_benchmark
from astro_core.evaluation.config import SAMPLING_KEYS, EvalConfig, EvaluatedModel
from astro_core.evaluation.samples import (
    PROTOCOL_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    SampleLog,
    SampleRecord,
    iter_samples,
)
from astro_core.evaluation.summary import summarize_benchmark
from astro_core.problems import Problem
from astro_core.prompts import ChatTemplate, problem_messages
from astro_core.protocols import Completion, Generator, Verifier, VerifyItem, VerifyResult

MAX_PARALLEL_CALLS = 64
VERIFY_CHUNK = 1024  # items per verify_batch call (the verifier service bounds a batch)


class EvalConflict(ValueError):
    """The output directory holds samples of another protocol or another model."""


@dataclass(frozen=True)
class EvalProgress:
    """Where one benchmark stands; samples already on disk when resuming count as done."""

    benchmark: str
    problems_done: int
    problems_total: int
    samples_done: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples_done if self.samples_done else 0.0


ProgressCallback = Callable[[EvalProgress], None]
_Prompt = Callable[[Problem], tuple[str, int]]  # a problem's prompt and seed


def problem_seed(seed: int, benchmark: str, problem_id: str) -> int:
    """The seed of one problem's generate call (63 bits, as the generator's int64 takes)."""
    digest = hashlib.sha256(f"{seed}:{benchmark}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _phrases_digest(config: EvalConfig) -> str:
    return hashlib.sha256(config.phrases.model_dump_json().encode()).hexdigest()[:16]


def check_output_dir(out_dir: str | Path, config: EvalConfig) -> None:
    """Refuse a directory whose samples were drawn or counted another way (EvalConflict);
    record our protocol in a new one."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PROTOCOL_FILE
    protocol = config.protocol()
    ours = {"protocol": protocol, "phrases": _phrases_digest(config)}
    samples = out_dir / SAMPLES_FILE
    has_samples = samples.exists() and samples.stat().st_size > 0
    if path.exists() and has_samples:
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
            recorded = theirs["protocol"]
        except (ValueError, KeyError, TypeError) as exc:
            raise EvalConflict(f"{path} is not readable ({exc}); use another output dir") from exc
        for key in SAMPLING_KEYS:
            if recorded.get(key) != protocol[key]:
                raise EvalConflict(
                    f"{out_dir} holds samples with {key}={recorded.get(key)!r}, this run has "
                    f"{key}={protocol[key]!r}; use another output dir"
                )
        if theirs.get("phrases") != ours["phrases"]:
            raise EvalConflict(
                f"{out_dir} counted backtracks with other phrases; use another output dir"
            )
        return
    if has_samples:
        raise EvalConflict(f"{out_dir} has {SAMPLES_FILE} but no {PROTOCOL_FILE}; use another dir")
    _write_json(path, ours)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


Chunk = tuple[list[Problem], list[int], list[list[Completion]]]  # problems, seeds, samples


class _Sampler:
    """n samples per problem: engine batches of one round each, or a window of calls.

    An in-process engine gets one `generate_batch` per round of `batch_problems` (fixed
    slices of the benchmark, so a resumed run batches exactly as an uninterrupted one). Any
    other generator (the service client) gets one call per problem, with up to twice
    `batch_problems` calls in flight, so that the service always has the next batch queued;
    answers are taken in the order the calls were made.
    """

    def __init__(self, generator: Generator, config: EvalConfig) -> None:
        self.generator = generator
        self.config = config
        self.window = min(2 * config.batch_problems, MAX_PARALLEL_CALLS)
        self.pool: ThreadPoolExecutor | None = None
        if not isinstance(generator, EngineBase):
            self.pool = ThreadPoolExecutor(self.window, thread_name_prefix="eval-generate")

    def close(self, wait: bool) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=wait, cancel_futures=True)

    def chunks(
        self, problems: Sequence[Problem], done: Callable[[Problem], bool], prompt_of: _Prompt
    ) -> Iterator[Chunk]:
        """The samples of every problem not done yet, a chunk at a time."""
        if isinstance(self.generator, EngineBase):
            size = self.config.batch_problems
            for start in range(0, len(problems), size):
                chunk = list(problems[start : start + size])
                if not all(done(p) for p in chunk):
                    seeds = [prompt_of(p)[1] for p in chunk]
                    prompts = [prompt_of(p)[0] for p in chunk]
                    yield chunk, seeds, self._engine_batch(self.generator, chunk, prompts, seeds)
            return
        assert self.pool is not None
        todo = iter([p for p in problems if not done(p)])
        in_flight: deque[tuple[Problem, int, Future[list[Completion]]]] = deque()
        while True:
            while len(in_flight) < self.window and (problem := next(todo, None)) is not None:
                prompt, seed = prompt_of(problem)
                future = self.pool.submit(self._one, problem, prompt, seed)
                in_flight.append((problem, seed, future))
            if not in_flight:
                return
            ready = [in_flight.popleft()]
            ready[0][2].result()  # waits; raises the call's error
            while in_flight and in_flight[0][2].done():
                ready.append(in_flight.popleft())
            yield [r[0] for r in ready], [r[1] for r in ready], [r[2].result() for r in ready]

    def _params(self, seed: int) -> SamplingParams:
        c = self.config
        return SamplingParams(c.n, c.max_tokens, c.temperature, c.top_p, (), seed, False)

    def _engine_batch(
        self,
        engine: EngineBase,
        problems: Sequence[Problem],
        prompts: Sequence[str],
        seeds: Sequence[int],
    ) -> list[list[Completion]]:
        requests = [
            GenerationRequest((prompt,), self._params(seed))
            for prompt, seed in zip(prompts, seeds, strict=True)
        ]
        try:
            results = engine.generate_batch(requests)
        except InvalidRequest as exc:
            for problem, request in zip(problems, requests, strict=True):
                try:
                    engine.encode_request(request)  # raises InvalidRequest
                except InvalidRequest as bad:
                    raise InvalidRequest(f"problem {problem.id}: {bad}") from bad
            raise exc
        for problem, completions in zip(problems, results, strict=True):
            self._check(problem, completions)
        return results

    def _one(self, problem: Problem, prompt: str, seed: int) -> list[Completion]:
        c = self.config
        try:
            completions = self.generator.generate(
                [prompt],
                n=c.n,
                max_tokens=c.max_tokens,
                temperature=c.temperature,
                top_p=c.top_p,
                seed=seed,
            )
        except ValueError as exc:  # InvalidRequest from a client: name the problem
            raise InvalidRequest(f"problem {problem.id}: {exc}") from exc
        self._check(problem, completions)
        return completions

    def _check(self, problem: Problem, completions: Sequence[Completion]) -> None:
        if len(completions) != self.config.n:
            raise RuntimeError(
                f"problem {problem.id}: the generator returned {len(completions)} "
                f"completions for n={self.config.n}"
            )


class _Run:
    """State of one `evaluate` call: the sample log, the model version seen, progress."""

    def __init__(
        self,
        out_dir: Path,
        generator: Generator,
        verifier: Verifier,
        template: ChatTemplate,
        config: EvalConfig,
        progress: ProgressCallback | None,
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.template = template
        self.progress = progress
        self.log = SampleLog(out_dir / SAMPLES_FILE)
        versions = self.log.versions()
        if len(versions) > 1:
            raise EvalConflict(f"{out_dir} holds samples of several models: {sorted(versions)}")
        self.version: str | None = next(iter(versions), None)
        self.sampler = _Sampler(generator, config)
        self.finisher = ThreadPoolExecutor(1, thread_name_prefix="eval-grade")

    def benchmark(self, bench: Benchmark) -> None:
        n = self.config.n
        done = [p for p in bench.problems if self._complete(bench.name, p)]
        self.done, self.samples, self.correct = len(done), n * len(done), 0
        for p in done:
            self.correct += sum(r.correct for r in self.samples_of(bench.name, p))
        self._report(bench)
        pending: Future[None] | None = None
        prompts = {p.id: self.template.render(problem_messages(p.problem)) for p in bench.problems}
        # Prompts of similar length batch together: less padding to the longest one.
        order = sorted(bench.problems, key=lambda p: len(prompts[p.id]))

        def prompt_of(problem: Problem) -> tuple[str, int]:
            return prompts[problem.id], problem_seed(self.config.seed, bench.name, problem.id)

        try:
            for chunk in self.sampler.chunks(
                order, lambda p: self._complete(bench.name, p), prompt_of
            ):
                self._check_version(chunk[2])
                if pending is not None:
                    pending.result()
                pending = self.finisher.submit(self._finish, bench, *chunk)
        finally:
            if pending is not None:
                pending.result()  # generated samples are graded and saved, even on error

    def _complete(self, benchmark: str, problem: Problem) -> bool:
        return self.log.of_problem(benchmark, problem.id, self.config.n) is not None

    def samples_of(self, benchmark: str, problem: Problem) -> list[SampleRecord]:
        found = self.log.of_problem(benchmark, problem.id, self.config.n)
        assert found is not None
        return found

    def _check_version(self, rounds: list[list[Completion]]) -> None:
        for completions in rounds:
            for completion in completions:
                if self.version is None:
                    self.version = completion.model_version
                elif completion.model_version != self.version:
                    raise EvalConflict(
                        f"samples come from model {completion.model_version!r}, but this "
                        f"evaluation holds samples of {self.version!r} (did the generator "
                        "switch models?); use another output dir"
                    )

    def _finish(
        self,
        bench: Benchmark,
        problems: Sequence[Problem],
        seeds: Sequence[int],
        completions: Sequence[Sequence[Completion]],
    ) -> None:
        """Grade a round, count its behaviours and append its new samples."""
        items = [
            VerifyItem(response=c.text, gold=p.answer, problem=p.problem)
            for p, cs in zip(problems, completions, strict=True)
            for c in cs
        ]
        verdicts = iter(self._grade(items))
        records: list[SampleRecord] = []
        for problem, seed, samples in zip(problems, seeds, completions, strict=True):
            fresh = not self._complete(bench.name, problem)
            for index, completion in enumerate(samples):
                verdict = next(verdicts)
                if not fresh or self.log.has((bench.name, problem.id, index)):
                    continue
                counts = count_behaviours(completion.text, self.config.phrases)
                records.append(
                    SampleRecord(
                        benchmark=bench.name,
                        problem_id=problem.id,
                        sample_index=index,
                        response=completion.text,
                        extracted_answer=verdict.extracted_answer,
                        correct=verdict.correct,
                        tokens=completion.num_tokens,
                        finish_reason=completion.finish_reason,
                        backtracks=counts.backtracks,
                        reflections=counts.reflections,
                        positive_verdicts=counts.positive_verdicts,
                        verdict=verdict.reason,
                        model_version=completion.model_version,
                        seed=seed,
                    )
                )
            if fresh:
                self.done += 1
        self.log.append(records)
        self.samples += len(records)
        self.correct += sum(r.correct for r in records)
        self._report(bench)

    def _grade(self, items: list[VerifyItem]) -> list[VerifyResult]:
        """Verdicts in chunks; an item that timed out is tried once more, since a busy
        machine (not the answer) may have made it slow."""
        verdicts = [
            verdict
            for start in range(0, len(items), VERIFY_CHUNK)
            for verdict in self.verifier.verify_batch(items[start : start + VERIFY_CHUNK])
        ]
        slow = [i for i, v in enumerate(verdicts) if v.reason == "timeout"]
        if slow:
            again = self.verifier.verify_batch([items[i] for i in slow])
            for i, verdict in zip(slow, again, strict=True):
                verdicts[i] = verdict
        return verdicts

    def _report(self, bench: Benchmark) -> None:
        if self.progress is not None:
            total = len(bench.problems)
            self.progress(EvalProgress(bench.name, self.done, total, self.samples, self.correct))

    def close(self, wait: bool) -> None:
        self.sampler.close(wait)
        self.finisher.shutdown(wait=True)


def _where_it_goes_back(
    samples: Path, loaded: Sequence[Benchmark], config: EvalConfig
) -> dict[str, BacktrackConditions]:
    """Per benchmark, how often a move back follows a wrong and a right attempt
    (astro_core.analysis.behaviours), read from the samples file: the log keeps no response
    text in memory."""
    gold = {(b.name, p.id): p.answer for b in loaded for p in b.problems}
    counts = {b.name: BacktrackConditions() for b in loaded}
    seen: set[tuple[str, str, int]] = set()
    for record in iter_samples(samples):
        answer = gold.get((record.benchmark, record.problem_id))
        if answer is None or record.sample_index >= config.n or record.key in seen:
            continue
        seen.add(record.key)
        counts[record.benchmark].add(record.response, answer, record.correct, config.phrases)
    return counts


def evaluate(
    benchmarks: Sequence[str | Benchmark],
    generator: Generator,
    verifier: Verifier,
    config: EvalConfig,
    out_dir: str | Path,
    *,
    template: ChatTemplate | None = None,
    model: EvaluatedModel | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Evaluate `benchmarks` (names, paths or loaded Benchmarks) and write `out_dir`.

    `template` is the model's chat template; by default the generator's own
    (`generator.chat_template()`, which engines and the generator client have). Returns the
    summary that is also written to `out_dir/summary.json`. Raises EvalConflict when out_dir
    holds samples of another protocol or model, InvalidRequest (a ValueError) naming the
    problem the generator refused.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [
        b
        if isinstance(b, Benchmark)
        else load_benchmark(b, config.shared_data, config.fields, config.limit)
        for b in benchmarks
    ]
    names = [b.name for b in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmarks must have distinct names, got {names}")
    if template is None:
        get_template = getattr(generator, "chat_template", None)
        if not callable(get_template):
            raise ValueError("pass template=: this generator cannot tell its chat template")
        template = get_template()
    assert template is not None
    check_output_dir(out, config)
    run = _Run(out, generator, verifier, template, config, progress)
    finished = False
    try:
        for bench in loaded:
            run.benchmark(bench)
        finished = True
    finally:
        run.close(wait=finished)
    going_back = _where_it_goes_back(out / SAMPLES_FILE, loaded, config)
    summary = {
        "protocol": config.protocol(),
        "model": {**(model or EvaluatedModel()).model_dump(), "version": run.version or ""},
        "benchmarks": {
            b.name: {
                **summarize_benchmark(
                    b.name,
                    b.problems,
                    {p.id: run.samples_of(b.name, p) for p in b.problems},
                    config.ks(),
                ),
                "where_it_goes_back": going_back[b.name].to_dict(),
                "file": str(b.path),
            }
            for b in loaded
        },
    }
    _write_json(out / SUMMARY_FILE, summary)
    return summary
