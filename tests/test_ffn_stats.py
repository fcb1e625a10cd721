"""Finding 3's statistics on constructed label tables with a known truth: the equivalence test of
the linguistic levels (issue 19's 40- and 3000-component cases, a shift wholly outside, levels at
0 %), its error rate at the margin by simulation, the one-sided user-task rise, the calibration
gate, and the paper's Table 5 rows (Student two-sided) kept for the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from shiftcheck.probes.ffn import concepts
from shiftcheck.probes.ffn.annotators import Annotation
from shiftcheck.probes.ffn.annotators.calibration import Calibration

ALPHA, MARGIN = 0.05, 3.0
SOURCE = concepts.LabelSource("heuristic", Calibration("heuristic", {"semantic": 0.9, "syntax": 0.8}, 120,
                                                       passed=True))


def table(levels: dict[str, int], scenario: str = "daily writing", unexplained: int = 10, layer: int = 0):
    out = [Annotation(layer, i + 1, ("w",), "Cannot Tell") for i in range(unexplained)]
    for level, n in levels.items():
        out += [Annotation(layer, 100 + len(out), ("w",), "thing", scenario, level) for _ in range(n)]
    return out


def mix(n: int, **shares: float) -> dict[str, int]:
    """Level counts for ``n`` explainable components; semantic takes the remainder."""
    out = {k.capitalize(): int(round(n * v)) for k, v in shares.items()}
    out["Semantic"] = n - sum(out.values())
    return out


BASE_MIX = {"morphology": 0.2, "phonology": 0.1, "syntax": 0.1}  # semantic 60 %


def test_labels_are_substrings_of_the_lower_cased_answer():
    assert concepts.labels("Semantics", concepts.LEVELS)["semantic"] == 1
    assert concepts.labels("daily writing; Solving math problems", concepts.SCENARIOS) == {
        "writing": 1, "math": 1, "coding": 0, "translation": 0, "none": 0}


# ---------------------------------------------------------------------------------------------
# "unchanged": equivalence


def test_forty_components_a_side_with_the_same_mix_is_not_a_pass():
    """Issue 19's case: 40 explainable components cannot show equivalence within ±3 pp."""
    same = mix(40, **BASE_MIX)
    v = concepts.linguistic_unchanged([table(same)], [table(same)], MARGIN, ALPHA, SOURCE)
    assert v.outcome == "inconclusive", v.obtained
    assert v.alternative == "equivalence" and "not shown equivalent" in v.reason
    assert all(r["high"] - r["low"] > 2 * MARGIN for r in v.numbers["rows"])


def test_the_same_mix_on_three_thousand_components_a_side_passes():
    same = mix(3000, **BASE_MIX)
    v = concepts.linguistic_unchanged([table(same)], [table(same)], MARGIN, ALPHA, SOURCE)
    assert v.outcome == "pass", v.reason
    assert v.numbers["p_value"] < ALPHA
    assert all(-MARGIN < r["low"] <= r["high"] < MARGIN for r in v.numbers["rows"])


def test_a_level_wholly_outside_the_margin_fails_and_is_named():
    base, tuned = mix(1000, **BASE_MIX), mix(1000, **dict(BASE_MIX, phonology=0.2))
    v = concepts.linguistic_unchanged([table(base)], [table(tuned)], MARGIN, ALPHA, SOURCE)
    assert v.outcome == "fail"
    assert "phonology changed +10.00 pp" in v.reason and "wholly outside" in v.reason


def test_a_shift_near_the_margin_is_inconclusive_not_a_pass():
    base, tuned = mix(3000, **BASE_MIX), mix(3000, **dict(BASE_MIX, phonology=0.13))
    v = concepts.linguistic_unchanged([table(base)], [table(tuned)], MARGIN, ALPHA, SOURCE)
    assert v.outcome == "inconclusive" and "phonology interval" in v.reason


