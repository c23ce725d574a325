"""Mathematical equivalence of two parsed answers.

Rules (docs/verifier.md has the table):
- numbers are exact: 1/2004! and 1/2006! differ, 0.5 = 1/2, 27.0 = 27. A decimal against an
  exact value that has no finite decimal form (1/3, sqrt(17), pi) is accepted when it is that
  value correctly rounded to the decimal's own number of places, with at least 2 significant
  digits (0.33 ~ 1/3, 2.6667 ~ 8/3, never 0.3 ~ 1/3 with one digit, never 0 ~ 1/2004!).
- expressions are compared at random points, positive ones and negative ones; a point where
  either side is not real is skipped for the negative points only, so sqrt(1/n) = 1/sqrt(n)
  (equal wherever both are real) but |x| != x.
- equations are compared as equations: lhs - rhs of one is a nonzero constant times that of
  the other (2x+4y-3=0 = y=-x/2+3/4); relations likewise with a positive constant and the same
  direction (x < 1 = -x > -1).
- tuples and intervals are ordered and their open/closed ends matter; sets are not ordered;
  matrices compare entry by entry.
"""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal
from typing import Any

import mpmath
import sympy
from sympy.core.function import AppliedUndef
from sympy.matrices import MatrixBase

from astro_core.answers.parse import Answer

_TOLERANCE_MP = mpmath.mpf("1e-9")
_POINTS = 4
_MAX_ITEMS = 200  # elements of a set/tuple/matrix compared pairwise


def answers_equal(
    gold: Answer,
    pred: Answer,
    *,
    percent_problem: bool = False,
    relation_for_set: bool = True,
    strict_variables: bool = True,
) -> bool:
    """Is `pred` the same answer as `gold`?

    percent_problem: the problem asks for a percent, so 0.28 also matches a gold 28%.
    relation_for_set: see `values_equal`.
    strict_variables: False renames the prediction's variables to the gold's when both have
    the same number (matched in name order), so `f(y)` = `f(x)` (math-verify's strict=False).
    """
    if gold.letter is not None and gold.value is None or _is_letter_only(gold):
        return pred.letter == gold.letter or pred.text == gold.text
    if gold.text == pred.text and gold.text:
        return True
    if gold.value is None and gold.assigned is None or pred.value is None and pred.assigned is None:
        return False
    if not strict_variables:
        pred = _renamed_like(pred, gold)
    if values_equal(gold.value, pred.value, relation_for_set):
        return True
    if gold.assigned is not None and not _is_equation(pred.value):
        if values_equal(gold.assigned, pred.assigned or pred.value, relation_for_set):
            return True
    if pred.assigned is not None and not _is_equation(gold.value):
        if values_equal(gold.value, pred.assigned, relation_for_set):
            return True
    if percent_problem and isinstance(gold.value, sympy.Expr):
        if isinstance(pred.value, sympy.Expr):
            hundred = sympy.Integer(100)
            return values_equal(gold.value, pred.value * hundred, relation_for_set) or values_equal(
                gold.value * hundred, pred.value
            )
    return False


def _renamed_like(pred: Answer, gold: Answer) -> Answer:
    """`pred` with its free symbols renamed to gold's, paired in name order."""
    gold_symbols = _symbols(gold.value)
    pred_symbols = _symbols(pred.value)
    if len(gold_symbols) != len(pred_symbols) or gold_symbols == pred_symbols:
        return pred
    mapping = dict(zip(pred_symbols, gold_symbols, strict=True))

    def rename(value: Any) -> Any:
        return value.xreplace(mapping) if isinstance(value, sympy.Basic) else value

    return dataclasses.replace(pred, value=rename(pred.value), assigned=rename(pred.assigned))


def _symbols(value: Any) -> list[Any]:
    if not isinstance(value, sympy.Basic):
        return []
    return sorted(value.free_symbols, key=str)


def _is_letter_only(answer: Answer) -> bool:
    return answer.letter is not None and len(answer.text.strip("()")) == 1


