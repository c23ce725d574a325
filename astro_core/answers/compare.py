"""Mathematical equivalence of two parsed answers.

Rules (docs/verifier.md has the table):
- numbers are exact: 1/2004! and 1/2006! differ, 0.5 = 1/2, 27.0 = 27, 10^{-3} = 0.001.
  A decimal answer is exact too (0.33 is not 1/3); a decimal gold is met by an exact answer
  that rounds to it (gold 0.33, answer 1/3); a decimal with 6+ places is a numeric
  evaluation and agrees to 6 places (fast.decimal_tolerance holds the rule).
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
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import mpmath
import sympy
from sympy.core.function import AppliedUndef
from sympy.matrices import MatrixBase

from astro_core.answers.fast import FLOAT_PLACES, decimal_tolerance
from astro_core.answers.parse import Answer, is_assignment_list, written_items

_TOLERANCE_MP = mpmath.mpf("1e-9")
_POINTS = 4
_MAX_ITEMS = 200  # elements of a set/tuple/matrix compared pairwise


@dataclass(frozen=True)
class Rules:
    """The per-call settings of a comparison (VerifierConfig fields of the same names)."""

    relation_for_set: bool = True
    float_places: int = FLOAT_PLACES


_DEFAULT_RULES = Rules()


def answers_equal(
    gold: Answer,
    pred: Answer,
    *,
    percent_problem: bool = False,
    relation_for_set: bool = True,
    strict_variables: bool = True,
    float_places: int = FLOAT_PLACES,
) -> bool:
    """Is `pred` the same answer as `gold`?

    percent_problem: the problem asks for a percent, so 0.28 also matches a gold 28%.
    relation_for_set: see `values_equal`. float_places: see `fast.decimal_tolerance`.
    strict_variables: False renames the prediction's variables to the gold's when both have
    the same number (matched in name order), so `f(y)` = `f(x)` (math-verify's strict=False).
    """
    if gold.letter is not None and gold.value is None or _is_letter_only(gold):
        return pred.letter == gold.letter or pred.text == gold.text
    if gold.text == pred.text and gold.text:
        return True
    if gold.numeral is not None and pred.numeral is not None:
        return gold.numeral == pred.numeral  # 52_8 is not 52_9 (a bare 52 is its digits)
    if gold.value is None and gold.assigned is None or pred.value is None and pred.assigned is None:
        return False
    if not strict_variables:
        pred = _renamed_like(pred, gold)
    rules = Rules(relation_for_set, float_places)
    if values_equal(gold.value, pred.value, rules):
        return True
    if is_assignment_list(gold.value) and is_assignment_list(pred.value):
        return False  # names and values together: `x=3, y=4` is not `x=4, y=3`
    if gold.assigned is not None and not _is_equation(pred.value):
        if values_equal(gold.assigned, pred.assigned or pred.value, rules):
            return True
    if pred.assigned is not None and not _is_equation(gold.value):
        if values_equal(gold.value, pred.assigned, rules):
            return True
    if pred.percent and not gold.percent and not percent_problem:
        # "25%" is the number 1/4: a percent answer also counts for the value it writes
        # (gold 1/4 or 0.25). A percent gold keeps its number (gold 28%, answer 0.28: no).
        literal = _percent_value(pred.value)
        if literal is not None and values_equal(gold.value, literal, rules):
            return True
    if percent_problem and isinstance(gold.value, sympy.Expr):
        if isinstance(pred.value, sympy.Expr):
            hundred = sympy.Integer(100)
            return values_equal(gold.value, pred.value * hundred, rules) or values_equal(
                gold.value * hundred, pred.value, rules
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


def _percent_value(value: Any) -> Any:
    """The value `n%` writes, n/100, keeping a decimal a decimal (`12.5%` -> 0.125)."""
    if isinstance(value, sympy.Float):
        return sympy.Float(str(_decimal(value).scaleb(-2)), 30)
    if isinstance(value, sympy.Expr) and not value.free_symbols:
        return value / 100
    return None


def values_equal(a: Any, b: Any, rules: Rules = _DEFAULT_RULES) -> bool:
    """Equality of two parsed values (numbers, expressions, relations, sets, matrices).

    `a` is the gold side. rules.relation_for_set: a one-variable inequality answer may equal
    the set gold it describes (gold `[-2, 7]`, answer `-2 <= x <= 7`); False refuses that
    direction only, as math-verify's default `allow_set_relation_comp=False` does (a gold
    inequality still accepts its interval).
    """
    if a is None or b is None:
        return False
    a, b = _evaluated_set(a), _evaluated_set(b)
    if isinstance(a, MatrixBase) or isinstance(b, MatrixBase):
        return _matrices_equal(a, b, rules)
    if isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq):
        return _relations_equal(a, b, rules)
    if isinstance(a, sympy.Rel) and isinstance(b, sympy.Rel):
        return _relations_equal(a, b, rules)
    if (
        not rules.relation_for_set
        and isinstance(a, sympy.Set)
        and isinstance(b, sympy.Rel | sympy.And)
    ):
        return False
    if _as_set(a) is not None or _as_set(b) is not None:
        set_a, set_b = _as_set(a), _as_set(b)
        if set_a is not None and set_b is not None and (set_a is not a or set_b is not b):
            return values_equal(set_a, set_b, rules)
    if isinstance(a, sympy.Interval) and isinstance(b, sympy.Interval):
        return (
            a.left_open == b.left_open
            and a.right_open == b.right_open
            and _expr_equal(a.start, b.start, rules)
            and _expr_equal(a.end, b.end, rules)
        )
    if isinstance(a, sympy.FiniteSet) and isinstance(b, sympy.FiniteSet):
        return _unordered_equal(list(a.args), list(b.args), rules)
    if isinstance(a, sympy.Union) and isinstance(b, sympy.Union):
        return _unordered_equal(_union_parts(a), _union_parts(b), rules)
    if _is_sequence(a) and _is_sequence(b):
        if isinstance(a, sympy.FiniteSet):  # a gold list or set has no order: `1, 2` = (2, 1)
            return _unordered_equal(_items(a), _items(b), rules)
        return _ordered_equal(_items(a), _items(b), rules)
    if isinstance(a, sympy.FiniteSet) and len(a.args) == 1:
        return values_equal(a.args[0], b, rules)
    if isinstance(b, sympy.FiniteSet) and len(b.args) == 1:
        return values_equal(a, b.args[0], rules)
    if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
        return _expr_equal(a, b, rules)
    return bool(a == b)


def _evaluated_set(value: Any) -> Any:
    """A set difference or intersection as the set it is: the parser keeps them unevaluated,
    so `\\mathbb{R} \\setminus [2, 3]` becomes `(-oo, 2) U (3, oo)`."""
    if isinstance(value, sympy.Complement | sympy.Intersection):
        try:
            return type(value)(*value.args)
        except Exception:  # sympy cannot evaluate every combination: keep it as written
            return value
    return value


def _union_parts(union: sympy.Union) -> list[Any]:
    """The sets of a union, nested unions flattened: the parser nests `A \\cup B \\cup C` in
    the order written, so `(6, oo) U (4, 5) U (2, 3)` is `(6, oo) U ((4, 5) U (2, 3))`."""
    parts: list[Any] = []
    for part in union.args:
        parts.extend(_union_parts(part) if isinstance(part, sympy.Union) else [part])
    return parts


def _is_sequence(value: Any) -> bool:
    """Tuples, and what is written like one: "1, 3" (a FiniteSet) or "(1, 3)" (an open
    interval); their order matters."""
    if isinstance(value, sympy.Tuple | sympy.FiniteSet):
        return True
    return isinstance(value, sympy.Interval) and value.left_open and value.right_open


def _items(value: Any) -> list[Any]:
    """A sequence's items in order; a bare list `3, 2, 1` in the order it was written."""
    if isinstance(value, sympy.Interval):
        return [value.start, value.end]
    return written_items(value)


