"""Where a response goes back, and what the ASTRO traces teach, on hand-written text."""

from __future__ import annotations

import json
from pathlib import Path

from astro_core.analysis.behaviours import BacktrackConditions, attempts
from astro_core.cloning.phrases import Phrases
from astro_core.experiments.behaviour import (
    conditions_by_benchmark,
    conditions_of,
    verdict_contexts,
)

P = Phrases()
BACK = f'{P.reflection} {P.unsure} Let\'s go back to where we wrote "Try x = 3".'
OK = f"{P.reflection} {P.confident}"


def answer(x: int) -> str:
    return f"So x = {x}. The final answer is \\boxed{{{x}}}."


def test_attempts_pair_each_answer_with_the_move_after_it() -> None:
    text = "\n\n".join(["Try x = 3: 3 * 6 = 18 (need 24): wrong.", answer(3), BACK,
                        "Try x = 4: 4 * 6 = 24 (need 24): right.", answer(4), OK])  # fmt: skip
    assert attempts(text, "4") == [(False, True), (True, False)]
    assert attempts(answer(4), "4") == [(True, False)]
    assert attempts("no answer at all", "4") == []


def test_conditions_count_backtracks_after_right_and_wrong_attempts() -> None:
    counts = BacktrackConditions()
    counts.add("\n\n".join([answer(3), BACK, answer(4)]), "4", final_right=True)  # recovers
    counts.add("\n\n".join([answer(4), BACK, answer(5)]), "4", final_right=False)  # at random
    counts.add(answer(3), "4", final_right=False)
    assert (counts.wrong_attempts, counts.wrong_then_back) == (3, 1)
    assert (counts.right_attempts, counts.right_then_back) == (2, 1)
    assert (counts.first_wrong, counts.recovered) == (2, 1)
    assert counts.rates() == {
        "back_after_wrong": 1 / 3,
        "back_after_right": 0.5,
        "recovery": 0.5,
        "back_after_called_wrong": None,  # no attempt states a check
        "back_after_called_right": None,
    }


def test_conditions_count_moves_back_by_what_the_attempts_own_check_said() -> None:
    """A model that acts on its check but checks wrongly: back after every "wrong", never
    after a "right", whatever the truth (x = 4)."""
    said_wrong = "Try x = 4: 4 * 6 = 25 (need 24): wrong."  # a right guess, called wrong
    said_right = "Try x = 3: 3 * 6 = 24 (need 24): right."  # a wrong guess, called right
    counts = BacktrackConditions()
    counts.add("\n\n".join([said_wrong, answer(4), BACK, said_right, answer(3), OK]), "4", False)
    counts.add("\n\n".join([said_right, answer(3)]), "4", False)
    counts.add("\n\n".join([answer(4), BACK, answer(4)]), "4", True)  # no check stated
    assert (counts.called_wrong, counts.called_wrong_then_back) == (1, 1)
    assert (counts.called_right, counts.called_right_then_back) == (2, 0)
    rates = counts.rates()
    assert (rates["back_after_called_wrong"], rates["back_after_called_right"]) == (1.0, 0.0)
    # against the truth it looks like the opposite of search
    assert (rates["back_after_wrong"], rates["back_after_right"]) == (0.0, 2 / 3)
    # a check belongs to the attempt it precedes, not to one after a move back
    text = "\n\n".join([said_wrong, BACK, answer(4)])
    counts = BacktrackConditions()
    counts.add(text, "4", True)
    assert (counts.called_wrong, counts.called_right) == (0, 0)


