"""Fixtures of the evaluation tests: a real verifier pool and a small problems file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from astro_core.answers import VerifierConfig, VerifierPool

# id, gold, level, subject, and the answers its 4 samples give (None: no answer at all)
PROBLEMS = [
    ("p1", "4", 1, "A", ["4", "4", "4", "4"]),
    ("p2", "7", 1, "B", ["7", "3", "3", "5"]),
    ("p3", "10", 2, "A", ["10", "10", "2", "3"]),
    ("p4", "\\frac{1}{2}", 2, "B", ["\\frac{1}{2}", "0.5", "x", None]),
    ("p5", "9", 3, "A", ["1", "2", "3", "4"]),
]
# What the scripted samples score, computed by hand (see test_evaluate.py)
EXPECTED = {
    "accuracy": (1 + 1 / 4 + 2 / 4 + 2 / 4 + 0) / 5,
    "majority": (1 + 0 + 1 + 1 + 0) / 5,
    "pass@2": (1 + (1 - 3 / 6) + (1 - 1 / 6) + (1 - 1 / 6) + 0) / 5,
    "pass@4": 4 / 5,
    "by_level": {"1": (1 + 1 / 4) / 2, "2": (2 / 4 + 2 / 4) / 2, "3": 0.0},
    "by_subject": {"A": (1 + 2 / 4 + 0) / 3, "B": (1 / 4 + 2 / 4) / 2},
}


def problem_text(problem_id: str) -> str:
    return f"Problem {problem_id}: compute the value."


def scripted_response(problem: str, sample: int, backtracks: int = 0) -> str:
    """The scripted answer of sample `sample` to one of PROBLEMS, with backtracks."""
    problem_id = problem.split(":")[0].removeprefix("Problem ")
    answers = next(row[4] for row in PROBLEMS if row[0] == problem_id)
    answer = answers[sample % len(answers)]
    steps = ["Let us set up the computation."]
    for _ in range(backtracks):
        steps.append(
            "But wait, are we solving the problem correctly so far? Hmm... I'm not sure if "
            "we're solving the problem correctly so far. Let's go back to where we wrote "
            '"Let us set up the computation".'
        )
        steps.append("Let us set up the computation.")
    if answer is None:
        steps.append("I cannot finish this.")
    else:
        steps.append(f"Therefore, the final answer is $\\boxed{{{answer}}}$.")
    return "\n\n".join(steps)


@pytest.fixture
def problems_file(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    rows = [
        {"id": pid, "problem": problem_text(pid), "answer": gold, "level": lvl, "subject": sub}
        for pid, gold, lvl, sub, _ in PROBLEMS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="package")
def pool() -> Iterator[VerifierPool]:
    with VerifierPool(VerifierConfig(workers=2, timeout_seconds=20)) as p:
        yield p
