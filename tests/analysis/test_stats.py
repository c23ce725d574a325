"""Pearson r and its p-value equal scipy's on the same numbers."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats

from astro_core.analysis import pearson

values = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(values, values), min_size=3, max_size=30))
def test_r_and_p_equal_scipy(points: list[tuple[float, float]]) -> None:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assume(max(xs) - min(xs) > 1e-3 and max(ys) - min(ys) > 1e-3)
    ours = pearson(xs, ys)
    reference = stats.pearsonr(xs, ys)
    assert ours.r == pytest.approx(float(reference.statistic), abs=1e-9)
    # at |r| = 1 up to rounding, p swings between 0 and ~1e-8 on the last bit of r
    assume(abs(float(reference.statistic)) < 1 - 1e-9)
    assert ours.p == pytest.approx(float(reference.pvalue), rel=1e-6, abs=1e-12)


def test_the_papers_setting_backtracks_vs_accuracy() -> None:
    backtracks = [0.4, 0.9, 1.3, 1.2, 2.0, 2.4]
    accuracy = [0.70, 0.72, 0.75, 0.78, 0.80, 0.82]
    ours = pearson(backtracks, accuracy)
    reference = stats.pearsonr(backtracks, accuracy)
    assert (ours.n, ours.defined, ours.reason) == (6, True, "")
    assert ours.r == pytest.approx(reference.statistic) and ours.p == pytest.approx(
        reference.pvalue
    )


def test_undefined_cases_say_why() -> None:
    assert pearson([1, 2], [3, 4]).reason == "needs at least 3 checkpoints, got 2"
    assert not pearson([1, 2], [3, 4]).defined
    assert pearson([1, 1, 1], [1, 2, 3]).reason == "x is constant across the checkpoints"
    assert pearson([1, 2, 3], [5, 5, 5]).reason == "y is constant across the checkpoints"
    assert pearson([1, 2, float("nan")], [1, 2, 3]).reason == "a value is not a finite number"
    with pytest.raises(ValueError, match="3 x values but 2 y values"):
        pearson([1, 2, 3], [1, 2])


def test_perfect_lines() -> None:
    assert (pearson([1, 2, 3], [2, 4, 6]).r, pearson([1, 2, 3], [2, 4, 6]).p) == (1.0, 0.0)
    assert pearson([1, 2, 3, 4], [4, 3, 2, 1]).r == -1.0