def _is_equation(value: Any) -> bool:
    return isinstance(value, sympy.Eq | sympy.And)


def values_equal(a: Any, b: Any, relation_for_set: bool = True) -> bool:
    """Equality of two parsed values (numbers, expressions, relations, sets, matrices).

    `a` is the gold side. relation_for_set: a one-variable inequality answer may equal the
    set gold it describes (gold `[-2, 7]`, answer `-2 <= x <= 7`); False refuses that
    direction only, as math-verify's default `allow_set_relation_comp=False` does (a gold
    inequality still accepts its interval).
    """
    if a is None or b is None:
        return False
    if isinstance(a, MatrixBase) or isinstance(b, MatrixBase):
        return _matrices_equal(a, b, relation_for_set)
    if isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq):
        return _relations_equal(a, b, relation_for_set)
    if isinstance(a, sympy.Rel) and isinstance(b, sympy.Rel):
        return _relations_equal(a, b, relation_for_set)
    if not relation_for_set and isinstance(a, sympy.Set) and isinstance(b, sympy.Rel | sympy.And):
        return False
    if _as_set(a) is not None or _as_set(b) is not None:
        set_a, set_b = _as_set(a), _as_set(b)
        if set_a is not None and set_b is not None and (set_a is not a or set_b is not b):
            return values_equal(set_a, set_b, relation_for_set)
    if isinstance(a, sympy.Interval) and isinstance(b, sympy.Interval):
        return (
            a.left_open == b.left_open
            and a.right_open == b.right_open
            and _expr_equal(a.start, b.start)
            and _expr_equal(a.end, b.end)
        )
    if isinstance(a, sympy.FiniteSet) and isinstance(b, sympy.FiniteSet):
        return _unordered_equal(list(a.args), list(b.args), relation_for_set)
    if isinstance(a, sympy.Union) and isinstance(b, sympy.Union):
        return _unordered_equal(list(a.args), list(b.args), relation_for_set)
    if _is_sequence(a) and _is_sequence(b):
        return _ordered_equal(_items(a), _items(b), relation_for_set)
    if isinstance(a, sympy.FiniteSet) and len(a.args) == 1:
        return values_equal(a.args[0], b, relation_for_set)
    if isinstance(b, sympy.FiniteSet) and len(b.args) == 1:
        return values_equal(a, b.args[0], relation_for_set)
    if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
        return _expr_equal(a, b)
    return bool(a == b)


def _is_sequence(value: Any) -> bool:
    """Tuples, and what is written like one: "1, 3" (a FiniteSet) or "(1, 3)" (an open
    interval); their order matters."""
    if isinstance(value, sympy.Tuple | sympy.FiniteSet):
        return True
    return isinstance(value, sympy.Interval) and value.left_open and value.right_open


def _items(value: Any) -> list[Any]:
    if isinstance(value, sympy.Interval):
        return [value.start, value.end]
    return list(value.args)


def _as_set(value: Any) -> Any:
    """Inequalities in one variable as sets: -2 <= x <= 7 -> [-2, 7]."""
    if isinstance(value, sympy.Set):
        return value
    if isinstance(value, sympy.Rel | sympy.And) and not isinstance(value, sympy.Eq | sympy.Ne):
        try:
            functions = value.atoms(AppliedUndef)
            if len(functions) == 1:  # 0 < f(x) < 1: f(x) is the variable
                value = value.xreplace({functions.pop(): sympy.Dummy("t")})
            if len(value.free_symbols) == 1:
                return value.as_set()
        except Exception:  # odd relations (And of equations) are not sets
            return None
    return None


def _ordered_equal(xs: list[Any], ys: list[Any], relation_for_set: bool) -> bool:
    if len(xs) != len(ys) or len(xs) > _MAX_ITEMS:
        return False
    return all(values_equal(x, y, relation_for_set) for x, y in zip(xs, ys, strict=True))


