"""Scores of n samples per problem: avg@n (pass@1), maj@n and the unbiased pass@k.

- avg@n: the fraction of a problem's samples that are correct, averaged over problems. It is
  the paper's pass@1 (an unbiased estimate of single-sample accuracy).
- pass@k: the chance that at least one of k samples drawn without replacement from the n is
  correct, 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), averaged over problems.
- maj@n: whether the most frequent answer among the n samples is correct. Answers are grouped
  by their normalised text, and every correct answer belongs to one group (the verifier found
  them all equal to the gold answer, so they are equal to each other); samples without an
  answer do not vote; a tie goes to the group whose first sample came first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

_LATEX_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\s+|\$")


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k of one problem with `correct` of `n` samples correct."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(
            f"pass@k needs 0 <= correct <= n and 1 <= k <= n (n={n}, c={correct}, k={k})"
        )
    if n - correct < k:
        return 1.0
    # C(n-c, k) / C(n, k) as a product, which neither overflows nor loses precision.
    return 1.0 - math.prod((n - correct - i) / (n - i) for i in range(k))


def answer_key(answer: str) -> str:
    """The text two answers must share to vote together (whitespace and sizing dropped)."""
    return _LATEX_NOISE.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


def majority_correct(answers: Sequence[str], correct: Sequence[bool]) -> bool:
    """maj@n of one problem: is the most voted answer group the correct one?"""
    votes: dict[str, list[int]] = {}  # group -> [count, first sample index]
    for index, (answer, ok) in enumerate(zip(answers, correct, strict=True)):
        if not answer and not ok:
            continue
        key = "\x00correct" if ok else answer_key(answer)
        entry = votes.setdefault(key, [0, index])
        entry[0] += 1
    if not votes:
        return False
    winner = min(votes.items(), key=lambda item: (-item[1][0], item[1][1]))
    return winner[0] == "\x00correct"


@dataclass(frozen=True)
class ProblemScore:
    """One problem's scores over its n samples."""

    problem_id: str
    n: int
    correct: int
    majority: bool
    pass_at: dict[int, float]

    @property
    def accuracy(self) -> float:
        return self.correct / self.n


def score_problem(
    problem_id: str, answers: Sequence[str], correct: Sequence[bool], ks: Sequence[int]
) -> ProblemScore:
    n, c = len(correct), sum(correct)
    return ProblemScore(
        problem_id,
        n,
        c,
        majority_correct(answers, correct),
        {k: pass_at_k(n, c, k) for k in ks if k <= n},
    )