def _as_set(value: Any) -> Any:
    """Inequalities in one variable as sets: -2 <= x <= 7 -> [-2, 7]; a list of them in the
    same variable is their union (`x < -1 or x > 1`, read as a list, is two intervals)."""
    if isinstance(value, sympy.FiniteSet | sympy.Tuple) and _inequalities_in_one_variable(value):
        parts = [_as_set(relation) for relation in value.args]
        return sympy.Union(*parts) if all(p is not None for p in parts) else None
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


def _inequalities_in_one_variable(values: Any) -> bool:
    relations = values.args
    if len(relations) < 2 or not all(
        isinstance(r, sympy.Rel | sympy.And) and not isinstance(r, sympy.Eq | sympy.Ne)
        for r in relations
    ):
        return False
    return (
        len({frozenset(r.free_symbols) for r in relations}) == 1
        and len(relations[0].free_symbols) == 1
    )


def _ordered_equal(xs: list[Any], ys: list[Any], rules: Rules) -> bool:
    if len(xs) != len(ys) or len(xs) > _MAX_ITEMS:
        return False
    return all(values_equal(x, y, rules) for x, y in zip(xs, ys, strict=True))


def _unordered_equal(xs: list[Any], ys: list[Any], rules: Rules) -> bool:
    if len(xs) != len(ys) or len(xs) > _MAX_ITEMS:
        return False
    remaining = list(ys)
    for x in xs:
        for i, y in enumerate(remaining):
            if values_equal(x, y, rules):
                del remaining[i]
                break
        else:
            return False
    return True


