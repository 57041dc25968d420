"""Paired-by-seed statistics of an ablation: the difference variant minus base with a 95% confidence interval.

Each seed trains the base and every variant, so seed ``k`` of a variant is compared with seed ``k`` of the base
(the same data order, initialisation and augmentation draws wherever the switch does not change them). Over the
``n`` seeds that both finished, with ``d_k = variant_k - base_k``:

* ``mean = sum(d) / n`` and the sample standard deviation ``sd = sqrt(sum((d - mean)^2) / (n - 1))``;
* the interval ``mean -/+ t(1 - alpha / 2, n - 1) * sd / sqrt(n)`` with Student's t quantile;
* the difference is *significant* when the interval does not contain 0.

One seed gives a difference but no interval (``n/a``). The t quantile is exact (not a table): Student's
distribution function is written with the regularized incomplete beta function, evaluated by its continued
fraction (modified Lentz), and inverted by bisection; :func:`t_quantile` agrees with the printed tables to their
3 decimals (``t(0.975, 2) = 4.303``, ``t(0.975, 10) = 2.228``, ``t(0.975, 30) = 2.042``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PairedDiff", "paired_difference", "student_t_cdf", "t_quantile", "mean_std"]


def _betacf(a: float, b: float, x: float, max_iter: int = 300, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function, evaluated with the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, max_iter + 1):
        # the even step, then the odd step of the fraction
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    # the fraction converges fast for x < (a + 1) / (a + b + 2); otherwise use I_x(a, b) = 1 - I_{1-x}(b, a)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_quantile(0.975, 2) = 4.3027``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:  # bracket the quantile
        low, high = high, high * 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``nan`` for the deviation of fewer than two values)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class PairedDiff:
    """Difference variant minus base over the seeds both finished.

    Attributes:
        n: seeds paired.
        mean: mean difference (``nan`` when ``n == 0``).
        sd: sample standard deviation of the differences (``nan`` when ``n < 2``).
        low, high: the confidence interval (``nan`` when ``n < 2``: ``n/a``).
        level: the confidence level (0.95).
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    level: float = 0.95

    @property
    def half_width(self) -> float:
        """Half the interval's width, ``t * sd / sqrt(n)``."""
        return (self.high - self.low) / 2.0

    @property
    def has_interval(self) -> bool:
        """Whether there is an interval (at least two paired seeds)."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def significant(self) -> bool | None:
        """The interval excludes 0 (``None`` without an interval)."""
        if not self.has_interval:
            return None
        return self.low > 0.0 or self.high < 0.0


def paired_difference(
    base: Mapping[int, float], variant: Mapping[int, float], level: float = 0.95
) -> PairedDiff:
    """Difference ``variant - base`` paired by seed (the keys), with a Student-t confidence interval.

    Seeds present in only one of the two are ignored. Example: differences ``[0.1, 0.2, 0.3]`` give mean 0.2,
    sd 0.1, ``t(0.975, 2) = 4.303`` and the interval ``0.2 -/+ 0.2484``.
    """
    seeds = sorted(set(base) & set(variant))
    diffs = [float(variant[s]) - float(base[s]) for s in seeds]
    n = len(diffs)
    mean, sd = mean_std(diffs)
    if n < 2:
        return PairedDiff(n, mean, sd, math.nan, math.nan, level)
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return PairedDiff(n, mean, sd, mean - half, mean + half, level)
