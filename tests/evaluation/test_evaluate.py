"""`evaluate` with a scripted generator of known answers and the real verifier pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from astro_core.answers import VerifierPool
from astro_core.evaluation import (
    EvalConfig,
    EvalConflict,
    EvalProgress,
    SampleLog,
    check_output_dir,
    evaluate,
    format_table,
    iter_samples,
    problem_seed,
)
from astro_core.prompts import problem_messages
from astro_core.protocols import VerifyResult
from tests.evaluation.conftest import EXPECTED, PROBLEMS, problem_text, scripted_response
from tests.evaluation.scripted import TEMPLATE, ScriptedGenerator

CONFIG = EvalConfig(n=4, pass_k=[1, 2, 4], batch_problems=2)


def test_scores_equal_hand_computed_values(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    generator = ScriptedGenerator(lambda problem, i: scripted_response(problem, i))
    events: list[EvalProgress] = []
    summary = evaluate(
        [str(problems_file)], generator, pool, CONFIG, tmp_path / "out", progress=events.append
    )
    result = summary["benchmarks"]["problems"]
    assert result["problems"] == 5 and result["samples"] == 20
    assert result["accuracy"] == pytest.approx(EXPECTED["accuracy"])
    assert result["majority"] == pytest.approx(EXPECTED["majority"])
    assert result["pass_at_k"] == pytest.approx(
        {"1": EXPECTED["accuracy"], "2": EXPECTED["pass@2"], "4": EXPECTED["pass@4"]}
    )
    assert result["no_answer"] == 1 and result["finish_reasons"] == {"eos": 20}
    # the breakdowns hold every problem once and average back to the whole
    for key in ("level", "subject"):
        groups = result[f"by_{key}"]
        assert {g: s["accuracy"] for g, s in groups.items()} == pytest.approx(EXPECTED[f"by_{key}"])
        assert sum(s["problems"] for s in groups.values()) == result["problems"]
        assert sum(s["correct_samples"] for s in groups.values()) == result["correct_samples"]
        weighted = sum(s["accuracy"] * s["problems"] for s in groups.values()) / 5
        assert weighted == pytest.approx(result["accuracy"])
    assert list(result["by_level"]) == ["1", "2", "3"]
    # the protocol is written into the output, and the summary file is what was returned
    assert summary["protocol"]["n"] == 4 and summary["protocol"]["temperature"] == 0.6
    assert summary["protocol"]["pass_k"] == [1, 2, 4]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert "problems" in format_table(summary) and "avg@4" in format_table(summary)
    # progress: problems done grows to the total with a running accuracy
    assert events[0].problems_done == 0 and events[-1].problems_done == 5
    assert events[-1].accuracy == pytest.approx(EXPECTED["accuracy"])


def test_samples_file_and_generate_calls(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    generator = ScriptedGenerator(lambda problem, i: scripted_response(problem, i, backtracks=i))
    evaluate([str(problems_file)], generator, pool, CONFIG, tmp_path)
    samples = list(iter_samples(tmp_path / "samples.jsonl"))
    assert len(samples) == 20
    in_memory = SampleLog(tmp_path / "samples.jsonl").records  # scores need no response text
    assert {r.response for r in in_memory.values()} == {""} and len(in_memory) == 20
    assert len({s.key for s in samples}) == 20
    by_key = {(s.problem_id, s.sample_index): s for s in samples}
    p4 = [by_key["p4", i] for i in range(4)]
    assert [s.correct for s in p4] == [True, True, False, False]
    assert [s.extracted_answer for s in p4] == ["\\frac{1}{2}", "0.5", "x", ""]
    assert [s.backtracks for s in p4] == [0, 1, 2, 3]  # scripted: sample i backtracks i times
    assert [s.reflections for s in p4] == [0, 1, 2, 3]
    assert all(s.finish_reason == "eos" and s.model_version == "scripted#1" for s in samples)
    assert by_key["p1", 0].tokens == len(by_key["p1", 0].response.split())
    # one call per problem: the chat-template prompt, n samples, the problem's own seed
    calls = {c["prompts"][0]: c for c in generator.calls}  # type: ignore[index]
    for pid, *_ in PROBLEMS:
        prompt = TEMPLATE.render(problem_messages(problem_text(pid)))
        assert calls[prompt]["n"] == 4 and calls[prompt]["temperature"] == 0.6
        assert calls[prompt]["seed"] == problem_seed(0, "problems", pid)
        assert by_key[pid, 0].seed == problem_seed(0, "problems", pid)
    summary = json.loads((tmp_path / "summary.json").read_text())
    result = summary["benchmarks"]["problems"]
    assert result["mean_backtracks"] == pytest.approx(1.5)
    assert result["backtracks_histogram"] == {"0": 5, "1": 5, "2": 5, "3": 5}


def test_greedy_is_one_sample_at_temperature_zero(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    generator = ScriptedGenerator(lambda problem, i: scripted_response(problem, i))
    config = EvalConfig(greedy=True, n=16, temperature=0.9)
    summary = evaluate([str(problems_file)], generator, pool, config, tmp_path)
    assert {(c["n"], c["temperature"]) for c in generator.calls} == {(1, 0.0)}
    assert summary["protocol"]["greedy"] is True and summary["protocol"]["pass_k"] == [1]
    # sample 0 of each problem: p1, p2, p3, p4 right; p5 wrong
    assert summary["benchmarks"]["problems"]["accuracy"] == pytest.approx(4 / 5)


class Flaky:
    """Answers like the script, but fails every call after `budget` calls (a crash)."""

    def __init__(self, budget: int) -> None:
        self.inner = ScriptedGenerator(lambda problem, i: scripted_response(problem, i, i % 2))
        self.budget = budget

    def chat_template(self) -> Any:
        return TEMPLATE

    def generate(self, prompts: Any, **kwargs: Any) -> Any:
        with self.inner.lock:
            self.budget -= 1
            if self.budget < 0:
                raise ConnectionError("generator went away")
        return self.inner.generate(prompts, **kwargs)


def test_resume_after_a_failure_gives_the_uninterrupted_summary(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    whole = ScriptedGenerator(lambda problem, i: scripted_response(problem, i, i % 2))
    expected = evaluate([str(problems_file)], whole, pool, CONFIG, tmp_path / "whole")
    out = tmp_path / "resumed"
    flaky = Flaky(budget=3)  # the fourth call and every one after it fail
    with pytest.raises(ConnectionError):
        evaluate([str(problems_file)], flaky, pool, CONFIG, out)
    saved = {s.problem_id for s in iter_samples(out / "samples.jsonl")}
    assert saved and saved <= {"p1", "p2", "p3"}  # answered problems were graded and kept
    again = ScriptedGenerator(lambda problem, i: scripted_response(problem, i, i % 2))
    resumed = evaluate([str(problems_file)], again, pool, CONFIG, out)
    assert resumed == expected
    # only the unfinished problems were generated again, and nothing is duplicated
    asked = {c["prompts"][0].split("Problem ")[1][:2] for c in again.calls}  # type: ignore[index]
    assert asked == {"p1", "p2", "p3", "p4", "p5"} - saved
    samples = list(iter_samples(out / "samples.jsonl"))
    assert len(samples) == len({s.key for s in samples}) == 20
    assert sorted(s.response for s in samples) == sorted(
        s.response for s in iter_samples(tmp_path / "whole" / "samples.jsonl")
    )
    # a finished evaluation run again generates nothing
    idle = ScriptedGenerator(lambda problem, i: "unused")
    assert evaluate([str(problems_file)], idle, pool, CONFIG, out) == resumed
    assert idle.calls == []


def test_a_torn_last_line_is_dropped_and_regenerated(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    generator = ScriptedGenerator(lambda problem, i: scripted_response(problem, i))
    expected = evaluate([str(problems_file)], generator, pool, CONFIG, tmp_path)
    path = tmp_path / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]) + lines[-3][:25])  # killed in the middle of a write
    again = ScriptedGenerator(lambda problem, i: scripted_response(problem, i))
    assert evaluate([str(problems_file)], again, pool, CONFIG, tmp_path) == expected
    assert len(again.calls) == 1  # the last round (p5) only
    samples = list(iter_samples(path))
    assert len(samples) == len({s.key for s in samples}) == 20
    path.write_text("".join(lines[:5]) + "{broken\n" + "".join(lines[5:]))
    with pytest.raises(ValueError, match="samples.jsonl:6: not a valid sample"):
        evaluate([str(problems_file)], again, pool, CONFIG, tmp_path)


def test_an_output_dir_of_another_protocol_or_model_is_refused(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    generator = ScriptedGenerator(lambda problem, i: scripted_response(problem, i))
    first = EvalConfig(n=4, limit=2, batch_problems=2)
    evaluate([str(problems_file)], generator, pool, first, tmp_path)
    before = (tmp_path / "samples.jsonl").read_text()
    with pytest.raises(EvalConflict, match="n=4, this run has n=8"):
        evaluate([str(problems_file)], generator, pool, EvalConfig(n=8), tmp_path)
    with pytest.raises(EvalConflict, match="temperature"):
        evaluate(
            [str(problems_file)],
            generator,
            pool,
            first.model_copy(update={"temperature": 1.0}),
            tmp_path,
        )
    other = ScriptedGenerator(lambda problem, i: scripted_response(problem, i), version="other#2")
    with pytest.raises(EvalConflict, match="model 'other#2'.*'scripted#1'"):
        evaluate([str(problems_file)], other, pool, first.model_copy(update={"limit": 4}), tmp_path)
    assert (tmp_path / "samples.jsonl").read_text() == before  # nothing stored is lost
    recorded = (tmp_path / "eval.json").read_text()
    (tmp_path / "eval.json").unlink()
    with pytest.raises(EvalConflict, match="has samples.jsonl but no eval.json"):
        evaluate([str(problems_file)], generator, pool, first, tmp_path)
    check_output_dir(tmp_path / "fresh", EvalConfig(n=8))  # no samples yet: nothing to keep
    check_output_dir(tmp_path / "fresh", EvalConfig(n=2))
    assert json.loads((tmp_path / "fresh" / "eval.json").read_text())["protocol"]["n"] == 2
    (tmp_path / "eval.json").write_text(recorded)
    # a larger limit continues the same evaluation
    summary = evaluate(
        [str(problems_file)], generator, pool, first.model_copy(update={"limit": 4}), tmp_path
    )
    assert summary["benchmarks"]["problems"]["problems"] == 4


def test_a_generator_that_switches_models_midway_is_caught(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    generator = ScriptedGenerator(lambda problem, i: scripted_response(problem, i))
    original = generator.generate

    def swapping(prompts: Any, **kwargs: Any) -> Any:
        if len(generator.calls) >= 2:
            generator.version = "newer#3"  # the generator followed an alias to a new model
        return original(prompts, **kwargs)

    generator.generate = swapping  # type: ignore[method-assign]
    config = EvalConfig(n=2, batch_problems=1)
    with pytest.raises(EvalConflict, match="did the generator switch models"):
        evaluate([str(problems_file)], generator, pool, config, tmp_path)


def test_wrong_number_of_completions_is_an_error(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    generator = ScriptedGenerator(lambda problem, i: scripted_response(problem, i))
    original = generator.generate
    generator.generate = lambda prompts, **kw: original(prompts, **kw)[:1]  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="returned 1 completions for n=4"):
        evaluate([str(problems_file)], generator, pool, CONFIG, tmp_path)


class SlowOnce:
    """TEST DOUBLE around the real pool: its first answer for `stuck` items is "timeout" (as
    when a busy machine starves a worker); `always` keeps timing out."""

    def __init__(self, pool: VerifierPool, always: bool = False) -> None:
        self.pool, self.always, self.calls = pool, always, 0

    def verify_batch(self, items: Any, rewards: Any = None) -> Any:
        self.calls += 1
        results = self.pool.verify_batch(items)
        if self.calls == 1 or self.always:
            return [VerifyResult(False, -1.0, "", "timeout") for _ in results]
        return results


def test_a_timed_out_verdict_is_tried_again(
    problems_file: Path, pool: VerifierPool, tmp_path: Path
) -> None:
    generator = ScriptedGenerator(lambda problem, i: scripted_response(problem, i))
    config = EvalConfig(n=4, limit=1)
    summary = evaluate([str(problems_file)], generator, SlowOnce(pool), config, tmp_path / "a")
    assert summary["benchmarks"]["problems"]["accuracy"] == 1.0  # p1: all four right
    assert summary["benchmarks"]["problems"]["verifier_timeouts"] == 0
    assert {s.verdict for s in iter_samples(tmp_path / "a" / "samples.jsonl")} == {"equal"}
    stuck = SlowOnce(pool, always=True)
    summary = evaluate([str(problems_file)], generator, stuck, config, tmp_path / "b")
    assert summary["benchmarks"]["problems"]["verifier_timeouts"] == 4 and stuck.calls == 2


def family_response(problem: str, moves: list[tuple[int, bool]]) -> str:
    """A response to a product-family problem: per (guess, go back after it) a try step, its
    answer step and, where asked, the move back."""
    from astro_core.cloning.phrases import Phrases
    from astro_core.synthetic import parse_problem

    family = parse_problem(problem)
    assert family is not None
    steps = []
    for guess, back in moves:
        steps += [family.try_step(guess), family.answer_step(guess)]
        if back:
            steps.append(Phrases().negative_reflection(Phrases().backtrack_to("the beginning")))
    return "\n\n".join(steps)


def test_the_summary_counts_where_responses_go_back(pool: VerifierPool, tmp_path: Path) -> None:
    """Sample 0 searches (back after each wrong guess, on after the right one), sample 1 goes
    back after every guess, sample 2 stops at its first, wrong, guess; the counts follow."""
    from astro_core.synthetic import ProductProblem, parse_problem, write_problems

    problems = [ProductProblem(3, 7), ProductProblem(5, 4)]
    path = write_problems(problems, tmp_path / "family.jsonl")

    def respond(problem: str, i: int) -> str:
        family = parse_problem(problem)
        assert family is not None
        x = family.x
        script = {
            0: [(x - 1, True), (x + 1, True), (x, False)],
            1: [(x + 1, True), (x, True), (x, False)],
            2: [(x + 2, False)],
        }
        return family_response(problem, script[i])

    config = EvalConfig(n=3, pass_k=[1], batch_problems=2)
    summary = evaluate([str(path)], ScriptedGenerator(respond), pool, config, tmp_path / "out")
    counts = summary["benchmarks"]["family"]["where_it_goes_back"]
    # per problem: 4 wrong attempts (2 + 1 + 1), 3 followed by a move back; 3 right ones
    # (1 + 2), 1 followed by one; every check says what its guess makes it, so the counts by
    # the check are the same; both problems' first attempts are wrong, 2 of 3 recover
    assert counts["responses"] == 6
    assert counts["wrong_attempts"] == counts["called_wrong"] == 8
    assert counts["wrong_then_back"] == counts["called_wrong_then_back"] == 6
    assert counts["right_then_back"] == counts["called_right_then_back"] == 2
    assert counts["back_after_wrong"] == counts["back_after_called_wrong"] == pytest.approx(6 / 8)
    assert counts["right_attempts"] == counts["called_right"] == 6
    assert counts["back_after_right"] == counts["back_after_called_right"] == pytest.approx(2 / 6)
    assert (counts["first_wrong"], counts["recovered"]) == (6, 4)
    assert counts["recovery"] == pytest.approx(4 / 6)
    # the printed table says it in one line
    assert (
        "family goes back after 75% of 8 wrong attempts, 33% of 6 right ones, 75% of 8 its "
        "check called wrong, 33% of 6 it called right"
    ) in format_table(summary)
