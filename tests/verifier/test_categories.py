"""Answer categories, each a table of equal and not-equal pairs (docs/verifier.md has the
rules). Every pair is checked twice: as a boxed answer in a sentence and as a bare response
(the whole response is the answer), so extraction and equivalence are both exercised.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from astro_core.answers import check
from astro_core.answers.notation import repeating_value, rewrite_notation
from astro_core.protocols import VerifyItem

Case = tuple[str, str, bool]  # (gold, answer, equal)

ROUNDED_DECIMALS: list[Case] = [
    # a decimal answer is exact: a rounding of a non-terminating gold is not the gold
    (r"\frac{1}{3}", "0.33", False),
    (r"\frac{1}{3}", "0.333", False),
    (r"\frac{2}{3}", "0.67", False),
    (r"\frac{5}{7}", "0.714", False),
    (r"\sqrt{2}", "1.414", False),
    (r"\pi", "3.14", False),
    (r"\pi", "3.142", False),
    (r"2\sqrt{3}", "3.46", False),
    (r"e^2", "7.389", False),
    (r"\frac{\pi}{4}", "0.785", False),
    # exact when the decimal is the exact value
    (r"\frac{1}{8}", "0.125", True),
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac{3}{4}", "0.750", True),
    (r"\frac{1}{8}", "0.13", False),
    # a decimal gold is itself a rounding: an exact answer that rounds to it counts
    ("0.33", r"\frac{1}{3}", True),
    ("3.14", r"\pi", True),
    ("1.41", r"\sqrt{2}", True),
    ("0.13", r"\frac{1}{8}", True),
    ("0.71", r"\frac{\sqrt{2}}{2}", True),
    ("0.33", r"\frac{2}{3}", False),
    ("3.14", r"\frac{47}{15}", False),  # 3.1333...
    ("0.5", r"\frac{4}{9}", False),  # one significant digit: exact only
    # two decimals are compared exactly
    ("0.33", "0.333", False),
    ("2.5", "2.50", True),
    # six places or more: a numeric evaluation, equal when it agrees to 6 places
    (r"\frac{1}{12}", "0.0833333333333333", True),
    (r"\sqrt{17}", "4.12310562561766", True),
    (r"\frac{1}{3}", "0.333333", True),
    (r"\frac{1}{3}", "0.33333", False),
    (r"\sqrt{17}", "4.123106", True),
    (r"\sqrt{17}", "4.123116", False),
]

POWERS_OF_TEN: list[Case] = [
    (r"10^{-3}", "0.001", True),
    ("0.001", r"10^{-3}", True),
    (r"1\times10^{-2}", "0.01", True),
    (r"5 \cdot 10^{-4}", "0.0005", True),
    ("0.0005", r"5 \cdot 10^{-4}", True),
    (r"2.5\times10^{-3}", "0.0025", True),
    (r"10^{-2}", r"\frac{1}{100}", True),
    (r"4 \times 10^{-2}", r"\frac{1}{25}", True),
    (r"3\times 10^{5}", "300000", True),
    (r"1.2 \times 10^{3}", "1200", True),
    (r"10^{-6}", "0.000001", True),
    (r"10^{-3}", "0.01", False),
    (r"5 \times 10^{-4}", "0.005", False),
    (r"1.5 \times 10^{-3}", "0.015", False),
    (r"10^{-2}", "0.1", False),
    (r"3\times 10^{5}", "30000", False),
]

SCIENTIFIC_E: list[Case] = [
    ("0.0005", "5e-4", True),
    (r"6.02 \times 10^{23}", "6.02e23", True),
    ("1200", "1.2E+3", True),
    (r"1.5\times10^{-3}", "1.5e-3", True),
    ("0.0005", "5e-3", False),
    ("1200", "1.2e2", False),
]

MATRICES: list[Case] = [
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix}-1\\0\\3\end{pmatrix}", r"\begin{pmatrix}-1\\0\\3\end{pmatrix}", True),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", True),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", True),
    (r"\begin{pmatrix}\frac12\\-3\end{pmatrix}", r"\begin{pmatrix}0.5\\-3\end{pmatrix}", True),
    (r"\begin{pmatrix} 2 \\ -1 \end{pmatrix}", "(2,-1)", True),  # a vector as a tuple
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1\\3\end{pmatrix}", False),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}2\\1\end{pmatrix}", False),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", "2", False),  # not just the last entry
    (r"\begin{pmatrix}1\\2\\3\end{pmatrix}", r"\begin{pmatrix}1&2&3\end{pmatrix}", False),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&2\\3&5\end{pmatrix}", False),
    (r"\begin{pmatrix} 2 \\ -1 \end{pmatrix}", "(-1,2)", False),
]

REPEATING_DECIMALS: list[Case] = [
    (r"\frac{1}{3}", r"0.\overline{3}", True),
    (r"0.\overline{3}", r"\frac{1}{3}", True),
    (r"\frac{1}{6}", r"0.1\overline{6}", True),
    (r"\frac{1}{7}", r"0.\overline{142857}", True),
    (r"\frac{4}{11}", r"0.\overline{36}", True),
    (r"1.\overline{27}", r"\frac{14}{11}", True),
    (r"0.\overline{9}", "1", True),
    (r"\frac{1}{3}", r"0.\bar{3}", True),
    (r"\frac{1}{3}", r"0.\dot{3}", True),
    (r"\frac{1}{7}", r"0.\dot{1}4285\dot{7}", True),
    (r"-\frac{2}{3}", r"-0.\overline{6}", True),
    (r"\frac{1}{3}", r".\overline{3}", True),
    (r"\frac{1}{3}", r"0.\overline{6}", False),
    (r"\frac{1}{6}", r"0.\overline{16}", False),
    (r"\frac{4}{11}", r"0.\overline{63}", False),
    (r"0.\overline{3}", "0.33", False),
    (r"0.\overline{3}", "0.3", False),
    (r"\frac{1}{7}", r"0.\overline{142856}", False),
]

IMAGINARY_UNIT: list[Case] = [
    ("i", r"\sqrt{-1}", True),
    ("-1", "i^2", True),
    ("i", "i^5", True),
    ("-i", "i^3", True),
    ("1", "i^4", True),
    ("0", "i^2+1", True),
    ("2i", r"\sqrt{-4}", True),
    ("3+4i", "4i+3", True),
    ("3+4i", r"3+4\mathrm{i}", True),
    (r"2 - i", r"2 - \mathrm{i}", True),
    (r"2 - i", r"2 - \text{i}", True),
    (r"\frac{1}{2}+\frac{1}{2}i", r"\frac{1+i}{2}", True),
    ("-1+i", "i-1", True),
    ("5", "(2+i)(2-i)", True),
    (r"\{1+i, 1-i\}", "1-i, 1+i", True),
    ("1", "i^2", False),
    ("i", "1", False),
    ("i", "-i", False),
    ("3+4i", "3-4i", False),
    ("3+4i", "4+3i", False),
    (r"\frac{1}{2}+\frac{1}{2}i", r"\frac{1-i}{2}", False),
    ("-1+i", "1-i", False),
    ("6 - 5i", "y = 6 - 5i", True),  # an assignment with a complex value stays an equation
    ("6 - 5i", "z = 6 + 5i", False),
    ("(1+i, 2)", "x = 1+i, y = 2", True),
    ("(1+i, 2)", "(1+i, 2)", True),  # a pair with a complex entry, not an interval
    ("(1+i, 2)", "(2, 1+i)", False),
    ("(1+i, 2)", "(1-i, 2)", False),
]

BARE_TEXT_AND_LETTERS: list[Case] = [
    (r"\text{Monday}", "Monday", True),
    ("Monday", "monday", True),
    (r"\text{(C)}", "C", True),
    (r"\text{(C)}", "(C)", True),
    (r"\textbf{(C)}", "C", True),
    ("C", r"\text{(C)}", True),
    ("B", "B", True),
    ("B", "B.", True),
    (r"\text{east}", "east", True),
    (r"\text{no solution}", "no solution", True),
    ("A", "A) 5", True),
    ("E", "(E) none of these", True),
    ("B", r"\left(B\right)", True),
    ("B", r"\left(C\right)", False),
    ("A", "B) 5", False),
    (r"\text{Monday}", "Tuesday", False),
    (r"\text{(C)}", "D", False),
    ("B", "C", False),
    (r"\text{yes}", "no", False),
    (r"\text{odd}", "even", False),
]

PERCENT: list[Case] = [
    (r"25\%", "25", True),
    (r"25\%", "25 percent", True),
    ("25", r"25\%", True),
    (r"12.5\%", r"\frac{25}{2}\%", True),
    (r"25\%", "0.25", False),  # no x100 outside a percent problem
    (r"25\%", r"26\%", False),
    # a percent answer is also the value it writes: 25% is 1/4
    (r"\frac{1}{4}", r"25\%", True),
    ("0.125", r"12.5\%", True),
    (r"\frac{2}{5}", r"40 \text{ percent}", True),
    (r"\frac{1}{3}", r"33\frac{1}{3}\%", True),
    (r"\frac{1}{3}", r"33.333333\%", True),  # six places: a numeric evaluation
    (r"\frac{1}{3}", r"33.33\%", False),  # a decimal answer is exact
    (r"\frac{1}{4}", r"4\%", False),
    (r"\frac{2}{5}", r"41\%", False),
    ("0.4", r"4\%", False),
]

UNITS_AND_TEXT: list[Case] = [
    ("5", r"5 \text{ cm}", True),
    ("5", r"5\text{cm}", True),
    ("5", r"5 \mbox{ meters}", True),
    (r"5\text{ cm}", "5", True),
    ("12", r"\$12", True),
    (r"\$12.50", "12.5", True),
    ("30", r"30\,\text{min}", True),
    ("7", r"\text{7 days}", True),
    ("18", r"18 \text{ square units}", True),
    ("5", "5 cm^2", True),
    ("12", "12 square units", True),
    ("3", "3 hours", True),
    ("5", "5 x", False),  # a variable is not a unit
    ("12", "13 square units", False),
    ("5", r"6 \text{ cm}", False),
    (r"\$12.50", "12.05", False),
]

INTERVALS: list[Case] = [
    ("[2, 5)", "[2,5)", True),
    (r"(-\infty, 3]", r"x \le 3", True),
    (r"(0,1)\cup(2,3)", r"(2,3)\cup(0,1)", True),
    (r"(-\infty,-2)\cup(2,\infty)", "|x|>2", True),
    (r"(-\infty,-1)\cup(1,\infty)", r"x < -1 \text{ or } x > 1", True),
    (r"x \geq 3", r"[3, \infty)", True),
    (r"(2, \infty)", r"\{x \mid x > 2\}", True),
    (r"(2, \infty)", r"\{x : x > 2\}", True),
    (r"\emptyset", r"\varnothing", True),
    (r"\emptyset", r"\{\}", True),
    (r"\mathbb{R}", r"(-\infty, \infty)", True),
    (r"\text{all real numbers}", r"\mathbb{R}", True),
    (r"(2, \infty)", r"\{x \mid x \ge 2\}", False),
    (r"\emptyset", r"\{0\}", False),
    ("-1 < x < 1", "(-1,1)", True),
    ("[2, 5)", "(2,5)", False),
    ("[2, 5)", "[2,5]", False),
    (r"(-\infty, 3)", r"x \le 3", False),
    (r"(0,1)\cup(2,3)", r"(0,1)\cup[2,3)", False),
]

SETS_AND_TUPLES: list[Case] = [
    (r"\{1,2,3\}", r"\{3,2,1\}", True),
    ("1, 2, 3", "3, 2, 1", True),
    ("-2, 3", "x=-2, x=3", True),
    ("-2, 3", r"x=3 \text{ or } x=-2", True),
    (r"\{-2, 3\}", r"-2 \text{ and } 3", True),
    ("(2, -3)", "(2,-3)", True),
    ("(1,2,3)", "(3,2,1)", False),
    ("1, 2, 3", "1, 2", False),
    ("(2, -3)", "(-3, 2)", False),
    (r"\{1,2,3\}", r"\{1,2,4\}", False),
    # a list of assignments keeps its written order; its names must match another list's
    ("(15,-29)", "x=15, y=-29", True),
    ("(15,-29)", "x=-29, y=15", False),
    ("(8,-2)", "(a, b) = (8, -2)", True),
    ("(8,-2)", "(a, b) = (-2, 8)", False),
    ("x=3, y=4", "y=4, x=3", True),
    ("x=3, y=4", "(x, y) = (3, 4)", True),
    ("x=3, y=4", "x=4, y=3", False),
    ("x=3, y=4", "(x, y) = (4, 3)", False),
    ("a=2, b=-3", "a=-3, b=2", False),
    # a bare list is read in its written order against a tuple gold; a gold list has none
    ("(6,31,-1)", "6, 31, -1", True),
    ("(6,31,-1)", "-1, 31, 6", False),
    ("(1,2,3)", "3, 2, 1", False),
    ("1, 2, 3", "(3, 2, 1)", True),
    ("3, 5, 7", r"\{7, 5, 3\}", True),
]

DEGREES: list[Case] = [
    (r"30^\circ", "30", True),
    ("30", r"30^{\circ}", True),
    (r"30^\circ", "30°", True),
    ("45", r"45\text{ degrees}", True),
    (r"90^\circ", r"90 \degree", True),
    (r"30^\circ", r"31^\circ", False),
    (r"30^\circ", r"\frac{\pi}{6}", False),
]

FRACTION_FORMS: list[Case] = [
    (r"\frac{3}{4}", r"\dfrac{3}{4}", True),
    (r"\frac{3}{4}", r"\tfrac34", True),
    (r"\frac{3}{4}", "3/4", True),
    (r"\frac{3}{4}", r"\frac{6}{8}", True),
    (r"-\frac{3}{4}", r"\frac{3}{-4}", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"\frac{3}{4}", r"\frac{4}{3}", False),
    (r"\frac{3}{4}", r"-\dfrac{3}{4}", False),
]

MIXED_NUMBERS: list[Case] = [
    (r"2\frac{1}{2}", r"\frac{5}{2}", True),
    (r"\frac{5}{2}", r"2\frac{1}{2}", True),
    (r"\frac{5}{2}", r"2 \frac{1}{2}", True),
    (r"3\frac{1}{4}", "3.25", True),
    (r"\frac{7}{3}", r"2\tfrac{1}{3}", True),
    (r"2\frac{1}{2}", "1", False),
    (r"2\frac{1}{2}", r"\frac{2}{2}", False),
]

THOUSANDS: list[Case] = [
    ("1000000", "1,000,000", True),
    ("1000000", "1{,}000{,}000", True),
    ("1000000", r"1\,000\,000", True),
    ("1234", "1 234", True),
    ("1234.5", "1,234.5", True),
    ("12345", r"12,\!345", True),
    ("1234", "1,235", False),
    ("32349", "32, 349", False),  # a list of two numbers
]

PLUS_MINUS: list[Case] = [
    (r"1 \pm \sqrt{2}", r"1+\sqrt{2}, 1-\sqrt{2}", True),
    (r"\pm 3", "3, -3", True),
    (r"2 \pm i", "2+i, 2-i", True),
    (r"x = \pm 2", r"\pm 2", True),
    (r"\pm 3", "3", False),
    (r"1 \pm \sqrt{2}", r"1+\sqrt{2}", False),
    # a \pm inside a fraction: the set of both values
    (r"\frac{1\pm\sqrt{5}}{2}", r"\frac{1+\sqrt5}{2}, \frac{1-\sqrt5}{2}", True),
    (r"\frac{1\pm\sqrt{5}}{2}", r"\frac{1-\sqrt{5}}{2}, \frac{1+\sqrt{5}}{2}", True),
    (r"\frac{-3+\sqrt{17}}{4}, \frac{-3-\sqrt{17}}{4}", r"\frac{-3\pm\sqrt{17}}{4}", True),
    (r"x=\frac{-3\pm\sqrt{17}}{4}", r"\frac{-3\pm\sqrt{17}}{4}", True),
    (r"\frac{-3\pm\sqrt{17}}{4}", r"x = \frac{-3\mp\sqrt{17}}{4}", True),
    (r"\frac{1\pm\sqrt{5}}{2}", r"\frac{1+\sqrt5}{2}", False),
    (r"\frac{-3\pm\sqrt{17}}{4}", r"\frac{3\pm\sqrt{17}}{4}", False),
    (r"\frac{1\pm\sqrt{5}}{2}", r"\frac{1\pm\sqrt{3}}{2}", False),
]

EQUATIONS: list[Case] = [
    ("x=5", "5", True),
    ("5", "x = 5", True),
    ("y = 2x+3", "2x+3", True),
    ("y=2x+3", "y = 3 + 2x", True),
    ("a=2, b=3", "(2,3)", True),
    ("x^2+y^2=25", "y^2+x^2=25", True),
    ("2x+4y-3=0", r"y=-\frac{1}{2}x+\frac{3}{4}", True),
    ("x=5", "x=6", False),
    ("y = 2x + 3", "y=2x-3", False),
    ("7 = 11a + c", "11a + c", False),
]

INEQUALITIES: list[Case] = [
    ("x > 3", "3 < x", True),
    ("x < 1", "-x > -1", True),
    (r"a \ge 2", r"a\geq2", True),
    ("x > 3", r"x \ge 3", False),
    (r"x \le 5", "x < 5", False),
    ("x < 1", "x > -1", False),
]

UNICODE: list[Case] = [
    (r"\pi", "π", True),
    (r"\frac{\pi}{2}", "π/2", True),
    (r"\sqrt{2}", "√2", True),
    (r"2\sqrt{3}", "2√3", True),
    (r"\sqrt{x+1}", "√(x+1)", True),
    (r"\frac{1}{2}", "½", True),
    (r"\frac{5}{2}", "2½", True),
    (r"-\frac{1}{2}", "−1/2", True),
    (r"(-\infty, 2)", "(-∞, 2)", True),
    (r"x^2+1", "x²+1", True),
    (r"x \le 3", "x ≤ 3", True),
    (r"\pi", "2π", False),
    (r"\sqrt{2}", "√3", False),
    (r"\frac{1}{2}", "¼", False),
    (r"x^2+1", "x³+1", False),
    (r"(-\infty, 2)", "(-∞, 2]", False),
]

BARE_FORMULAS: list[Case] = [
    ("x+y", "y+x", True),
    ("a^2-b^2", "(a-b)(a+b)", True),
    ("2x", "x*2", True),
    ("x+y", "x-y", False),
    ("a^2-b^2", "(a-b)^2", False),
]

TABLES = {
    "rounded decimals": ROUNDED_DECIMALS,
    "powers of ten": POWERS_OF_TEN,
    "e-notation": SCIENTIFIC_E,
    "matrices": MATRICES,
    "repeating decimals": REPEATING_DECIMALS,
    "imaginary unit": IMAGINARY_UNIT,
    "bare text and letters": BARE_TEXT_AND_LETTERS,
    "percent": PERCENT,
    "units and text": UNITS_AND_TEXT,
    "intervals": INTERVALS,
    "sets and tuples": SETS_AND_TUPLES,
    "degrees": DEGREES,
    "fraction forms": FRACTION_FORMS,
    "mixed numbers": MIXED_NUMBERS,
    "thousands separators": THOUSANDS,
    "plus-minus": PLUS_MINUS,
    "equations": EQUATIONS,
    "inequalities": INEQUALITIES,
    "unicode": UNICODE,
    "bare formulas": BARE_FORMULAS,
}
CASES = [
    pytest.param(gold, answer, equal, id=f"{name}: {gold} vs {answer}")
    for name, table in TABLES.items()
    for gold, answer, equal in table
]


def test_every_table_has_both_verdicts() -> None:
    for name, table in TABLES.items():
        assert {equal for _, _, equal in table} == {True, False}, name


@pytest.mark.parametrize(("gold", "answer", "equal"), CASES)
def test_boxed_answer(gold: str, answer: str, equal: bool) -> None:
    verdict = check(VerifyItem(f"So the answer is $\\boxed{{{answer}}}$.", gold))
    assert verdict.correct is equal, verdict


@pytest.mark.parametrize(("gold", "answer", "equal"), CASES)
def test_bare_response(gold: str, answer: str, equal: bool) -> None:
    """The whole response is the answer (no box, no "answer is")."""
    verdict = check(VerifyItem(answer, gold))
    assert verdict.correct is equal, verdict


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (("", "0", "", "3"), Fraction(1, 3)),
        (("", "0", "1", "6"), Fraction(1, 6)),
        (("", "1", "", "27"), Fraction(14, 11)),
        (("-", "2", "5", "0"), Fraction(-5, 2)),
        (("", "0", "", "9"), Fraction(1)),
        (("", "", "", "142857"), Fraction(1, 7)),
    ],
)
def test_repeating_value(text: tuple[str, str, str, str], value: Fraction) -> None:
    assert repeating_value(*text) == value


JOINED_SPANS: list[tuple[str, str, bool]] = [
    # no box and no "answer is": math spans that only ",", "and" or "or" separate are one
    # answer (as math-verify reads them)
    ("-2, 1", "The roots are $x=-2$ or $x=1$.", True),
    ("-2, 1", "The roots are $1$, $-2$.", True),
    ("-2, 1", "The roots are $x=-2$ and $x=3$.", False),
    ("(3, 4)", "We get $x = 3$ and $y = 4$.", True),
    ("(3, 4)", "We get $x = 4$ and $y = 4$.", False),
    (r"\pm 2", "So $x = 2$ or $x = -2$.", True),
    ("2", "So $x = 2$ or $x = -2$.", False),
    ("2", "$x^2 = 4$, so $x = 2$.", True),  # words between: the last span only
]


@pytest.mark.parametrize(("gold", "response", "equal"), JOINED_SPANS)
def test_joined_math_spans(gold: str, response: str, equal: bool) -> None:
    verdict = check(VerifyItem(response, gold))
    assert verdict.correct is equal, verdict


def test_notation_rewrites_only_what_it_knows() -> None:
    assert rewrite_notation(r"0.\overline{3}^2") == r"(\frac{1}{3})^2"
    assert rewrite_notation(r"1 - 0.\overline{3}") == r"1 - \frac{1}{3}"
    assert rewrite_notation(r"1-0.\overline{3}") == r"1-\frac{1}{3}"
    assert rewrite_notation(r"\overline{AB}") == r"\overline{AB}"  # a segment
    assert rewrite_notation(r"\overline{142857}") == r"\overline{142857}"  # digits, no point
    assert rewrite_notation("2e") == "2e" and rewrite_notation("x^{2e-1}") == "x^{2e-1}"
    assert rewrite_notation(r"\text{in}") == r"\text{in}"