def test_conditions_of_a_samples_file_per_benchmark_with_its_answers(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    rows = [
        ("a", "p1", "\n\n".join([answer(3), BACK, answer(4)]), True),  # wrong, back, right
        ("a", "p2", answer(7), True),  # right, stops
        ("b", "p1", "\n\n".join([answer(4), BACK, answer(5)]), False),  # right, back: b only
        ("a", "unknown", answer(1), False),  # no gold answer: not counted
    ]
    samples.write_text(
        "".join(
            json.dumps({"benchmark": b, "problem_id": p, "response": r, "correct": c}) + "\n"
            for b, p, r, c in rows
        )
        + "\n"
    )
    answers = {"p1": "4", "p2": "7"}
    by_benchmark = conditions_by_benchmark(samples, answers)
    assert set(by_benchmark) == {"a", "b"}
    assert by_benchmark["a"].responses == 2
    rates = by_benchmark["a"].rates()
    assert (rates["back_after_wrong"], rates["back_after_right"], rates["recovery"]) == (1, 0, 1)
    assert by_benchmark["b"].rates()["back_after_right"] == 1.0  # right, then back: b only
    both = conditions_of(samples, answers)
    assert both.responses == 3 and (both.right_attempts, both.right_then_back) == (3, 1)


def test_verdict_contexts_read_the_attempt_before_each_reflection(tmp_path: Path) -> None:
    problem = "Find the positive integer x such that x * 6 = 24."
    trace = "\n\n".join([
        "Try x = 3: 3 * 6 = 18 (need 24): wrong.", answer(3), BACK,  # P != c, arithmetic right
        "Try x = 5: 5 * 6 = 24 (need 24): right.", answer(5), BACK,  # P == c, arithmetic wrong
        "Try x = 4: 4 * 6 = 24 (need 24): right.", answer(4), OK,    # P == c, arithmetic right
    ])  # fmt: skip
    record = {"messages": [{"role": "user", "content": problem},
                           {"role": "assistant", "content": trace}], "style": "astro"}  # fmt: skip
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "style": "direct"}) + "\n")
    assert verdict_contexts(path) == {
        "back P!=c arithmetic ok": 1,
        "back P==c arithmetic wrong": 1,
        "ok P==c arithmetic ok": 1,
    }


def test_the_experiment_report_takes_the_counts_its_summaries_kept(tmp_path: Path) -> None:
    """`behaviour` merges each eval's `where_it_goes_back` counts over benchmarks and seeds;
    an eval whose summary predates them is recounted from its samples and the run's gold."""
    from astro_core.analysis.experiment import CheckpointScore
    from astro_core.experiments.driver import RunOutcome, SeedRun
    from astro_core.experiments.report import behaviour

    kept = BacktrackConditions(responses=4, wrong_attempts=3, wrong_then_back=2, right_attempts=1)
    runs, scores = [], []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        (out / "inputs" / "eval").mkdir(parents=True)
        (out / "inputs" / "eval" / "a.jsonl").write_text(json.dumps({"id": "p1", "answer": "4"}))
        folder = out / "eval" / "sft"
        folder.mkdir(parents=True)
        # the samples disagree with the kept counts: only seed 1 (an old summary) reads them
        response = "\n\n".join([answer(4), BACK, answer(4)])
        (folder / "samples.jsonl").write_text(
            json.dumps(
                {"benchmark": "a", "problem_id": "p1", "response": response, "correct": True}
            )
            + "\n"  # fmt: skip
        )
        where = kept.to_dict() if seed == 0 else {"back_after_wrong": 0.5}
        summary = {"benchmarks": {"a": {"where_it_goes_back": where}, "b": {}}}
        if seed == 0:
            summary["benchmarks"]["b"] = {"where_it_goes_back": kept.to_dict()}
        (folder / "summary.json").write_text(json.dumps(summary))
        outcome = RunOutcome("r", "SUCCEEDED", output_dir=str(out),
                             artifacts={"eval.dirs": str(folder)})  # fmt: skip
        runs.append(SeedRun(seed, "m", {}, outcome, 1.0))
        scores.append(CheckpointScore(seed, "astro", "sft", None, "a", 0.5, 1.0, 9.0, "sft"))
    merged = behaviour(runs, scores)["astro sft"]
    assert merged["responses"] == 2 * kept.responses + 1  # seed 0's two benchmarks + seed 1
    assert merged["wrong_attempts"] == 2 * kept.wrong_attempts
    assert (merged["right_attempts"], merged["right_then_back"]) == (2 * 1 + 2, 1)
    assert BacktrackConditions.from_dict({"back_after_wrong": 0.5}) is None
    assert BacktrackConditions.from_dict({**kept.to_dict(), "responses": -1}) is None
    assert BacktrackConditions.from_dict(kept.to_dict()) == kept
