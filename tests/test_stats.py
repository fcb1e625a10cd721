"""Unit tests for probes.stats: against theory, exact vs randomised, calibration under the null, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from shiftcheck.probes.stats import (
    StatsInputError,
    bootstrap_mean_diff_ci,
    describe,
    hedges_g,
    min_detectable_g,
    paired_less,
    welch,
    welch_less,
)

# --------------------------------------------------------------------------------------------- theory


def test_describe_uses_population_std() -> None:
    s = describe([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])  # textbook example: mean 5, population sd 2
    assert (s.n, s.mean, s.std) == (8, 5.0, 2.0)
    empty = describe([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.std)


def test_welch_less_matches_hand_formula() -> None:
    base = np.array([3.1, 2.4, 4.0, 3.3, 2.9, 3.8])
    tuned = np.array([4.2, 3.9, 5.1, 4.4, 3.0, 4.8, 5.5, 4.1])
    va, vb = base.var(ddof=1) / base.size, tuned.var(ddof=1) / tuned.size
    t = (base.mean() - tuned.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (base.size - 1) + vb**2 / (tuned.size - 1))  # Welch–Satterthwaite
    res = welch_less(base, tuned)
    assert res.statistic == pytest.approx(t, rel=1e-12)
    assert res.df == pytest.approx(df, rel=1e-12)
    assert res.pvalue == pytest.approx(sps.t.cdf(t, df), rel=1e-10)
    assert res.alternative == "less" and res.note == ""


def test_welch_alternatives_relate() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, 30), rng.normal(0.3, 2, 25)
    less, greater, two = (welch(a, b, alt).pvalue for alt in ("less", "greater", "two-sided"))
    assert less + greater == pytest.approx(1.0)
    assert two == pytest.approx(2 * min(less, greater))


def test_paired_less_matches_hand_formula() -> None:
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    tuned = np.array([1.5, 2.1, 3.9, 4.2, 5.8])
    d = base - tuned
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    res = paired_less(base, tuned)
    assert res.statistic == pytest.approx(t)
    assert res.df == d.size - 1
    assert res.pvalue == pytest.approx(sps.t.cdf(t, d.size - 1))


def test_hedges_g_hand_example() -> None:
    # a = 1..5 (mean 3, s² 2.5), b = 3..7 (mean 5, s² 2.5): s_p = sqrt(2.5), d = -2/sqrt(2.5),
    # J = 1 - 3/(4·10 - 9) = 28/31, g = -1.142 500 ... (computed by hand from Hedges 1981's formula).
    g = hedges_g([1, 2, 3, 4, 5], [3, 4, 5, 6, 7])
    assert g == pytest.approx(-(28 / 31) * 2 / math.sqrt(2.5), rel=1e-12)
    assert g == pytest.approx(-1.14250, abs=1e-5)
    assert hedges_g([3, 4, 5, 6, 7], [1, 2, 3, 4, 5]) == pytest.approx(-g)


def test_hedges_g_textbook_unequal_groups() -> None:
    # Two groups with means 12 and 10, sds 4 and 2, n 10 and 20 (scaled unit samples):
    # s_p = sqrt((9·16 + 19·4)/28) = sqrt(220/28), d = 2/s_p, J = 1 - 3/(4·30 - 9) = 1 - 3/111.
    rng = np.random.default_rng(3)
    unit_a, unit_b = rng.normal(size=10), rng.normal(size=20)
    a = 12 + 4 * (unit_a - unit_a.mean()) / unit_a.std(ddof=1)
    b = 10 + 2 * (unit_b - unit_b.mean()) / unit_b.std(ddof=1)
    expected = (1 - 3 / 111) * 2 / math.sqrt(220 / 28)
    assert hedges_g(a, b) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(5)
    base, tuned = rng.normal(0, 1, 40), rng.normal(0.5, 1, 50)
    first = bootstrap_mean_diff_ci(base, tuned, n_resamples=2000, seed=42)
    assert bootstrap_mean_diff_ci(base, tuned, n_resamples=2000, seed=42) == first
    assert bootstrap_mean_diff_ci(base, tuned, n_resamples=2000, seed=43) != first


def test_bootstrap_ci_covers_true_difference_and_narrows_with_n() -> None:
    rng = np.random.default_rng(6)
    true_diff = 0.7
    widths = []
    for n in (30, 300, 3000):
        base, tuned = rng.normal(1.0, 1.0, n), rng.normal(1.0 + true_diff, 1.0, n)
        low, high = bootstrap_mean_diff_ci(base, tuned, n_resamples=2000, seed=0)
        assert low < true_diff < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # Width shrinks like 1/sqrt(n): the normal-theory width is 2·1.96·sqrt(2/n).
    assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(2 / 3000), rel=0.15)


def test_bootstrap_exact_vs_randomised_on_normal_theory() -> None:
    """The percentile CI agrees with the Welch-t interval for moderately large samples."""
    rng = np.random.default_rng(8)
    base, tuned = rng.normal(0, 1, 400), rng.normal(0.2, 1.5, 500)
    low, high = bootstrap_mean_diff_ci(base, tuned, n_resamples=20000, seed=1)
    se = math.sqrt(base.var(ddof=1) / base.size + tuned.var(ddof=1) / tuned.size)
    centre = tuned.mean() - base.mean()
    assert low == pytest.approx(centre - 1.96 * se, abs=0.1 * se * 1.96)
    assert high == pytest.approx(centre + 1.96 * se, abs=0.1 * se * 1.96)


def test_paired_bootstrap_is_narrower_for_correlated_pairs() -> None:
    rng = np.random.default_rng(9)
    shared = rng.normal(0, 3, 200)
    base, tuned = shared + rng.normal(0, 0.3, 200), shared + 0.5 + rng.normal(0, 0.3, 200)
    lo_p, hi_p = bootstrap_mean_diff_ci(base, tuned, n_resamples=3000, paired=True)
    lo_u, hi_u = bootstrap_mean_diff_ci(base, tuned, n_resamples=3000, paired=False)
    assert lo_p < 0.5 < hi_p
    assert hi_p - lo_p < (hi_u - lo_u) / 3
    with pytest.raises(StatsInputError, match="equal length"):
        bootstrap_mean_diff_ci(base, tuned[:-1], paired=True)


@pytest.mark.parametrize("kwargs, match", [({"confidence": 1.0}, "confidence"), ({"n_resamples": 0}, "n_resamples")])
def test_bootstrap_rejects_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(StatsInputError, match=match):
        bootstrap_mean_diff_ci([1.0, 2.0], [3.0, 4.0], **kwargs)


# --------------------------------------------------------------------------------------------- calibration


def test_welch_less_false_positive_rate_under_null_is_near_alpha() -> None:
    rng = np.random.default_rng(2023)
    alpha, draws = 0.05, 400
    rejections = 0
    for _ in range(draws):
        base = rng.normal(0.0, 1.0, rng.integers(10, 60))
        tuned = rng.normal(0.0, 2.0, rng.integers(10, 60))  # unequal variances: Welch's case
        rejections += welch_less(base, tuned).pvalue < alpha
    assert 0.02 <= rejections / draws <= 0.08


def test_bootstrap_ci_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(77)
    draws, covered = 200, 0
    for i in range(draws):
        base, tuned = rng.normal(0.0, 1.0, 60), rng.normal(0.3, 1.0, 60)
        low, high = bootstrap_mean_diff_ci(base, tuned, n_resamples=1000, seed=i)
        covered += low < 0.3 < high
    assert 0.88 <= covered / draws <= 0.99


# --------------------------------------------------------------------------------------------- properties

samples = st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=3, max_size=30).filter(
    lambda xs: np.ptp(xs) > 1e-3
)


@settings(max_examples=60, deadline=None)
@given(base=samples, tuned=samples, shift=st.floats(0.0, 50.0))
def test_shifting_tuned_up_never_increases_welch_p(base: list[float], tuned: list[float], shift: float) -> None:
    before = welch_less(base, tuned).pvalue
    after = welch_less(base, np.asarray(tuned) + shift).pvalue
    assert after <= before + 1e-12


@settings(max_examples=60, deadline=None)
@given(a=samples, b=samples)
def test_two_sided_welch_is_symmetric(a: list[float], b: list[float]) -> None:
    ab, ba = welch(a, b, "two-sided"), welch(b, a, "two-sided")
    assert ab.pvalue == pytest.approx(ba.pvalue, rel=1e-9, abs=1e-300)
    assert ab.statistic == pytest.approx(-ba.statistic, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(a=samples, b=samples, scale=st.floats(0.1, 10.0), offset=st.floats(-10.0, 10.0))
def test_hedges_g_is_affine_invariant(a: list[float], b: list[float], scale: float, offset: float) -> None:
    x, y = np.asarray(a), np.asarray(b)
    assert hedges_g(scale * x + offset, scale * y + offset) == pytest.approx(hedges_g(x, y), rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------------------------- degenerate


@pytest.mark.parametrize(
    "base, tuned, note",
    [([1.0], [2.0, 3.0], ">= 2 values"), ([], [], ">= 2 values"), ([1.0, 1.0, 1.0], [2.0, 2.0], "zero variance")],
)
def test_degenerate_inputs_give_nan_with_note(base: list[float], tuned: list[float], note: str) -> None:
    res = welch_less(base, tuned)
    assert math.isnan(res.pvalue) and note in res.note


def test_non_finite_scores_are_rejected() -> None:
    with pytest.raises(StatsInputError, match="non-finite"):
        welch_less([1.0, float("nan"), 2.0], [1.0, 2.0])


def test_welch_rejects_unknown_alternative() -> None:
    with pytest.raises(StatsInputError, match="alternative"):
        welch([1.0, 2.0], [1.0, 3.0], "smaller")


# --------------------------------------------------------------------------------------------- power


def test_min_detectable_g_matches_the_normal_approximation_for_large_n() -> None:
    # Normal theory: d = (z_{1-alpha} + z_{power}) * sqrt(1/n_a + 1/n_b).
    n = 2000
    expected = (sps.norm.ppf(0.95) + sps.norm.ppf(0.8)) * math.sqrt(2 / n)
    assert min_detectable_g(n, n, 0.05) == pytest.approx(expected, rel=1e-3)


def test_min_detectable_g_has_the_requested_power_by_simulation() -> None:
    rng = np.random.default_rng(5)
    n, alpha = 30, 0.05
    d = min_detectable_g(n, n, alpha)
    hits = sum(sps.ttest_ind(rng.normal(0, 1, n), rng.normal(d, 1, n), alternative="less").pvalue < alpha
               for _ in range(2000))
    assert 0.76 < hits / 2000 < 0.84


def test_min_detectable_g_needs_two_values_per_side() -> None:
    assert min_detectable_g(1, 10, 0.05) is None
    assert min_detectable_g(10, 10, 0.05) > min_detectable_g(100, 100, 0.05)