def _unordered_equal(xs: list[Any], ys: list[Any], relation_for_set: bool) -> bool:
    if len(xs) != len(ys) or len(xs) > _MAX_ITEMS:
        return False
    remaining = list(ys)
    for x in xs:
        for i, y in enumerate(remaining):
            if values_equal(x, y, relation_for_set):
                del remaining[i]
                break
        else:
            return False
    return True


def _matrices_equal(a: Any, b: Any, relation_for_set: bool) -> bool:
    if not (isinstance(a, MatrixBase) and isinstance(b, MatrixBase)) or a.shape != b.shape:
        return False
    if a.rows * a.cols > _MAX_ITEMS:
        return False
    return all(values_equal(x, y, relation_for_set) for x, y in zip(list(a), list(b), strict=True))


# --- numbers and expressions -------------------------------------------------------------


def _decimal(value: sympy.Float) -> Decimal:
    """The decimal a Float was written as (latex2sympy keeps 15 significant digits)."""
    return Decimal(str(value)).normalize()


def _rational(value: sympy.Float) -> sympy.Rational:
    return sympy.Rational(str(_decimal(value)))


def _exact(expr: sympy.Expr) -> sympy.Expr:
    """Floats replaced by the exact decimals they were written as: 10.5 -> 21/2."""
    floats = expr.atoms(sympy.Float)
    return expr.xreplace({f: _rational(f) for f in floats}) if floats else expr


def _terminates(value: sympy.Expr) -> bool:
    """A rational with a finite decimal expansion (denominator 2^a 5^b)."""
    if not value.is_Rational:
        return False
    q = int(sympy.fraction(value)[1])
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q == 1


def _decimal_matches(decimal: sympy.Float, exact: sympy.Expr) -> bool:
    d = _decimal(decimal)
    as_rational = sympy.Rational(str(d))
    exact = _exact(exact)
    if exact.free_symbols:
        return False
    if exact.is_Rational:
        if as_rational == exact:
            return True
        if _terminates(exact):
            return False  # both have exact decimal forms: no tolerance
    exponent = d.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    significant = len(d.as_tuple().digits) if d != 0 else 0
    if significant < 2:
        return False
    error = abs(sympy.N(as_rational - exact, 30))
    half_unit = sympy.Rational(1, 2 * 10**places)
    return bool(error <= half_unit * (1 + sympy.Rational(1, 10**12)))


def _expr_equal(a: sympy.Expr, b: sympy.Expr) -> bool:
    if a == b:
        return True
    if isinstance(a, sympy.Float) and not isinstance(b, sympy.Float):
        return _decimal_matches(a, b)
    if isinstance(b, sympy.Float) and not isinstance(a, sympy.Float):
        return _decimal_matches(b, a)
    a, b = _exact(a), _exact(b)
    if not a.free_symbols and not b.free_symbols:
        a, b = a.doit(), b.doit()  # 1/2004! as an exact rational (huge ones never get here)
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return False
    if a.has(AppliedUndef) or b.has(AppliedUndef):
        return _simplifies_to_zero(a - b)
    verdict = _agree_at_points(a, b)
    if verdict is None:
        return _simplifies_to_zero(a - b)
    return verdict


def _simplifies_to_zero(expr: sympy.Expr) -> bool:
    try:
        return bool(sympy.simplify(expr) == 0)
    except Exception:
        return False


def _points(symbols: list[sympy.Symbol], sign: int) -> list[dict[sympy.Symbol, Any]]:
    rng = random.Random(1729)  # fixed: the same answer always gets the same verdict
    return [
        {s: sign * sympy.Rational(rng.randint(101, 397), rng.randint(53, 151)) for s in symbols}
        for _ in range(_POINTS)
    ]


def _number(expr: sympy.Expr, point: dict[sympy.Symbol, Any]) -> Any:
    """An mpmath complex with 30 digits (no underflow: 1/2006! stays nonzero), or None."""
    try:
        value = expr.xreplace(point).evalf(30) if point else expr.evalf(30)
        if not value.is_number or value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            return None
        re_part, im_part = value.as_real_imag()
        with mpmath.workdps(30):
            return mpmath.mpc(sympy.Float(re_part, 30)._mpf_, sympy.Float(im_part, 30)._mpf_)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
        return None