def test_levels_at_zero_percent_on_both_sides_get_a_finite_interval():
    same = mix(3000, morphology=0.3, phonology=0.0, syntax=0.0)
    v = concepts.linguistic_unchanged([table(same)], [table(same)], MARGIN, ALPHA, SOURCE)
    rows = {r["category"]: r for r in v.numbers["rows"]}
    assert all(math.isfinite(rows[k][f]) for k in ("phonology", "syntax") for f in ("low", "high", "p_tost"))
    assert v.outcome == "pass"


def _wilson(c: int, n: int, z: float) -> tuple[float, float]:
    p = c / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("cb,nb,ct,nt", [(120, 600, 150, 600), (0, 300, 4, 310), (55, 100, 40, 90)])
def test_the_interval_is_newcombes_hybrid_score_interval(cb, nb, ct, nt):
    """An independent implementation of Newcombe (1998) method 10 at the (1 - 2 alpha) level."""
    z = stats.norm.ppf(1 - ALPHA)
    (lt, ut), (lb, ub) = _wilson(ct, nt, z), _wilson(cb, nb, z)
    d = ct / nt - cb / nb
    low = d - math.sqrt((ct / nt - lt) ** 2 + (ub - cb / nb) ** 2)
    high = d + math.sqrt((ut - ct / nt) ** 2 + (cb / nb - lb) ** 2)
    got = concepts.proportion_equivalence(cb, nb, ct, nt, MARGIN, ALPHA)
    assert got[0] == pytest.approx(100 * low, abs=1e-9) and got[1] == pytest.approx(100 * high, abs=1e-9)


def test_repetitions_need_both_agreeing_seeds_and_enough_components():
    """Five identical seeds of 40 components: no repetition spread, but still 40 components."""
    same = mix(40, **BASE_MIX)
    v = concepts.linguistic_unchanged([table(same)] * 5, [table(same)] * 5, MARGIN, ALPHA, SOURCE)
    assert v.outcome == "inconclusive" and "Welch" in v.test


def test_repetitions_with_a_wide_spread_are_inconclusive():
    rng = np.random.default_rng(3)

    def reps():  # phonology 10 % ± 4 pp over seeds, 2000 components each
        return [table(mix(2000, **dict(BASE_MIX, phonology=0.1 + 0.04 * rng.standard_normal()))) for _ in range(5)]

    v = concepts.linguistic_unchanged(reps(), reps(), MARGIN, ALPHA, SOURCE)
    assert v.outcome == "inconclusive" and "phonology" in v.reason


def test_welch_tost_agrees_with_two_one_sided_scipy_tests():
    rng = np.random.default_rng(5)
    sb, st = 20 + rng.normal(0, 0.8, 5), 20.5 + rng.normal(0, 0.5, 5)
    low, high, p = concepts.repetition_equivalence(sb, st, MARGIN, ALPHA)
    p_low = stats.ttest_ind(st + MARGIN, sb, equal_var=False, alternative="greater").pvalue
    p_high = stats.ttest_ind(st - MARGIN, sb, equal_var=False, alternative="less").pvalue
    assert p == pytest.approx(max(p_low, p_high))
    assert low < st.mean() - sb.mean() < high


def test_pass_rate_at_the_margin_is_at_most_alpha_by_simulation(capsys):
    """2000 draws per setting, one repetition: a level at 20 % that truly moves by the margin (and
    by 0) in n = 1000 and 3000 explainable components a side. The pass rate at the margin must stay
    within alpha plus three Monte Carlo standard errors; the power at zero shift is printed."""
    rng = np.random.default_rng(19)
    draws, p0 = 2000, 0.20
    rates = {}
    for n in (1000, 3000):
        for shift in (MARGIN, 0.0):
            cb = rng.binomial(n, p0, draws)
            ct = rng.binomial(n, p0 + shift / 100, draws)
            low, high, p = concepts.proportion_equivalence(cb, n, ct, n, MARGIN, ALPHA)
            rates[n, shift] = float(concepts.shown_equivalent(low, high, p, MARGIN, ALPHA).mean())
    mc = 3 * math.sqrt(ALPHA * (1 - ALPHA) / draws)
    with capsys.disabled():
        print("\nequivalence pass rate (one repetition, level at 20 %): " + ", ".join(
            f"n={n} shift={s:g} pp: {r:.3f}" for (n, s), r in rates.items()))
    assert rates[1000, MARGIN] <= ALPHA + mc and rates[3000, MARGIN] <= ALPHA + mc
    assert rates[3000, 0.0] > 0.5  # power: the test is not simply impossible to pass


