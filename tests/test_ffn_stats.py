"""Finding 3's statistics (§3.4) on constructed label tables: equal and shifted, with 5 repetitions
(Student two-sided) and with one (pooled chi-square), the equivalence margin, non-inferiority of
the user-task share, label parsing, and calibration under the null."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from shiftcheck.probes.ffn import concepts
from shiftcheck.probes.ffn.annotators import Annotation


def table(levels: dict[str, int], scenario: str = "daily writing", unexplained: int = 10, layer: int = 0):
    out = [Annotation(layer, i + 1, ("w",), "Cannot Tell") for i in range(unexplained)]
    for level, n in levels.items():
        out += [Annotation(layer, 100 + len(out), ("w",), "thing", scenario, level) for _ in range(n)]
    return out


MIX = {"Semantic": 60, "Morphology": 20, "Phonology": 10, "Syntax": 10}


def test_labels_are_substrings_of_the_lower_cased_answer():
    assert concepts.labels("Semantics", concepts.LEVELS)["semantic"] == 1
    assert concepts.labels("daily writing; Solving math problems", concepts.SCENARIOS) == {
        "writing": 1, "math": 1, "coding": 0, "translation": 0, "none": 0}


def test_equal_tables_pass_with_one_repetition():
    v = concepts.linguistic_unchanged([table(MIX)], [table(MIX)], 3.0, 0.05, "heuristic")
    assert v.outcome == "pass" and v.alternative == "equivalence"
    assert "chi-square" in v.test


def test_shift_beyond_tolerance_fails_and_names_the_category():
    shifted = dict(MIX, Semantic=45, Phonology=25)
    v = concepts.linguistic_unchanged([table(MIX)], [table(shifted)], 3.0, 0.05, "heuristic")
    assert v.outcome == "fail"
    assert "phonology moved +15.0 pp" in v.reason or "semantic moved -15.0 pp" in v.reason
    assert "phonology | 10.0 ± 0.0 | 25.0 ± 0.0 | +15.0" in v.obtained  # the table is in the message


def test_small_shift_within_tolerance_but_significant_with_five_repetitions_fails():
    rng = np.random.default_rng(0)
    base = [table(dict(MIX, Semantic=60 + int(d))) for d in rng.integers(0, 2, 5)]
    tuned = [table(dict(MIX, Semantic=60 + int(d), Syntax=12)) for d in rng.integers(0, 2, 5)]
    v = concepts.linguistic_unchanged(base, tuned, 3.0, 0.05, "openai:x")
    assert v.numbers["max_abs_diff_pp"] < 3.0
    assert v.outcome == "fail" and "significant" in v.reason and "Student" in v.test


def test_student_p_matches_scipy():
    base = [table(dict(MIX, Semantic=s)) for s in (58, 60, 62, 61, 59)]
    tuned = [table(dict(MIX, Semantic=s)) for s in (57, 55, 59, 60, 58)]
    row = next(r for r in concepts.compare(base, tuned, "level", concepts.LEVELS) if r.category == "semantic")
    pb = concepts.percentages(base, "level", concepts.LEVELS)[:, 3]
    pt = concepts.percentages(tuned, "level", concepts.LEVELS)[:, 3]
    assert row.p_value == pytest.approx(stats.ttest_ind(pb, pt).pvalue)
    assert row.base_std == pytest.approx(np.std(pb))  # population std


def test_too_few_explainable_is_inconclusive():
    v = concepts.linguistic_unchanged([table({"Semantic": 5})], [table({"Semantic": 5})], 3.0, 0.05, "h")
    assert v.outcome == "inconclusive"


def test_user_task_share_non_inferiority():
    base = [table(MIX, scenario="coding")]
    same = concepts.user_tasks_not_lower(base, [table(MIX, scenario="coding")], 3.0, 0.05, "h")
    drop = concepts.user_tasks_not_lower(base, [table(MIX, scenario="translation")], 3.0, 0.05, "h")
    assert same.passed and same.alternative == "greater-or-equal"
    assert drop.outcome == "fail" and "dropped" in drop.reason


def test_null_calibration_of_the_student_test():
    """Same label distribution in both models, 5 repetitions of 100 explainable components: the
    per-category rejection rate at alpha = 0.05 stays near alpha."""
    rng = np.random.default_rng(42)
    p = np.array([0.1, 0.2, 0.1, 0.6])
    rejections, n = 0, 300
    for _ in range(n):
        def reps():
            return [table(dict(zip(("Phonology", "Morphology", "Syntax", "Semantic"), rng.multinomial(100, p))),
                          unexplained=0) for _ in range(5)]
        rows = concepts.compare(reps(), reps(), "level", concepts.LEVELS)
        rejections += rows[3].p_value < 0.05
    assert rejections / n < 0.1


def test_layer_summaries():
    reps = [table({"Semantic": 10}, layer=0) + table({"Syntax": 30}, unexplained=10, layer=5)]
    assert concepts.explainable_by_layer(reps) == {0: 50.0, 5: 75.0}
    g = concepts.levels_by_layer_group(reps)
    assert g[0][3] == 100.0 and g[1][2] == 100.0