def _close(x: Any, y: Any) -> bool:
    with mpmath.workdps(30):
        scale = max(abs(x), abs(y))
        if scale == 0:
            return True
        return bool(abs(x - y) <= _TOLERANCE_MP * scale)


def _not_real(x: Any) -> bool:
    return bool(abs(x.imag) > mpmath.mpf("1e-12") * max(abs(x), 1))


def _agree_at_points(a: sympy.Expr, b: sympy.Expr) -> bool | None:
    """True/False from numeric evaluation, None when it cannot be evaluated."""
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        diff = _number(a - b, {})
        scale_a, scale_b = _number(a, {}), _number(b, {})
        if diff is None or scale_a is None or scale_b is None:
            return None
        scale = max(abs(scale_a), abs(scale_b))
        if scale == 0:
            return bool(diff == 0)
        # 30-digit evaluation of the difference itself: tiny but nonzero differences
        # (1/2004! - 1/2006!) stay nonzero.
        return bool(abs(diff) <= mpmath.mpf("1e-25") * scale)
    evaluated = 0
    for sign in (1, -1):
        for point in _points(symbols, sign):
            x, y = _number(a, point), _number(b, point)
            if x is None or y is None:
                if sign == 1:
                    return None
                continue
            if sign == -1 and (_not_real(x) or _not_real(y)):
                continue  # outside the real domain of one side
            if not _close(x, y):
                return False
            evaluated += 1
    return evaluated > 0


# --- equations and relations -----------------------------------------------------------

_FLIP = {sympy.StrictGreaterThan: sympy.StrictLessThan, sympy.GreaterThan: sympy.LessThan}


def _normal_form(rel: Any) -> tuple[type, sympy.Expr]:
    """`lhs OP rhs` as (OP, rhs - lhs) with > and >= turned into < and <=."""
    kind = type(rel)
    lhs, rhs = _exact(rel.lhs), _exact(rel.rhs)
    if kind in _FLIP:
        return _FLIP[kind], lhs - rhs
    return kind, rhs - lhs


def _relations_equal(a: Any, b: Any, relation_for_set: bool) -> bool:
    if a == b:
        return True
    if not all(isinstance(x, sympy.Expr) for x in (a.lhs, a.rhs, b.lhs, b.rhs)):
        return (
            type(a) is type(b)
            and values_equal(a.lhs, b.lhs, relation_for_set)
            and values_equal(a.rhs, b.rhs, relation_for_set)
        )
    kind_a, ea = _normal_form(a)
    kind_b, eb = _normal_form(b)
    if kind_a is not kind_b:
        return False
    if not isinstance(ea, sympy.Expr) or not isinstance(eb, sympy.Expr):
        return bool(ea == eb)
    ratio = _constant_ratio(ea, eb)
    if ratio is None:
        return False
    if kind_a in (sympy.Eq, sympy.Ne):
        return ratio != 0
    return ratio > 0


def _constant_ratio(ea: sympy.Expr, eb: sympy.Expr) -> float | None:
    """c with ea = c * eb everywhere, or None."""
    if ea.has(AppliedUndef) or eb.has(AppliedUndef):
        return 1.0 if _simplifies_to_zero(ea - eb) else None
    symbols = sorted(ea.free_symbols | eb.free_symbols, key=str)
    if not symbols:
        return 1.0 if _expr_equal(ea, eb) else None
    ratio: Any = None
    for point in _points(symbols, 1):
        x, y = _number(ea, point), _number(eb, point)
        if x is None or y is None or y == 0:
            return None
        r = x / y
        if ratio is None:
            ratio = r
        elif not _close(r, ratio):
            return None
    if ratio is None or _not_real(ratio) or ratio == 0:
        return None
    return float(ratio.real)
