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
  `a/b`, `\\frac{a}{b}`): exact rational equality, and the one documented tolerance for a
  decimal against a fraction without a finite decimal form (`0.33` ~ `1/3`).
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


def _terminates(value: Fraction) -> bool:
    """Has a finite decimal expansion (denominator 2^a 5^b)."""
    q = value.denominator
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q == 1


def rounds_to(decimal: Decimal, exact: Fraction) -> bool:
    """Is the written decimal `exact` correctly rounded to its own places (>= 2 significant
    digits)? The same rule as compare._decimal_matches, in exact arithmetic."""
    d = decimal.normalize()
    if d == 0 or len(d.as_tuple().digits) < 2:
        return False
    exponent = d.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    error = abs(Fraction(d) - exact)
    return error <= Fraction(1, 2 * 10**places) * (1 + Fraction(1, 10**12))


def numbers_equal(gold: Number, pred: Number) -> bool:
    if gold.value == pred.value:
        return True
    # The one tolerance: a written decimal against a fraction with no finite decimal form.
    for decimal, other in ((pred, gold), (gold, pred)):
        if decimal.decimal is not None and other.decimal is None:
            if not _terminates(other.value):
                return rounds_to(decimal.decimal, other.value)
    return False


def quick_verdict(gold: str, pred: str, *, percent_problem: bool = False) -> bool | None:
    """Equal / not equal for answers decided by exact string and number rules, else None.

    `gold` and `pred` are extracted answers (as `parse.parse_answer` takes them).
    """
    gold_clean, _ = clean_answer(gold[:MAX_ANSWER_CHARS])
    pred_clean, _ = clean_answer(pred[:MAX_ANSWER_CHARS])
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
    if numbers_equal(gold_number, pred_number):
        return True
    return None if percent_problem else False