def test_pass_rate_at_the_margin_with_five_repetitions(capsys):
    """1000 draws of 5 seeds a side (per-seed shares normal, sd 0.5 pp, many components): the Welch
    TOST passes a true shift at the margin at most at alpha plus Monte Carlo error."""
    rng = np.random.default_rng(23)
    draws = 1000
    sb = 20 + rng.normal(0, 0.5, (draws, 5))
    passes = {}
    for shift in (MARGIN, 0.0):
        st = 20 + shift + rng.normal(0, 0.5, (draws, 5))
        res = [concepts.repetition_equivalence(b, t, MARGIN, ALPHA) for b, t in zip(sb, st)]
        passes[shift] = float(np.mean([concepts.shown_equivalent(lo, hi, p, MARGIN, ALPHA) for lo, hi, p in res]))
    with capsys.disabled():
        print(f"\nWelch TOST pass rate (5 vs 5 seeds, sd 0.5 pp): shift 3 pp {passes[MARGIN]:.3f}, "
              f"shift 0 {passes[0.0]:.3f}")
    assert passes[MARGIN] <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / draws)
    assert passes[0.0] > 0.9


# ---------------------------------------------------------------------------------------------
# the user-task rise


def test_a_self_comparison_does_not_show_a_rise():
    same = table(mix(3000, **BASE_MIX), scenario="coding")
    v = concepts.user_task_rise([same], [same], ALPHA, SOURCE)
    assert v.outcome == "fail" and v.alternative == "greater"
    assert "no significant rise" in v.reason


def _scenarios(n: int, user: int) -> list[Annotation]:
    """``user`` of ``n`` explainable components labelled writing (the rest translation)."""
    return [Annotation(0, i + 1, ("w",), "thing", "daily writing" if i < user else "translation", "Semantic")
            for i in range(n)]


def test_a_rise_passes_and_a_drop_fails_with_one_repetition():
    up = concepts.user_task_rise([_scenarios(2000, 1000)], [_scenarios(2000, 1120)], ALPHA, SOURCE)
    down = concepts.user_task_rise([_scenarios(2000, 1000)], [_scenarios(2000, 880)], ALPHA, SOURCE)
    small = concepts.user_task_rise([_scenarios(200, 100)], [_scenarios(200, 104)], ALPHA, SOURCE)
    assert up.outcome == "pass" and up.numbers["p_value"] < ALPHA
    assert down.outcome == "fail" and small.outcome == "fail"
    assert "any of writing, math, coding per component" in up.obtained


def test_the_share_is_the_union_of_user_task_labels_per_component():
    multi = [Annotation(0, 1, ("w",), "x", "daily writing; coding; solving math problems", "Semantic"),
             Annotation(0, 2, ("w",), "x", "translation", "Semantic")]
    assert concepts.user_task_share([multi]).tolist() == [50.0]


def test_a_rise_over_five_repetitions_uses_welch_and_the_component_count():
    base = [_scenarios(2000, 1000 + d) for d in (-10, 0, 10, 5, -5)]
    tuned = [_scenarios(2000, 1080 + d) for d in (-10, 0, 10, 5, -5)]
    v = concepts.user_task_rise(base, tuned, ALPHA, SOURCE)
    assert v.outcome == "pass" and "Welch" in v.test
    tiny = concepts.user_task_rise([_scenarios(50, 25)] * 5, [_scenarios(50, 28)] * 5, ALPHA, SOURCE)
    assert tiny.outcome == "fail"  # seeds agree perfectly, but 50 components cannot show 6 pp


