"""Interval estimates and two-group comparisons for KPI tables.

Thin, documented wrappers over statsmodels and scipy: the KPI tables store plain counts and sums
(``n``, ``successes``, ``total = Σx``, ``total_sq = Σx²``), and these functions turn them into point
estimates, confidence intervals and p-values. The formulas come from the libraries wherever a library
function fits; the only math written here is the variance from sums and the Welch–Satterthwaite degrees
of freedom, because neither library exposes them for summary statistics (each is marked below).

Every function takes plain Python numbers, returns a small frozen dataclass whose fields are plain
``float``/``int``/``None`` (never numpy scalars), and raises :class:`ValueError` for bad arguments
(negative counts, ``successes > n``, ``alpha`` outside (0, 1)). ``None`` means "not estimable from this
little data" (e.g. ``n == 0``), never an error.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

__all__ = ["Estimate", "Comparison", "proportion", "mean", "compare_proportions", "compare_means"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided ``1 - alpha`` confidence interval.

    ``value``, ``ci_low`` and ``ci_high`` are in the unit of the data (a fraction in [0, 1] for a
    proportion); each is ``None`` when it cannot be estimated. ``n`` is the number of observations.
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class Comparison:
    """Group ``a`` versus group ``b``: ``difference = a - b`` with a ``1 - alpha`` interval and a
    two-sided p-value for "no difference". ``method`` names the interval and test used."""

    a: Estimate
    b: Estimate
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    method: str


# ---------------------------------------------------------------------------------------- validation


def _count(name: str, value: int) -> int:
    """``value`` as a non-negative int (numpy ints accepted); ValueError otherwise."""
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer count, got {value!r}") from None
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _successes(successes: int, n: int, suffix: str = "") -> tuple[int, int]:
    s = _count("successes" + suffix, successes)
    m = _count("n" + suffix, n)
    if s > m:
        raise ValueError(f"successes{suffix} ({s}) exceeds n{suffix} ({m})")
    return s, m


def _alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def _finite(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


# ---------------------------------------------------------------------------------------- one group


def proportion(successes: int, n: int, alpha: float = 0.05) -> Estimate:
    """Share of successes with a Wilson score interval.

    Method: ``p̂ = successes / n``; interval
    ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``z = Φ⁻¹(1 − alpha/2)``,
    computed by ``statsmodels.stats.proportion.proportion_confint(method="wilson")``.
    Source: E. B. Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", JASA 22:209–212; recommended over the Wald interval by L. D. Brown, T. T. Cai &
    A. DasGupta (2001), "Interval estimation for a binomial proportion", Statistical Science 16:101–133.

    Units: fractions in [0, 1] (the bounds are clipped to [0, 1] against floating error).
    ``n == 0`` gives ``value``, ``ci_low`` and ``ci_high`` all ``None``.

    Raises ValueError: negative or non-integer counts, ``successes > n``, ``alpha`` outside (0, 1).
    """
    s, m = _successes(successes, n)
    a = _alpha(alpha)
    if m == 0:
        return Estimate(None, None, None, 0)
    low, high = proportion_confint(s, m, alpha=a, method="wilson")
    return Estimate(s / m, max(0.0, float(low)), min(1.0, float(high)), m)


def _variance(n: int, total: float, total_sq: float) -> float:
    """Sample variance (n − 1 denominator) from ``Σx`` and ``Σx²``: ``(Σx² − (Σx)²/n) / (n − 1)``.

    Written here because no library computes it from sums. The subtraction can come out slightly
    negative from floating-point cancellation when all values are (nearly) equal; it is clamped to 0.
    Needs ``n >= 2``.
    """
    return max(0.0, (total_sq - total * total / n) / (n - 1))


def mean(n: int, total: float, total_sq: float, alpha: float = 0.05) -> Estimate:
    """Mean with a Student-t interval, from the count, the sum and the sum of squares.

    Method: ``x̄ = total / n``; ``s² = (total_sq − total²/n) / (n − 1)`` (see :func:`_variance`);
    interval ``x̄ ± t_{1−alpha/2, n−1} · s / √n`` with the quantile from ``scipy.stats.t.ppf``.
    Source: "Student" (W. S. Gosset) (1908), "The probable error of a mean", Biometrika 6:1–25.

    Units: those of the summed values (``total`` in units, ``total_sq`` in units²).
    ``n == 0`` gives ``value`` ``None``; ``n < 2`` gives an interval of ``None`` (no variance estimate).

    Raises ValueError: negative or non-integer ``n``, non-finite sums, ``total_sq < 0``, ``alpha``
    outside (0, 1).
    """
    m = _count("n", n)
    a = _alpha(alpha)
    t = _finite("total", total)
    tsq = _finite("total_sq", total_sq)
    if tsq < 0:
        raise ValueError(f"total_sq must be >= 0, got {total_sq!r}")
    if m == 0:
        return Estimate(None, None, None, 0)
    xbar = t / m
    if m < 2:
        return Estimate(xbar, None, None, m)
    half = float(_sp.t.ppf(1 - a / 2, m - 1)) * math.sqrt(_variance(m, t, tsq) / m)
    return Estimate(xbar, xbar - half, xbar + half, m)


# ---------------------------------------------------------------------------------------- two groups

_PROPORTIONS_METHOD = (
    "difference CI: Newcombe hybrid score (Newcombe 1998, method 10); "
    "p-value: two-sided pooled two-proportion z-test"
)


def compare_proportions(s1: int, n1: int, s2: int, n2: int, alpha: float = 0.05) -> Comparison:
    """Compare two independent proportions ``p1 = s1/n1`` and ``p2 = s2/n2``.

    ``difference = p1 − p2`` (a fraction in [−1, 1]).

    Interval: Newcombe's hybrid score interval, which combines the two Wilson intervals
    ``(l_i, u_i)``: ``d − sqrt((p1−l1)² + (u2−p2)²)`` to ``d + sqrt((u1−p1)² + (p2−l2)²)``; computed by
    ``statsmodels.stats.proportion.confint_proportions_2indep(method="newcomb", compare="diff")``.
    Source: R. G. Newcombe (1998), "Interval estimation for the difference between independent
    proportions: comparison of eleven methods", Statistics in Medicine 17:873–890, method 10.

    p-value: two-sided two-proportion z-test with pooled variance,
    ``z = (p1 − p2) / sqrt(p̄(1−p̄)(1/n1 + 1/n2))`` with ``p̄ = (s1+s2)/(n1+n2)``, computed by
    ``statsmodels.stats.proportion.proportions_ztest`` (no continuity correction). When
    ``p̄`` is 0 or 1 (all failures or all successes in both groups) z is 0/0; the observed difference is
    exactly 0 then, and ``p_value`` is reported as 1.0.

    Any ``n == 0`` gives ``difference``, ``ci_low``, ``ci_high`` and ``p_value`` all ``None``
    (``a``/``b`` are still filled in by :func:`proportion`).

    Raises ValueError: negative or non-integer counts, ``s > n`` in either group, ``alpha`` outside (0, 1).
    """
    s1, n1 = _successes(s1, n1, "1")
    s2, n2 = _successes(s2, n2, "2")
    a = _alpha(alpha)
    est1, est2 = proportion(s1, n1, a), proportion(s2, n2, a)
    if n1 == 0 or n2 == 0:
        return Comparison(est1, est2, None, None, None, None, _PROPORTIONS_METHOD)
    with np.errstate(all="ignore"):  # statsmodels also computes ratios, which divide by zero at p2 = 0
        low, high = confint_proportions_2indep(s1, n1, s2, n2, method="newcomb", compare="diff", alpha=a)
        pooled = (s1 + s2) / (n1 + n2)
        if pooled in (0.0, 1.0):
            p_value = 1.0
        else:
            _, p = proportions_ztest([s1, s2], [n1, n2], value=0, alternative="two-sided")
            p_value = float(p)
    diff = s1 / n1 - s2 / n2
    return Comparison(
        est1, est2, diff, max(-1.0, float(low)), min(1.0, float(high)), p_value, _PROPORTIONS_METHOD
    )


_MEANS_METHOD = (
    "difference CI: Welch t with Welch-Satterthwaite df (Welch 1947); "
    "p-value: two-sided Welch's unequal-variance t-test"
)


def compare_means(
    n1: int,
    total1: float,
    total_sq1: float,
    n2: int,
    total2: float,
    total_sq2: float,
    alpha: float = 0.05,
) -> Comparison:
    """Compare two independent means by Welch's unequal-variance t-test, from counts and sums.

    ``difference = x̄1 − x̄2`` in the unit of the data. With ``v_i = s_i²/n_i`` (``s_i²`` the sample
    variance from the sums, n − 1 denominator):

    - p-value: two-sided Welch t-test, ``t = (x̄1 − x̄2) / sqrt(v1 + v2)``, computed by
      ``scipy.stats.ttest_ind_from_stats(..., equal_var=False)``.
    - interval: ``difference ± t_{1−alpha/2, ν} · sqrt(v1 + v2)`` with the Welch–Satterthwaite degrees
      of freedom ``ν = (v1 + v2)² / (v1²/(n1−1) + v2²/(n2−1))``, computed here because scipy does not
      return ν from summary statistics. Sources: B. L. Welch (1947), "The generalization of 'Student's'
      problem when several different population variances are involved", Biometrika 34:28–35;
      F. E. Satterthwaite (1946), Biometrics Bulletin 2:110–114.

    Any ``n == 0`` gives ``difference`` ``None``; either ``n < 2``, or both sample variances 0 (the
    standard error is 0 and t is undefined), gives ``ci_low``, ``ci_high`` and ``p_value`` ``None``.

    Raises ValueError: as :func:`mean` for either group.
    """
    a = _alpha(alpha)
    est1 = mean(n1, total1, total_sq1, a)
    est2 = mean(n2, total2, total_sq2, a)
    if est1.value is None or est2.value is None:
        return Comparison(est1, est2, None, None, None, None, _MEANS_METHOD)
    diff = est1.value - est2.value
    m1, m2 = est1.n, est2.n
    if m1 < 2 or m2 < 2:
        return Comparison(est1, est2, diff, None, None, None, _MEANS_METHOD)
    var1 = _variance(m1, float(total1), float(total_sq1))
    var2 = _variance(m2, float(total2), float(total_sq2))
    v1, v2 = var1 / m1, var2 / m2
    se = math.sqrt(v1 + v2)
    if se == 0.0:
        return Comparison(est1, est2, diff, None, None, None, _MEANS_METHOD)
    result = _sp.ttest_ind_from_stats(
        est1.value, math.sqrt(var1), m1, est2.value, math.sqrt(var2), m2, equal_var=False
    )
    df = (v1 + v2) ** 2 / (v1 * v1 / (m1 - 1) + v2 * v2 / (m2 - 1))
    half = float(_sp.t.ppf(1 - a / 2, df)) * se
    return Comparison(est1, est2, diff, diff - half, diff + half, float(result.pvalue), _MEANS_METHOD)
