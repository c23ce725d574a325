"""Where a trained model goes back: after a wrong attempt, or at random?

A response is read as attempts in order: each step with a `\\boxed{}` answer is one, and the
attempt is "followed by a move back" when a backtrack or restart comes before the next attempt.
If backtracking is search, the model goes back after wrong attempts and stops after right ones;
if it is a habit copied from the traces, the rates are the same either way. Recovery: of the
responses whose first attempt is wrong, the share whose final answer is right.

Where an attempt states its own check (the synthetic family's `... (need 49): wrong.`), the
same rates are also counted by what the check *said*: a model can learn to act on its check
(back after "wrong", on after "right") while the check itself is unreliable, and the two
pairs of rates tell those apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from astro_core.cloning.parse import GOING_BACK, split_trace
from astro_core.synthetic import stated_verdict

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class Attempt:
    right: bool  # its answer is the gold one
    back: bool  # a backtrack or restart follows it
    called_right: bool | None  # what its own check said; None: it states no check


def read_attempts(response: str, gold: str) -> list[Attempt]:
    """The response's attempts, in order."""
    found: list[Attempt] = []
    pending: tuple[bool, bool | None] | None = None
    since = ""  # the steps written since the last attempt or move back
    for segment in split_trace(response):
        if segment.kind == "step":
            since += segment.text + "\n"
            answers = BOXED.findall(segment.text)
            if answers:
                if pending is not None:
                    found.append(Attempt(pending[0], False, pending[1]))
                pending = (answers[-1].strip() == gold.strip(), stated_verdict(since))
                since = ""
        elif segment.kind in GOING_BACK:
            if pending is not None:
                found.append(Attempt(pending[0], True, pending[1]))
            pending, since = None, ""
    if pending is not None:
        found.append(Attempt(pending[0], False, pending[1]))
    return found


def attempts(response: str, gold: str) -> list[tuple[bool, bool]]:
    """(the attempt's answer is right, a move back follows it) per attempt, in order."""
    return [(a.right, a.back) for a in read_attempts(response, gold)]


@dataclass
class BacktrackConditions:
    """Counts over responses; the rates are derived."""

    responses: int = 0
    wrong_attempts: int = 0
    back_after_wrong: int = 0
    right_attempts: int = 0
    back_after_right: int = 0
    first_wrong: int = 0
    recovered: int = 0  # first attempt wrong, final answer right
    called_wrong: int = 0  # attempts whose own check said "wrong"
    back_after_called_wrong: int = 0
    called_right: int = 0
    back_after_called_right: int = 0

    def add(self, response: str, gold: str, final_right: bool) -> None:
        self.responses += 1
        found = read_attempts(response, gold)
        for attempt in found:
            if attempt.right:
                self.right_attempts += 1
                self.back_after_right += attempt.back
            else:
                self.wrong_attempts += 1
                self.back_after_wrong += attempt.back
            if attempt.called_right is True:
                self.called_right += 1
                self.back_after_called_right += attempt.back
            elif attempt.called_right is False:
                self.called_wrong += 1
                self.back_after_called_wrong += attempt.back
        if found and not found[0].right:
            self.first_wrong += 1
            self.recovered += final_right

    def rates(self) -> dict[str, float | None]:
        def share(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        return {
            "back_after_wrong": share(self.back_after_wrong, self.wrong_attempts),
            "back_after_right": share(self.back_after_right, self.right_attempts),
            "recovery": share(self.recovered, self.first_wrong),
            "back_after_called_wrong": share(self.back_after_called_wrong, self.called_wrong),
            "back_after_called_right": share(self.back_after_called_right, self.called_right),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.rates()}


def read_answers(eval_inputs: Iterable[Path]) -> dict[str, str]:
    """Problem id -> gold answer, from the run's copies of its eval sets."""
    answers: dict[str, str] = {}
    for path in eval_inputs:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    answers[str(row["id"])] = str(row["answer"])
    return answers


def conditions_of(samples: Path, answers: Mapping[str, str]) -> BacktrackConditions:
    """The counts over one eval directory's samples.jsonl."""
    return merge(conditions_by_benchmark(samples, answers).values())


def conditions_by_benchmark(
    samples: Path, answers: Mapping[str, str]
) -> dict[str, BacktrackConditions]:
    """The counts over one eval directory's samples.jsonl, per benchmark, in one read."""
    counts: dict[str, BacktrackConditions] = {}
    with samples.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            sample = json.loads(line)
            gold = answers.get(str(sample["problem_id"]))
            if gold is not None:
                benchmark = str(sample.get("benchmark", ""))
                counts.setdefault(benchmark, BacktrackConditions()).add(
                    str(sample["response"]), gold, bool(sample["correct"])
                )
    return counts


def merge(counts: Iterable[BacktrackConditions]) -> BacktrackConditions:
    total = BacktrackConditions()
    for c in counts:
        for name, value in asdict(c).items():
            setattr(total, name, getattr(total, name) + value)
    return total


# --- what the traces teach (the product family) ---------------------------------------------

PROBLEM = re.compile(r"x \* (\d+) = (\d+)")
TRY = re.compile(r"^Try x = (\d+): \d+ \* \d+ = (\d+)\b")


def verdict_contexts(traces: Path) -> dict[str, int]:
    """In ASTRO traces of the product family: each reflection's verdict (`back`: "not sure"
    and a backtrack; `ok`: "seems to be correct") against the attempt before it: does its
    stated product equal c, and is its arithmetic right? If search traces are to teach a
    check, the verdict must follow from the visible product; keys: `<verdict> <P==c|P!=c>
    <arithmetic ok|wrong>`."""
    counts: dict[str, int] = {}
    with traces.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            problem = PROBLEM.search(record["messages"][0]["content"])
            if problem is None or record.get("style") != "astro":
                continue
            b, c = int(problem.group(1)), int(problem.group(2))
            last: tuple[int, int] | None = None
            for paragraph in record["messages"][-1]["content"].split("\n\n"):
                paragraph = paragraph.strip()
                attempt = TRY.match(paragraph)
                if attempt:
                    last = (int(attempt.group(1)), int(attempt.group(2)))
                elif paragraph.startswith("But wait") and last is not None:
                    guess, stated = last
                    key = " ".join(
                        (
                            "back" if "not sure" in paragraph else "ok",
                            "P==c" if stated == c else "P!=c",
                            "arithmetic ok" if stated == guess * b else "arithmetic wrong",
                        )
                    )
                    counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
