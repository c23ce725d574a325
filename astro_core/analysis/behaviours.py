"""Counting search behaviour in a response: self-reflections, verdicts, backtracks, restarts.

The phrase set is cloning's (`astro_core.cloning.phrases.Phrases`) and the parser is
cloning's (`astro_core.cloning.parse.split_trace`), so a trace that cloning wrote counts
exactly the backtracks its tree walk made, and a trained model's paraphrases ("Let me go back
to ...", "Let's start over.") count through the configurable `*_patterns` of `Phrases`.

Where a response goes back: it is read as attempts in order (each step with a `\\boxed{}`
answer is one), and an attempt is "followed by a move back" when a backtrack or restart comes
before the next attempt. If backtracking is search, the model goes back after wrong attempts
and stops after right ones; if it is a habit copied from the traces, the rates are the same
either way. An attempt is right when its boxed answer is the gold answer as written (exact for
integer answers; for answers with several spellings it undercounts right attempts). Recovery:
of the responses whose first attempt is wrong, the share whose final answer is right (the
verifier's verdict).

Where an attempt states its own check (the synthetic family's `... (need 49): wrong.`), the
same rates are also counted by what the check *said*: a model can learn to act on its check
(back after "wrong", on after "right") while the check itself is unreliable, and the two
pairs of rates tell those apart.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from astro_core.cloning.parse import GOING_BACK, split_trace
from astro_core.cloning.phrases import Phrases
from astro_core.synthetic import stated_verdict

_DEFAULT_PHRASES = Phrases()


@dataclass(frozen=True)
class BehaviourCounts:
    """What one response does besides stating steps."""

    steps: int = 0
    reflections: int = 0  # the self-reflection question ("But wait, ... Hmm...")
    positive_verdicts: int = 0  # "Our solution seems to be correct so far."
    negative_verdicts: int = 0  # "I'm not sure if we're solving the problem correctly ..."
    backtracks: int = 0  # every move back: to an earlier step or to the beginning
    restarts: int = 0  # the moves back to the beginning (included in backtracks)


def count_behaviours(
    text: str, phrases: Phrases | None = None, paraphrases: bool = True
) -> BehaviourCounts:
    """Count the segments of `text` by kind (exact phrases, plus paraphrases unless turned off)."""
    kinds = Counter(s.kind for s in split_trace(text, phrases or _DEFAULT_PHRASES, paraphrases))
    return BehaviourCounts(
        steps=kinds["step"],
        reflections=kinds["reflection"],
        positive_verdicts=kinds["confident"],
        negative_verdicts=kinds["unsure"],
        backtracks=kinds["backtrack"] + kinds["restart"],
        restarts=kinds["restart"],
    )


BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class Attempt:
    right: bool  # its answer is the gold one
    back: bool  # a backtrack or restart follows it
    called_right: bool | None  # what its own check said; None: it states no check


def read_attempts(response: str, gold: str, phrases: Phrases | None = None) -> list[Attempt]:
    """The response's attempts, in order."""
    found: list[Attempt] = []
    pending: tuple[bool, bool | None] | None = None
    since = ""  # the steps written since the last attempt or move back
    for segment in split_trace(response, phrases or _DEFAULT_PHRASES):
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
    wrong_then_back: int = 0  # wrong attempts a move back follows
    right_attempts: int = 0
    right_then_back: int = 0
    first_wrong: int = 0
    recovered: int = 0  # first attempt wrong, final answer right
    called_wrong: int = 0  # attempts whose own check said "wrong"
    called_wrong_then_back: int = 0
    called_right: int = 0
    called_right_then_back: int = 0

    def add(
        self, response: str, gold: str, final_right: bool, phrases: Phrases | None = None
    ) -> None:
        self.responses += 1
        found = read_attempts(response, gold, phrases)
        for attempt in found:
            if attempt.right:
                self.right_attempts += 1
                self.right_then_back += attempt.back
            else:
                self.wrong_attempts += 1
                self.wrong_then_back += attempt.back
            if attempt.called_right is True:
                self.called_right += 1
                self.called_right_then_back += attempt.back
            elif attempt.called_right is False:
                self.called_wrong += 1
                self.called_wrong_then_back += attempt.back
        if found and not found[0].right:
            self.first_wrong += 1
            self.recovered += final_right

    def rates(self) -> dict[str, float | None]:
        def share(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        return {
            "back_after_wrong": share(self.wrong_then_back, self.wrong_attempts),
            "back_after_right": share(self.right_then_back, self.right_attempts),
            "recovery": share(self.recovered, self.first_wrong),
            "back_after_called_wrong": share(self.called_wrong_then_back, self.called_wrong),
            "back_after_called_right": share(self.called_right_then_back, self.called_right),
        }

    def to_dict(self) -> dict[str, Any]:
        """The counts and the rates (`back_after_*`: the share of those attempts that a move
        back follows; None where there are none)."""
        return {**asdict(self), **self.rates()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BacktrackConditions | None:
        """The counts `to_dict` wrote (its rates are derived again); None when one is missing
        or not a count, as in summaries written before the counts were kept."""
        counts = {f.name: data.get(f.name) for f in fields(cls)}
        if not all(type(v) is int and v >= 0 for v in counts.values()):
            return None
        return cls(**counts)  # type: ignore[arg-type]


def merge(counts: Iterable[BacktrackConditions]) -> BacktrackConditions:
    total = BacktrackConditions()
    for c in counts:
        for name, value in asdict(c).items():
            setattr(total, name, getattr(total, name) + value)
    return total