# ---------------------------------------------------------------------------------------------
# the calibration gate and the one-line fields


def test_a_failed_calibration_makes_both_verdicts_inconclusive_with_its_reason():
    bad = concepts.LabelSource("hf:tiny", Calibration("hf:tiny", {"phonology": 0.1, "semantic": 0.9}, 100,
                                                      passed=False, reason="phonology accuracy 0.10 < 0.60"))
    same = mix(3000, **BASE_MIX)
    v = concepts.linguistic_unchanged([table(same)], [table(same)], MARGIN, ALPHA, bad)
    u = concepts.user_task_rise([_scenarios(2000, 1000)], [_scenarios(2000, 1200)], ALPHA, bad)
    for verdict in (v, u):
        assert verdict.outcome == "inconclusive" and "phonology accuracy 0.10 < 0.60" in verdict.reason
        assert "hf:tiny (calibration FAILED: lowest per-label accuracy 0.10 (phonology)" in verdict.obtained


def test_replayed_labels_say_they_were_not_calibrated_here():
    src = concepts.LabelSource("replay", None, "replayed from a.tsv and b.tsv, labels by whoever made them")
    same = mix(3000, **BASE_MIX)
    v = concepts.linguistic_unchanged([table(same)], [table(same)], MARGIN, ALPHA, src)
    assert v.outcome == "pass" and "not calibrated here; replayed from a.tsv" in v.obtained
    assert v.numbers["source"]["calibration"] is None


def test_verdict_lines_are_one_line_each():
    base, tuned = mix(500, **BASE_MIX), mix(500, **dict(BASE_MIX, phonology=0.2))
    for v in (concepts.linguistic_unchanged([table(base)], [table(tuned)], MARGIN, ALPHA, SOURCE),
              concepts.user_task_rise([table(base)], [table(tuned)], ALPHA, SOURCE)):
        for text in (v.obtained, v.expected, v.reason, v.test):
            assert "\n" not in text
        assert v.finding in ("linguistic_level_mix_unchanged_after_tuning", "user_task_concepts_rise_after_tuning")


def test_too_few_explainable_is_inconclusive():
    v = concepts.linguistic_unchanged([table({"Semantic": 5})], [table({"Semantic": 5})], MARGIN, ALPHA, SOURCE)
    assert v.outcome == "inconclusive" and "only 5 explainable" in v.reason


# ---------------------------------------------------------------------------------------------
# the paper's Table 5 rows (report only)


def test_student_p_matches_scipy():
    base = [table(dict(Semantic=s, Syntax=10)) for s in (58, 60, 62, 61, 59)]
    tuned = [table(dict(Semantic=s, Syntax=10)) for s in (57, 55, 59, 60, 58)]
    row = next(r for r in concepts.compare(base, tuned, "level", concepts.LEVELS) if r.category == "semantic")
    pb = concepts.percentages(base, "level", concepts.LEVELS)[:, 3]
    pt = concepts.percentages(tuned, "level", concepts.LEVELS)[:, 3]
    assert row.p_value == pytest.approx(stats.ttest_ind(pb, pt).pvalue)
    assert row.base_std == pytest.approx(np.std(pb))  # population std


def test_layer_summaries():
    reps = [table({"Semantic": 10}, layer=0) + table({"Syntax": 30}, unexplained=10, layer=5)]
    assert concepts.explainable_by_layer(reps) == {0: 50.0, 5: 75.0}
    g = concepts.levels_by_layer_group(reps)
    assert g[0][3] == 100.0 and g[1][2] == 100.0
