"""The real verdict path of finding 1: ``findings.shift``, ``density_shift``, ``followed_shift``,
``Shift.holds`` and ``Shift.verdict``, on constructed samples whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from shiftcheck.probes.findings import POOLED, Verdict, density_shift, followed_shift, shift
from shiftcheck.probes.importance import ImportanceResult, InstanceAttribution


def test_identical_groups_never_hold() -> None:
    a = np.array([0.1, 0.3, 0.2, 0.5])
    s = shift(POOLED, a, a.copy(), "base", "tuned")
    assert s.mean_diff == 0.0
    assert s.p_value == pytest.approx(0.5)  # t = 0: one-sided p is exactly one half
    assert not s.holds(0.05) and not s.holds(0.99)
    assert "not higher" in s.why_not(0.05)


def test_all_zero_reference_against_a_small_rise_is_judged_by_welch() -> None:
    base = np.zeros(20)
    tuned = np.array([0.0] * 15 + [0.2] * 5)
    s = shift(POOLED, base, tuned, "base", "tuned")
    # Welch with one constant sample is the one-sample t-test of tuned against 0.
    t = tuned.mean() / (tuned.std(ddof=1) / math.sqrt(20))
    assert s.p_value == pytest.approx(sps.t.sf(t, df=19))
    assert s.holds(0.05) == (sps.t.sf(t, df=19) < 0.05)


def test_both_constant_gives_no_p_and_says_why() -> None:
    s = shift(POOLED, np.zeros(5), np.zeros(5), "base", "tuned")
    assert s.p_value is None and not s.holds(0.5)
    assert "p = n/a" in s.why_not(0.05) and "zero variance" in s.why_not(0.05)


def test_ties_and_n_equal_two() -> None:
    base, tuned = np.array([0.0, 0.0]), np.array([1.0, 1.0])
    s = shift(POOLED, base, tuned, "base", "tuned")
    assert s.p_value is None  # both samples constant: the t statistic is undefined
    s2 = shift(POOLED, np.array([0.0, 0.1]), np.array([1.0, 1.1]), "base", "tuned")
    # hand: means 0.05 and 1.05, both sample variances 0.005, se = sqrt(0.005/2*2) = 0.0707, t = 14.14, df = 2
    t = 1.0 / math.sqrt(0.005 / 2 + 0.005 / 2)
    assert s2.t_stat == pytest.approx(-t)
    assert s2.p_value == pytest.approx(sps.t.sf(t, 2), rel=1e-6)
    assert s2.holds(0.05)


def test_a_single_value_is_too_few_and_fails_with_that_reason() -> None:
    s = shift("tiny", np.array([0.1]), np.array([0.9, 0.8]), "base", "tuned")
    assert not s.holds(0.05)
    assert "too few values" in s.why_not(0.05)


def test_verdict_carries_the_test_and_alternative() -> None:
    s = shift(POOLED, np.array([0.0, 0.1, 0.05]), np.array([0.5, 0.6, 0.55]), "base", "tuned")
    v = s.verdict("importance_density", 0.05, claim="c", hint="h")
    assert isinstance(v, Verdict) and v.passed and v.outcome == "pass"
    assert v.alternative == "greater" and "one-sided" in v.test
    assert v.reason == "" and v.hint == ""
    failing = shift(POOLED, np.array([0.5, 0.6, 0.55]), np.array([0.0, 0.1, 0.05]), "base", "tuned")
    fv = failing.verdict("importance_density", 0.05, claim="c", hint="h")
    assert fv.outcome == "fail" and fv.hint == "h" and "not higher" in fv.reason


def test_verdict_rejects_unknown_outcomes() -> None:
    with pytest.raises(ValueError, match="outcome"):
        Verdict("f", "g", "c", "t", "greater", 0.05, "maybe", "o", "e")


def _result(label: str, scores_by_id: dict[str, tuple[str, float, int]]) -> ImportanceResult:
    """An ImportanceResult whose instance scores are the given values: one prompt token, a mask that
    marks it, and a response whose S0 levels give that token's normalised density."""
    instances = []
    for iid, (source, level, n_resp) in scores_by_id.items():
        # Two prompt tokens: the instruction token with `level` on every response column, the other
        # with 10. a = k^(3/4) for k equal entries, so the instruction token's â is 1 if level > 7 else 0.
        S0 = np.array([[level] * n_resp, [10] * n_resp], dtype=np.uint8)
        instances.append(InstanceAttribution(iid, source, ("i", "c"), tuple("r" * n_resp),
                                             np.array([True, False]), S0))
    return ImportanceResult(label=label, instances=tuple(instances))


def test_density_shift_selects_the_group_and_pairs_shared_ids() -> None:
    base = _result("base", {"a": ("s1", 0, 5), "b": ("s1", 0, 5), "c": ("s2", 10, 5)})
    tuned = _result("tuned", {"a": ("s1", 10, 5), "b": ("s1", 10, 5), "c": ("s2", 10, 5)})
    s1 = density_shift(base, tuned, "s1")
    assert (s1.a_n, s1.b_n, s1.paired_n) == (2, 2, 2)
    # instruction token: level 10 -> â = 1, score = 1/log2(3); level 0 -> score 0
    assert s1.b_mean == pytest.approx(1 / math.log2(3)) and s1.a_mean == 0.0
    pooled = density_shift(base, tuned, POOLED)
    assert pooled.a_n == 3 and pooled.a_mean == pytest.approx(1 / math.log2(3) / 3)


def test_followed_shift_drops_unrated_and_short_responses() -> None:
    tuned = _result("tuned", {"f1": ("s", 10, 6), "f2": ("s", 10, 5), "u1": ("s", 0, 9), "u2": ("s", 0, 5),
                              "short": ("s", 10, 4), "unrated": ("s", 0, 9)})
    ratings = {"f1": 3, "f2": 2, "u1": 1, "u2": 1, "short": 4, "unrated": -1}
    s = followed_shift(tuned, ratings, POOLED)
    assert (s.b_n, s.a_n) == (2, 2)  # followed f1, f2; unfollowed u1, u2
    assert s.a_label == "unfollowed" and s.b_label == "followed"
