"""The exact fast paths (fast.py) and the two-stage LaTeX parsing: each decides like the
full path, and each has cases that must be equal and cases that must not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astro_core.answers import check, parse_answer
from astro_core.answers.compare import answers_equal
from astro_core.answers.fast import plain_number, quick_verdict
from astro_core.protocols import VerifyItem

# (gold, answer, equal) decided by quick_verdict, grouped by the fast path that decides them.
DECIDED = [
    # identical normalised text
    (r"\frac{1}{2}", r"\dfrac{1}{2}", True),
    (r"\text{Evelyn}", "Evelyn", True),
    # choice letters
    ("B", r"\textbf{(B)}", True),
    (r"\text{(C)}", "(C)", True),
    ("(B)", "C", False),
    ("B", "(B) 27", True),
    # integers: leading zeros, thousands separators, signs
    ("025", "25", True),
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("7425000", "7,425,000", True),
    ("-3", "-03", True),
    ("25", "26", False),
    ("10000", "10001", False),
    ("-3", "3", False),
    # decimals against integers and fractions: exact
    ("1.0", "1", True),
    ("27.0", "27", True),
    ("0.1", "1/10", True),
    (r"\frac{1}{10}", "0.1", True),
    ("0.5", r"\frac12", True),
    ("-0.25", r"-\frac{1}{4}", True),
    (r"\frac{-1}{4}", "-0.25", True),
    ("1/4", "0.2", False),
    ("0.1", "0.14", False),
    ("1.5", "1.50", True),
    ("2.5", "2.05", False),
    # a decimal answer is exact: a rounded value of an exact gold is not the gold
    ("1/3", "0.333", False),
    ("1/3", "0.33", False),
    ("1/3", "0.3", False),
    (r"\frac{8}{3}", "2.6667", False),
    ("1/3", "0", False),
    # a decimal gold is a rounding: an exact answer that rounds to it counts
    ("0.333", "1/3", True),
    ("0.33", r"\frac{1}{3}", True),
    ("2.6667", r"\frac{8}{3}", True),
    ("2.6666", r"\frac{8}{3}", False),  # not correctly rounded
    ("0.13", r"\frac{1}{8}", True),  # 0.125 rounds half up
    ("0.3", "1/3", False),  # one significant digit: no rounding
    ("0.33", "0.333", False),  # two decimals are compared exactly
    # six or more places: a numeric evaluation, agreeing to 6 places (math-verify's rule)
    (r"\frac{1}{12}", "0.0833333333333333", True),
    ("1/3", "0.333333", True),
    ("1/3", "0.33333", False),
    ("1/3", "0.333334", False),
    ("0.3333333", "0.333333", True),
    # percent and degree marks are dropped; no x100 outside percent problems
    (r"10\%", "10", True),
    (r"10\%", "0.1", False),
    # a percent answer for a gold without one is also its value
    (r"\frac{1}{4}", r"25\%", True),
    ("0.125", r"12.5\%", True),
    ("1/3", r"33.333333\%", True),
    ("1/3", r"33.33\%", False),
    ("0.4", r"4\%", False),
    (r"90^\circ", "90", True),
]


@pytest.mark.parametrize(("gold", "pred", "equal"), DECIDED)
def test_fast_path_decides(gold: str, pred: str, equal: bool) -> None:
    assert quick_verdict(gold, pred) is equal


@pytest.mark.parametrize(("gold", "pred", "equal"), DECIDED)
def test_full_path_agrees_with_fast_path(gold: str, pred: str, equal: bool) -> None:
    """The full (parser + sympy) path gives the same verdicts: one set of rules."""
    assert answers_equal(parse_answer(gold), parse_answer(pred)) is equal


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        ("32349", "32, 349"),  # a list of two numbers, not a thousands separator
        (r"\sqrt{2}", "1.41"),  # not a plain number
        ("x = 3", "3"),
        ("1e3", "1000"),  # exponents are never read here (no huge powers of ten)
        ("1" * 80, "1" * 80 + "0"),  # longer than the fast path reads
        ("1/0", "1"),
    ],
)
def test_fast_path_leaves_the_rest_to_the_full_path(gold: str, pred: str) -> None:
    assert quick_verdict(gold, pred) is None


def test_percent_problems_take_the_full_path() -> None:
    assert quick_verdict(r"10\%", "0.1", percent_problem=True) is None
    assert check(VerifyItem(r"\boxed{0.1}", r"10\%", "What percent is it?")).correct
    assert not check(VerifyItem(r"\boxed{0.1}", r"10\%", "How many are there?")).correct


def test_plain_number_values() -> None:
    assert plain_number("1,000") is not None and plain_number("1,000").value == 1000  # type: ignore[union-attr]
    assert plain_number(r"\left. -\frac{3}{6} \right.") is None
    assert plain_number("2,5") is None
    assert plain_number(".5") is not None and plain_number(".5").value * 2 == 1  # type: ignore[union-attr]


def test_two_stage_parsing_gives_the_full_ll_parse(shared_data: Path) -> None:
    """SLL prediction with an LL retry returns what LL alone returns (ANTLR's guarantee),
    checked on answers of every shape, including ones SLL cannot parse alone."""
    from latex2sympy2_extended import latex2sympy, latex2sympy2

    from astro_core.answers.parse import install_two_stage_parsing

    corpus = [
        "x^2/4 + y^2/3 = 1",  # SLL reports an error here: parsed again with LL
        r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right]",
        r"a_3 = 2, a_{37} = 19",
        r"15\mbox{ cm}^2",
        r"\begin{pmatrix}\frac{1}{3x^{2/3}}&0\\-\sin(x)&0\end{pmatrix}",
    ]
    for line in (shared_data / "aime24.jsonl").read_text().splitlines()[:15]:
        corpus.append(str(json.loads(line)["answer"]))
    for line in (shared_data / "math500.jsonl").read_text().splitlines()[:60]:
        corpus.append(json.loads(line)["answer"])

    def parse_all() -> list[str]:
        out = []
        for latex in corpus:
            try:
                out.append(str(latex2sympy(latex)))
            except Exception as exc:
                out.append(f"error {type(exc).__name__}")
        return out

    converter = latex2sympy2._Latex2Sympy
    saved = converter.create_parser, converter.parse, converter.__dict__.get("_astro_two_stage")
    ll = parse_all()
    try:
        install_two_stage_parsing()
        assert converter.create_parser is not saved[0]
        two_stage = parse_all()
    finally:  # this test process keeps plain LL parsing, as the benchmark's peer needs
        converter.create_parser, converter.parse = saved[0], saved[1]
        converter._astro_two_stage = saved[2] or False
    assert two_stage == ll