def _matrices_equal(a: Any, b: Any, rules: Rules) -> bool:
    """Same shape, entry by entry; a vector (one row or one column) also equals the tuple of
    its entries, in order: gold `\\begin{pmatrix}2\\\\-1\\end{pmatrix}`, answer `(2, -1)`."""
    for vector, other in ((a, b), (b, a)):
        if isinstance(vector, MatrixBase) and 1 in vector.shape and _is_sequence(other):
            if isinstance(other, sympy.FiniteSet):
                return False  # a set has no order
            return _ordered_equal(list(vector), _items(other), rules)
    if not (isinstance(a, MatrixBase) and isinstance(b, MatrixBase)) or a.shape != b.shape:
        return False
    if a.rows * a.cols > _MAX_ITEMS:
        return False
    return all(values_equal(x, y, rules) for x, y in zip(list(a), list(b), strict=True))


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


def _decimal_equal(gold: sympy.Expr, pred: sympy.Expr, rules: Rules) -> bool:
    """Numbers where one side was written as a decimal: `fast.decimal_tolerance`'s rule."""
    tolerance = decimal_tolerance(
        _decimal(gold) if isinstance(gold, sympy.Float) else None,
        _decimal(pred) if isinstance(pred, sympy.Float) else None,
        rules.float_places,
    )
    exact_gold, exact_pred = _exact(gold), _exact(pred)
    if exact_gold.free_symbols or exact_pred.free_symbols:
        return False
    # 10^{-3} is parsed unevaluated: its value is 1/1000.
    difference = (exact_gold - exact_pred).doit()
    if difference.is_Rational:
        return bool(abs(Fraction(int(difference.p), int(difference.q))) <= tolerance)
    if tolerance == 0:
        return False  # an irrational difference is never 0
    error = _number(difference, {})
    if error is None:
        return False
    with mpmath.workdps(30):
        return bool(abs(error) <= mpmath.mpf(tolerance.numerator) / tolerance.denominator)


def _expr_equal(a: sympy.Expr, b: sympy.Expr, rules: Rules = _DEFAULT_RULES) -> bool:
    if a == b:
        return True
    if isinstance(a, sympy.Float) or isinstance(b, sympy.Float):
        return _decimal_equal(a, b, rules)
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


def _relations_equal(a: Any, b: Any, rules: Rules) -> bool:
    if a == b:
        return True
    if not all(isinstance(x, sympy.Expr) for x in (a.lhs, a.rhs, b.lhs, b.rhs)):
        return (
            type(a) is type(b)
            and values_equal(a.lhs, b.lhs, rules)
            and values_equal(a.rhs, b.rhs, rules)
        )
    kind_a, ea = _normal_form(a)
    kind_b, eb = _normal_form(b)
    if kind_a is not kind_b:
        return False
    if not isinstance(ea, sympy.Expr) or not isinstance(eb, sympy.Expr):
        return bool(ea == eb)
    ratio = _constant_ratio(ea, eb, rules)
    if ratio is None:
        return False
    if kind_a in (sympy.Eq, sympy.Ne):
        return ratio != 0
    return ratio > 0


def _constant_ratio(ea: sympy.Expr, eb: sympy.Expr, rules: Rules) -> float | None:
    """c with ea = c * eb everywhere, or None."""
    if ea.has(AppliedUndef) or eb.has(AppliedUndef):
        return 1.0 if _simplifies_to_zero(ea - eb) else None
    symbols = sorted(ea.free_symbols | eb.free_symbols, key=str)
    if not symbols:
        return 1.0 if _expr_equal(ea, eb, rules) else None
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
