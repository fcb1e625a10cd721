"""Statistics behind the findings (METHODS.md §1.8), pure numpy/scipy.

Notation: group ``a`` with ``n_a`` values ``x``, group ``b`` with ``n_b`` values ``y``; ``mean`` is the
arithmetic mean, ``s²`` the sample variance (ddof 1) and ``σ`` the population standard deviation
(ddof 0, ``np.std``) that METHODS §1.8 reports as "mean ± std".

Every one-sided test here has the alternative ``mean(a) < mean(b)``:

* base vs tuned ("Table 2"): ``a = base``, ``b = tuned`` - Welch, one-sided, unpaired, as the paper;
* followed vs unfollowed ("Table 1"): ``a = unfollowed``, ``b = followed``.

Degenerate inputs (a group with fewer than 2 values, zero variance) never raise: the affected
numbers are NaN and a ``note`` says why; ``to_dict`` turns NaN into ``None`` for JSON.
Non-finite input values are an error, since silently dropping them would change ``n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

ALTERNATIVES = ("two-sided", "less", "greater")


class StatsInputError(ValueError):
    """Input to a statistic is malformed (wrong shape, non-finite values, misaligned groups)."""


def as_sample(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite 1-D float64 array; raises :class:`StatsInputError` naming ``name`` otherwise."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise StatsInputError(f"{name} must be 1-D, got shape {arr.shape}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise StatsInputError(f"{name} has {bad} non-finite value(s) of {arr.size}; drop or fix them before testing")
    return arr


def none_if_nan(value: Any) -> Any:
    """JSON-safe scalar: NaN/inf -> ``None``, numpy scalars -> Python scalars."""
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def join_notes(*notes: str) -> str:
    """Non-empty notes, de-duplicated in order, joined with ``"; "``."""
    return "; ".join(dict.fromkeys(n for n in notes if n))


# ---------------------------------------------------------------------------------------------
# summaries and effect sizes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """``n``, ``mean = Σx/n`` and population ``std = sqrt(Σ(x - mean)²/n)`` (ddof 0, METHODS §1.8)."""

    n: int
    mean: float
    std: float


def describe(x: Any) -> Summary:
    """:class:`Summary` of ``x``; mean and std are NaN for an empty sample."""
    arr = as_sample(x, "x")
    if arr.size == 0:
        return Summary(n=0, mean=math.nan, std=math.nan)
    return Summary(n=int(arr.size), mean=float(arr.mean()), std=float(arr.std(ddof=0)))


def hedges_g(a: Any, b: Any) -> float:
    """Bias-corrected standardised mean difference of ``a`` over ``b`` (Hedges 1981).

    ``s_p = sqrt(((n_a-1)s_a² + (n_b-1)s_b²) / (n_a+n_b-2))``, ``d = (mean(a) - mean(b)) / s_p``,
    ``J = 1 - 3 / (4(n_a+n_b) - 9)``, ``g = J·d``. NaN if ``n_a+n_b < 3`` or ``s_p = 0``.
    """
    x, y = as_sample(a, "a"), as_sample(b, "b")
    n_a, n_b = x.size, y.size
    if n_a < 1 or n_b < 1 or n_a + n_b < 3:
        return math.nan
    ss = ((x - x.mean()) ** 2).sum() + ((y - y.mean()) ** 2).sum()
    s_p = math.sqrt(ss / (n_a + n_b - 2))
    if s_p == 0.0:
        return math.nan
    j = 1.0 - 3.0 / (4.0 * (n_a + n_b) - 9.0)
    return float(j * (x.mean() - y.mean()) / s_p)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """A t test: ``statistic`` t, ``df``, ``pvalue`` for ``alternative``; NaN plus ``note`` when undefined."""

    __test__ = False  # not a pytest test class

    test: str
    alternative: str
    statistic: float
    df: float
    pvalue: float
    note: str = ""


def check_alternative(alternative: str) -> None:
    """Reject anything but ``"two-sided"``, ``"less"``, ``"greater"``."""
    if alternative not in ALTERNATIVES:
        raise StatsInputError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def undefined(test: str, alternative: str, note: str) -> TestResult:
    """A :class:`TestResult` of NaNs carrying ``note``."""
    return TestResult(test=test, alternative=alternative, statistic=math.nan, df=math.nan, pvalue=math.nan, note=note)


def welch(a: Any, b: Any, alternative: str = "two-sided") -> TestResult:
    """Welch's unequal-variance t test of ``mean(a)`` against ``mean(b)``.

    ``t = (mean(a) - mean(b)) / sqrt(s_a²/n_a + s_b²/n_b)``, Welch–Satterthwaite
    ``df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))``;
    computed by ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative=alternative)``.
    """
    check_alternative(alternative)
    x, y = as_sample(a, "a"), as_sample(b, "b")
    if x.size < 2 or y.size < 2:
        return undefined("welch", alternative, f"Welch test needs >= 2 values per group (n_a={x.size}, n_b={y.size})")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return undefined("welch", alternative, "Welch test undefined: both groups have zero variance")
    res = sps.ttest_ind(x, y, equal_var=False, alternative=alternative)
    return TestResult(test="welch", alternative=alternative, statistic=float(res.statistic), df=float(res.df), pvalue=float(res.pvalue))


def welch_less(base: Any, tuned: Any) -> TestResult:
    """The paper's base-vs-tuned test (METHODS §1.8 "Table 2"): Welch, one-sided ``mean(base) < mean(tuned)``.

    ``scipy.stats.ttest_ind(base, tuned, equal_var=False, alternative="less")``.
    """
    return welch(base, tuned, "less")


def paired(a: Any, b: Any, alternative: str = "two-sided") -> TestResult:
    """Paired t test on ``d_i = a_i - b_i``: ``t = mean(d) / (s_d / sqrt(n))``, ``df = n - 1``.

    ``scipy.stats.ttest_rel(a, b, alternative=alternative)``; ``a`` and ``b`` must be aligned.
    """
    check_alternative(alternative)
    x, y = as_sample(a, "a"), as_sample(b, "b")
    if x.size != y.size:
        raise StatsInputError(f"paired test needs aligned samples of equal length, got {x.size} and {y.size}")
    if x.size < 2:
        return undefined("paired", alternative, f"paired test needs >= 2 pairs (n={x.size})")
    if np.ptp(x - y) == 0:
        return undefined("paired", alternative, "paired test undefined: all differences are equal")
    res = sps.ttest_rel(x, y, alternative=alternative)
    return TestResult(test="paired", alternative=alternative, statistic=float(res.statistic), df=float(res.df), pvalue=float(res.pvalue))


def paired_less(base: Any, tuned: Any) -> TestResult:
    """Paired one-sided test ``mean(base - tuned) < 0`` on shared prompts (METHODS §1.8: extra check, not the paper's)."""
    return paired(base, tuned, "less")


def bootstrap_mean_diff_ci(
    base: Any,
    tuned: Any,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``Δ = mean(tuned) - mean(base)``.

    Each of ``R = n_resamples`` replicates draws indices with replacement (``np.random.default_rng(seed)``):
    independently per group, or one index set for both when ``paired`` (aligned samples). The interval is
    the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the ``R`` replicate ``Δ*``. ``(nan, nan)`` if a group is empty.
    """
    x, y = as_sample(base, "base"), as_sample(tuned, "tuned")
    if not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 1):
        raise StatsInputError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise StatsInputError(f"confidence must lie in (0, 1), got {confidence!r}")
    if paired and x.size != y.size:
        raise StatsInputError(f"paired bootstrap needs aligned samples of equal length, got {x.size} and {y.size}")
    if x.size == 0 or y.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    block = max(1, 4_000_000 // max(x.size, y.size))  # bound memory: block × n indices at a time
    deltas: list[np.ndarray] = []
    for start in range(0, n_resamples, block):
        r = min(block, n_resamples - start)
        if paired:
            idx = rng.integers(0, x.size, size=(r, x.size))  # (resample, pair)
            deltas.append((y[idx] - x[idx]).mean(axis=1))
        else:
            idx_x = rng.integers(0, x.size, size=(r, x.size))  # (resample, base item)
            idx_y = rng.integers(0, y.size, size=(r, y.size))  # (resample, tuned item)
            deltas.append(y[idx_y].mean(axis=1) - x[idx_x].mean(axis=1))
    all_deltas = np.concatenate(deltas)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(all_deltas, [tail, 1.0 - tail])
    return (float(low), float(high))


# ---------------------------------------------------------------------------------------------
# power


def min_detectable_g(n_a: int, n_b: int, alpha: float, power: float = 0.8) -> float | None:
    """Smallest standardised effect ``d`` that a one-sided two-sample t-test at ``alpha`` detects with
    probability ``power`` (noncentral t, df = n_a + n_b - 2, noncentrality ``d·sqrt(n_a n_b/(n_a+n_b))``;
    Cohen 1988, ch. 2). ``None`` when either side has fewer than 2 values.
    """
    if n_a < 2 or n_b < 2:
        return None
    from scipy.optimize import brentq

    df = n_a + n_b - 2
    scale = math.sqrt(n_a * n_b / (n_a + n_b))
    t_crit = float(sps.t.ppf(1.0 - alpha, df))

    def shortfall(d: float) -> float:
        return float(sps.nct.sf(t_crit, df, d * scale)) - power

    return float(brentq(shortfall, 0.0, 50.0))
