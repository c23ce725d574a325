"""avg@n, maj@n and the unbiased pass@k against hand-computed and brute-force values."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astro_core.evaluation.metrics import answer_key, majority_correct, pass_at_k, score_problem


def brute_pass_at_k(outcomes: list[bool], k: int) -> float:
    """The share of k-subsets of the samples that hold a correct one (the definition)."""
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_hand_computed() -> None:
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(16, 3, 1) == pytest.approx(3 / 16)  # pass@1 is the correct share
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 3, 2) == 1.0
    assert pass_at_k(16, 1, 8) == pytest.approx(1 - math.comb(15, 8) / math.comb(16, 8))


@given(st.lists(st.booleans(), min_size=1, max_size=10), st.data())
def test_pass_at_k_is_the_share_of_subsets_with_a_correct_sample(
    outcomes: list[bool], data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, len(outcomes)))
    assert pass_at_k(len(outcomes), sum(outcomes), k) == pytest.approx(brute_pass_at_k(outcomes, k))


def test_pass_at_k_rejects_impossible_counts() -> None:
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError, match="pass@k"):
            pass_at_k(n, c, k)


def test_majority_groups_correct_answers_and_breaks_ties_by_first_sample() -> None:
    # "1/2" and "0.5" are both correct: one group of two beats the single wrong answer
    assert majority_correct(["\\frac{1}{2}", "0.5", "3"], [True, True, False])
    # two votes for the same wrong answer (written two ways) beat one correct answer
    assert not majority_correct(["3", "7", "\\left( 3 \\right)"], [False, True, False])
    assert not majority_correct(["3", "7", " 3 "], [False, True, False])
    # a tie goes to the group seen first
    assert majority_correct(["7", "3"], [True, False])
    assert not majority_correct(["3", "7"], [False, True])
    # samples without an answer do not vote; none at all is not a majority
    assert majority_correct(["", "", "7"], [False, False, True])
    assert not majority_correct(["", ""], [False, False])


def test_answer_key_ignores_spacing_and_sizing() -> None:
    assert answer_key("\\left( 3, \\dfrac{\\pi}{2} \\right)") == answer_key("(3,\\frac{\\pi}{2})")
    assert answer_key("$12$") == "12"


def test_score_problem() -> None:
    score = score_problem("p", ["4", "3", "3", "5"], [True, False, False, False], [1, 2, 4])
    assert (score.n, score.correct, score.accuracy, score.majority) == (4, 1, 0.25, False)
    assert score.pass_at == pytest.approx({1: 0.25, 2: 0.5, 4: 1.0})
