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
    # a vector in angle brackets
    (r"\begin{pmatrix} 6 \\ -17 \end{pmatrix}", r"\langle 6, -17 \rangle", True),
    (r"\begin{pmatrix} 6 \\ -17 \end{pmatrix}", r"\left\langle 6,-17\right\rangle", True),
    (r"\begin{pmatrix} 6 \\ -17 \end{pmatrix}", r"\langle -17, 6 \rangle", False),
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
    (r"\text{east}", r"\displaystyle \text{east}", True),
    (r"\text{east}", r"\;\text{East}", True),
    (r"\text{east}", r"\displaystyle \text{west}", False),
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
    ("5", "5cm", True),  # a unit word of two letters or more, written close
    ("3.5", "3.5km", True),
    ("6", "5cm", False),
    ("5", "5t", False),  # one letter: perhaps a variable
    ("864", r"864\ \text{inches}^2", True),
    (r"12\pi", "12\\pi square units", True),
    (r"6\sqrt{2}", r"6\sqrt{2}\text{ cm}", True),
    (r"\frac{1}{2}", r"\frac12 \text{ hour}", True),
    ("5.4", r"5.4\text{¢}", True),
    ("12", r"12~\text{cm}", True),
    ("12", r"12 \mathrm{~cm}", True),
    ("9", "9 apples", True),
    (r"9 \text{ p.m.}", r"9\text{ p.m.}", True),
    (r"9 \text{ p.m.}", r"9 \text{ a.m.}", False),  # not a unit
    (r"\$18.90", r"18.90\$", True),
    (r"6\sqrt{2}", r"6\sqrt{3}\text{ cm}", False),
    (r"\$18.90", r"19.80\$", False),
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
    # a union of three or more, in any order; a set difference is the set it leaves
    (r"(0,1)\cup(2,3)\cup(4,5)\cup(6,\infty)", r"(6,\infty)\cup(4,5)\cup(2,3)\cup(0,1)", True),
    (r"(0,1)\cup(2,3)\cup(4,5)\cup(6,\infty)", r"(6,\infty)\cup(4,5]\cup(2,3)\cup(0,1)", False),
    (r"(-\infty, 2) \cup (3, \infty)", r"\mathbb{R} \setminus [2,3]", True),
    (r"(-\infty, 2) \cup (2, \infty)", r"\mathbb{R} \setminus \{2\}", True),
    (r"(-\infty, 2) \cup (3, \infty)", r"\mathbb{R} \setminus (2,3)", False),
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
    ("3, 5, 7", r"3 \text{, } 5 \text{, and } 7", True),
    # a list of words: the last word is an item, not a unit
    (r"\text{Devon}, \text{Ezra}", r"\text{Ezra} \text{ and } \text{Devon}", True),
    (r"\text{Devon}, \text{Ezra}", r"\text{Devon}, \text{Bob}", False),
    # a comma between digits is a list ("8,12": enter all values, separated by commas),
    # and a decimal comma only next to a decimal (THOUSANDS)
    ("8,12", "12, 8", True),
    ("0,1", "1, 0", True),
    ("-330,90", "90, -330", True),
    ("8,12", "8.12", True),
    ("8,12", "8, 13", False),
    ("0,1", "0.1, 1", False),
    # braces that only group the whole answer
    ("(2,4)", "{(2,4)}", True),
    (r"\text{Evelyn}", r"{\text{Evelyn}}", True),
    ("(2,4)", "{(2,5)}", False),
]

DEGREES: list[Case] = [
    (r"30^\circ", "30", True),
    ("30", r"30^{\circ}", True),
    (r"30^\circ", "30°", True),
    ("45", r"45\text{ degrees}", True),
    (r"90^\circ", r"90 \degree", True),
    (r"30^\circ", r"31^\circ", False),
    (r"30^\circ", r"\frac{\pi}{6}", False),
    (r"90^\circ", r"{90^\circ}", True),  # a brace is dropped only with the one it closes
    (r"\frac{270}7\text{ degrees}", r"\frac{270^\circ}{7}", True),
    (r"60^\circ, 120^\circ", r"60^\circ,120^\circ", True),  # a list, not 60,120
    (r"60^\circ, 120^\circ", "60120", False),
    (r"60^\circ, 120^\circ", r"60^\circ,100^\circ", False),
    # inside a trigonometric function a degree is pi/180
    (r"\sin 20^\circ", r"\cos 70^\circ", True),
    (r"\frac{1}{2}", r"\sin 30^\circ", True),
    (r"\sin 20^\circ", r"\sin 70^\circ", False),
    (r"\frac{1}{2}", r"\cos 30^\circ", False),
]

RADICALS: list[Case] = [
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\sqrt[3]{2}", r"\sqrt[3]2", True),
    (r"\sqrt[3]{2}", "2^{1/3}", True),
    (r"2\sqrt[3]{3}", r"\sqrt[3]{24}", True),
    (r"\sqrt[3]{2}", r"\sqrt{2}", False),
    (r"2\sqrt[3]{3}", r"\sqrt[3]{18}", False),
    (r"2\sqrt{2}", r"\sqrt{6}", False),
]

