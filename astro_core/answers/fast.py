"""Exact fast paths that decide common answers without the LaTeX parser or sympy.

Parsing LaTeX (ANTLR) is most of a check's cost, and most answers are plain numbers or
letters. `quick_verdict` decides those with string rules and Python's `Fraction`, and returns
None for everything else (the full path in `verify.check` then decides). Its verdicts follow
the same rules as the full path (docs/verifier.md); tests/verifier/test_fast.py checks both
paths agree on every case it decides.

Decided here:
- the same normalised text (`\\dfrac12` and `\\frac{1}{2}`, `1,000` and `1000`): equal;
- a gold that is a choice letter (`(B)`): equal to the same letter only;
- two plain numbers (integers with leading zeros or thousands separators, decimals,
  `a/b`, `\\frac{a}{b}`): exact rational equality, and the decimal rule of
  `decimal_tolerance` (the one place that rule lives; `compare` uses it too).
A percent answer for a gold without one is also its value: `25\\%` = `1/4` = `0.25`.
Not decided here: percent problems whose numbers differ (the x100 rule lives in `compare`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from astro_core.answers.parse import MAX_ANSWER_CHARS, choice_letter, clean_answer, normalise_text

_MAX_DIGITS = 60  # longer numbers take the full path (no huge-integer work here)
_INTEGER = re.compile(r"[+-]?\d{1,60}")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3}){1,19}")
_DECIMAL = re.compile(r"[+-]?(?:\d{0,60}\.\d{1,60}|\d{1,60}\.)")
_SLASH = re.compile(r"(?P<sign>[+-]?)(?P<num>\d{1,60})/(?P<den>\d{1,60})")
_FRAC = re.compile(
    r"(?P<sign>[+-]?)\\frac(?:\{(?P<nsign>-?)(?P<num>\d{1,60})\}|(?P<num1>\d))"
    r"(?:\{(?P<den>\d{1,60})\}|(?P<den1>\d))"
)
_LAYOUT = re.compile(r"\\left|\\right|\\!|\\,|\\;|\s")


@dataclass(frozen=True)
class Number:
    """A plain number: its exact value, and for a written decimal its own precision."""

    value: Fraction
    decimal: Decimal | None = None  # set only when written with a decimal point


def plain_number(text: str) -> Number | None:
    """The number a cleaned answer is, when it is nothing but a number; else None."""
    if re.search(r"\s,|,\s", text):  # "32, 349" is a list of two numbers, not 32349
        return None
    s = _LAYOUT.sub("", text)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    if len(s) > 2 * _MAX_DIGITS + 16:
        return None
    if _INTEGER.fullmatch(s):
        return Number(Fraction(int(s)))
    if _THOUSANDS.fullmatch(s):
        return Number(Fraction(int(s.replace(",", ""))))
    if _DECIMAL.fullmatch(s):
        written = Decimal(s)
        return Number(Fraction(written), written)
    match = _SLASH.fullmatch(s)
    if match:
        sign = -1 if match["sign"] == "-" else 1
        if int(match["den"]) == 0:
            return None
        return Number(sign * Fraction(int(match["num"]), int(match["den"])))
    match = _FRAC.fullmatch(s)
    if match:
        sign = -1 if match["sign"] == "-" else 1
        sign *= -1 if match["nsign"] == "-" else 1
        den = int(match["den"] or match["den1"])
        if den == 0:
            return None
        return Number(sign * Fraction(int(match["num"] or match["num1"]), den))
    return None


# math-verify's float_rounding: a decimal with this many places is a numeric evaluation.
FLOAT_PLACES = 6


def _places(decimal: Decimal) -> int:
    exponent = decimal.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _significant(decimal: Decimal) -> int:
    return 0 if decimal == 0 else len(decimal.normalize().as_tuple().digits)


def decimal_tolerance(
    gold: Decimal | None, pred: Decimal | None, float_places: int = FLOAT_PLACES
) -> Fraction:
    """How far apart a gold and an answer may be and still count as equal, given the
    decimals they were written as (None: not written as a decimal). 0: exactly equal.

    - A decimal is exact: `0.33` is 33/100, never 1/3, and `1.414` is not sqrt(2).
    - A decimal gold is the answer rounded: an exact answer counts when it rounds to the gold
      (within half a unit of the gold's last place; gold `0.33`, answer `1/3`), if the gold
      has at least 2 significant digits.
    - A decimal with at least `float_places` places is a numeric evaluation
      (`0.0833333333333333` for 1/12): the two agree to `float_places` places, as
      math-verify's float_rounding compares them.
    Both need at least 2 significant digits (`0.000000` is not 1/2004!).
    """
    tolerance = Fraction(0)
    if gold is not None and pred is None and _significant(gold) >= 2:
        tolerance = Fraction(1, 2 * 10 ** _places(gold))
    for decimal in (gold, pred):
        if decimal is not None and _places(decimal) >= float_places and _significant(decimal) >= 2:
            tolerance = max(tolerance, Fraction(1, 2 * 10**float_places))
    return tolerance


def numbers_equal(gold: Number, pred: Number, float_places: int = FLOAT_PLACES) -> bool:
    if gold.value == pred.value:
        return True
    tolerance = decimal_tolerance(gold.decimal, pred.decimal, float_places)
    return tolerance > 0 and abs(gold.value - pred.value) <= tolerance


def quick_verdict(
    gold: str, pred: str, *, percent_problem: bool = False, float_places: int = FLOAT_PLACES
) -> bool | None:
    """Equal / not equal for answers decided by exact string and number rules, else None.

    `gold` and `pred` are extracted answers (as `parse.parse_answer` takes them).
    """
    gold_clean, gold_percent = clean_answer(gold[:MAX_ANSWER_CHARS])
    pred_clean, pred_percent = clean_answer(pred[:MAX_ANSWER_CHARS])
    gold_text, pred_text = normalise_text(gold_clean), normalise_text(pred_clean)
    if gold_text and gold_text == pred_text:
        return True
    letter = choice_letter(gold_clean)
    if letter is not None and len(gold_text.strip("()")) == 1:
        return choice_letter(pred_clean) == letter
    gold_number = plain_number(gold_clean)
    if gold_number is None:
        return None
    pred_number = plain_number(pred_clean)
    if pred_number is None:
        return None
    if numbers_equal(gold_number, pred_number, float_places):
        return True
    if percent_problem:
        return None
    if pred_percent and not gold_percent:  # "25%" is also the number 1/4 it writes
        return numbers_equal(gold_number, percent_value(pred_number), float_places)
    return False


def percent_value(number: Number) -> Number:
    """The value `n%` writes: n/100 (a decimal stays a decimal, `12.5%` -> 0.125)."""
    decimal = number.decimal.scaleb(-2) if number.decimal is not None else None
    return Number(number.value / 100, decimal)
