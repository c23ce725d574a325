"""Pearson correlation with its two-sided p-value, for backtracks-vs-accuracy across checkpoints.

r is computed directly; the p-value is that of the t statistic t = r sqrt(df / (1 - r^2)) with
df = n - 2 degrees of freedom, written as a regularized incomplete beta function:
p = I_{df / (df + t^2)}(df / 2, 1 / 2) (the same test scipy.stats.pearsonr makes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.special import betainc

MIN_POINTS = 3  # with two points r is always +-1 and says nothing


@dataclass(frozen=True)
class Correlation:
    """r and p, or why there are none (`reason`), over `n` points."""

    n: int
    r: float | None = None
    p: float | None = None
    reason: str = ""

    @property
    def defined(self) -> bool:
        return self.r is not None


def pearson(xs: Sequence[float], ys: Sequence[float]) -> Correlation:
    """Pearson r of two equally long series and the p-value of r != 0 (two-sided)."""
    if len(xs) != len(ys):
        raise ValueError(f"pearson: {len(xs)} x values but {len(ys)} y values")
    n = len(xs)
    if n < MIN_POINTS:
        return Correlation(n, reason=f"needs at least {MIN_POINTS} checkpoints, got {n}")
    if not all(math.isfinite(v) for v in (*xs, *ys)):
        return Correlation(n, reason="a value is not a finite number")
    mean_x, mean_y = math.fsum(xs) / n, math.fsum(ys) / n
    dx = [x - mean_x for x in xs]
    dy = [y - mean_y for y in ys]
    sxx, syy = math.fsum(d * d for d in dx), math.fsum(d * d for d in dy)
    if sxx == 0 or syy == 0:
        which = "x" if sxx == 0 else "y"
        return Correlation(n, reason=f"{which} is constant across the checkpoints")
    r = math.fsum(a * b for a, b in zip(dx, dy, strict=True)) / math.sqrt(sxx * syy)
    r = max(-1.0, min(1.0, r))
    df = n - 2
    if abs(r) == 1.0:
        return Correlation(n, r, 0.0)
    t_squared = r * r * df / (1 - r * r)
    p = float(betainc(df / 2, 0.5, df / (df + t_squared)))
    return Correlation(n, r, p)