BASES: list[Case] = [
    # a numeral in a base: another base is another answer; without a base, its digits
    ("52_8", "52_{8}", True),
    ("52_8", "(52)_8", True),
    ("52_8", "52_{(8)}", True),
    ("52_8", "52", True),
    ("11011100_2", "(11011100)_{2}", True),
    ("52_8", "52_9", False),
    ("52_8", "52_{10}", False),
    ("4210_{5}", "4201_5", False),
    ("52_8", "53", False),
]

BOXES: list[Case] = [
    # a box inside the box is the answer (the test boxes each answer once more)
    ("B", r"\boxed{B}", True),
    (r"90^\circ", r"\boxed{90^\circ}", True),
    (r"\text{(C)}", r"\boxed{\text{(C)}}", True),
    ("B", r"\boxed{C}", False),
    (r"90^\circ", r"\boxed{\boxed{91^\circ}}", False),
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
    ("12345", r"12, \!345", True),  # a \! after the comma: still a thousands separator
    ("1234", "1,235", False),
    ("32349", "32, 349", False),  # a list of two numbers
    ("12345", r"12, \!346", False),
    # a decimal comma, next to a decimal
    ("1.22", "1,22", True),
    ("1,22", "1.22", True),
    ("1000.99", "1000,99", True),
    ("1,22", "1.23", False),
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
    # a \pm in one item of a list: both values are items
    (r"\{1\pm\sqrt{5},-2\}", r"x=-2, x = 1\pm\sqrt{5}", True),
    (r"\{1\pm\sqrt{5},-2\}", r"\frac{2\pm\sqrt{20}}{2}, -2", True),
    (r"\{1\pm\sqrt{5},-2\}", r"x=2, x = 1\pm\sqrt{5}", False),
    (r"\{1\pm\sqrt{5},-2\}", r"x=-2, x = 1+\sqrt{5}", False),
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
    # a letter at the end is a variable, never a unit
    (r"\sin^2 t", r"\sin^{2}t", True),
    ("2ab", r"2b \cdot a", True),
    ("5t", "5", False),
    ("x+5t", "x+5", False),
    (r"2\pi r h", r"2\pi r", False),
    ("2ab", "2", False),
    (r"\frac{1}{2} m", r"\frac{1}{2}", False),
    # an upright e is Euler's number
    ("e", r"\mathrm{e}", True),
    ("e^2", r"\mathrm{e}^2", True),
    ("e^2", r"\mathrm{e}^3", False),
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
    "bases": BASES,
    "radicals": RADICALS,
    "boxes": BOXES,
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


OPTION_PROBLEM = (
    "Find the curve defined by the equation \\[r^2 \\cos 2 \\theta = 4.\\](A) Line (B) Circle "
    "(C) Parabola (D) Ellipse (E) Hyperbola  Enter the letter of the correct option."
)
AMC_PROBLEM = (
    "Which equation has the largest solution $x$?  $\\textbf{(A)}\\ 3(1 + r)^x = 7\\qquad "
    "\\textbf{(B)}\\ 3(1 + r/10)^x = 7\\qquad \\textbf{(C)}\\ 3(1 + 2r)^x = 7$"
)
OPTION_VALUES: list[tuple[str, str, str, bool]] = [
    # a choice gold, answered with the option's text (the problem lists the options)
    (OPTION_PROBLEM, r"\text{(E)}", "Hyperbola", True),
    (OPTION_PROBLEM, r"\text{(E)}", r"\text{hyperbola}", True),
    (OPTION_PROBLEM, r"\text{(E)}", "(E) Hyperbola", True),
    (AMC_PROBLEM, r"\text{(B)}", "3(1 + r/10)^x = 7", True),
    (OPTION_PROBLEM, r"\text{(E)}", "Ellipse", False),
    (OPTION_PROBLEM, r"\text{(E)}", "(D) Hyperbola", False),
    (AMC_PROBLEM, r"\text{(B)}", "3(1 + r)^x = 7", False),
    ("Which is it, a line or a hyperbola?", r"\text{(E)}", "Hyperbola", False),  # no options
]


@pytest.mark.parametrize(("problem", "gold", "answer", "equal"), OPTION_VALUES)
def test_option_value_for_a_choice_gold(problem: str, gold: str, answer: str, equal: bool) -> None:
    verdict = check(VerifyItem(f"So the answer is $\\boxed{{{answer}}}$.", gold, problem))
    assert verdict.correct is equal, verdict


def test_notation_rewrites_only_what_it_knows() -> None:
    assert rewrite_notation(r"0.\overline{3}^2") == r"(\frac{1}{3})^2"
    assert rewrite_notation(r"1 - 0.\overline{3}") == r"1 - \frac{1}{3}"
    assert rewrite_notation(r"1-0.\overline{3}") == r"1-\frac{1}{3}"
    assert rewrite_notation(r"\overline{AB}") == r"\overline{AB}"  # a segment
    assert rewrite_notation(r"\overline{142857}") == r"\overline{142857}"  # digits, no point
    assert rewrite_notation("2e") == "2e" and rewrite_notation("x^{2e-1}") == "x^{2e-1}"
    assert rewrite_notation(r"\text{in}") == r"\text{in}"
