"""Finding 2's verdict statistic (METHODS §2.6): per-cluster counts, the frequency matching and the
one-sided cluster bootstrap, on constructed pair lists with a known truth."""

from __future__ import annotations

import numpy as np
import pytest
from attention_cases import directed_case, one_head_case, result
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.probes import attention as at
from shiftcheck.probes import words

INS = list(words.instruction_verbs().words)
CTL = list(words.control_verbs().words[:40])


def _verdict(base, tuned, **kw):
    kw = {"threshold": 0.5, "alpha": 0.05, "min_support": 5, "n_resamples": 999, **kw}
    return at.verb_verdict(base, tuned, 0, INS, CTL, **kw)


def test_one_head_gaining_five_instruction_verbs_is_not_evidence():
    b, t = one_head_case(INS, CTL)
    base, tuned = result("b", b, 8, 8), result("t", t, 8, 8)
    # the paper's Table 3 numbers look decisive: 5 verbs at share 1.0 vs control about 0.5
    v = _verdict(base, tuned, min_head_support=1)
    assert v.numbers["instruction_mean"] == 1.0 and v.numbers["welch_p_two_sided"] < 1e-3
    # ... but they all come from one head cluster: the bootstrap fails on the statistic itself
    assert v.outcome == "fail" and v.numbers["instruction_changed_clusters"] == 1
    assert "lower bound" in v.reason and v.numbers["bootstrap_lcb_share"] is None  # resamples without that cluster
    # and with the default minimum of clusters it is inconclusive before any test
    d = _verdict(base, tuned)
    assert d.outcome == "inconclusive" and "1 distinct head cluster" in d.reason


def test_a_directed_change_over_many_clusters_passes_and_an_undirected_one_fails():
    b, t = directed_case(INS[:20], CTL, p_up=0.85)
    v = _verdict(result("b", b, 8, 8), result("t", t, 8, 8))
    assert v.outcome == "pass", v.reason
    assert v.numbers["bootstrap_lcb_share"] > 0.5 and v.numbers["bootstrap_lcb_difference"] > 0
    assert v.numbers["p_value"] <= 0.05 and v.finding == "instruction_verbs_gain_pairs_in_the_low_layers"
    b, t = directed_case(INS[:20], CTL, p_up=0.5, seed=3)
    assert _verdict(result("b", b, 8, 8), result("t", t, 8, 8)).outcome == "fail"


def test_no_change_at_all_fails_saying_no_head_changed():
    b, _ = one_head_case(INS, CTL)
    v = _verdict(result("b", b, 8, 8), result("t", b, 8, 8))
    assert v.outcome == "fail" and v.reason.startswith("no head changed")


def test_both_claims_are_needed_intersection_union():
    kw = {"threshold": 0.5, "alpha": 0.05, "min_support": 5, "n_resamples": 999}
    # instruction verbs gain in 80 % of their changed heads, but so do the control verbs
    b, t = directed_case(INS[:20], CTL, p_up=0.8, p_control=0.8, seed=1)
    v = at.verb_verdict(result("b", b, 8, 8), result("t", t, 8, 8), 0, INS, CTL, **kw)
    assert v.numbers["bootstrap_lcb_share"] > 0.5 and v.numbers["bootstrap_lcb_difference"] <= 0
    assert v.outcome == "fail" and "instruction - control" in v.reason
    # instruction verbs far above the control verbs, but gaining in only half of their heads
    b, t = directed_case(INS[:20], CTL, p_up=0.5, p_control=0.15, seed=1)
    v = at.verb_verdict(result("b", b, 8, 8), result("t", t, 8, 8), 0, INS, CTL, **kw)
    assert v.numbers["bootstrap_lcb_difference"] > 0 and v.numbers["bootstrap_lcb_share"] <= 0.5
    assert v.outcome == "fail" and "is not above 0.5" in v.reason
    assert v.numbers["p_value"] == max(v.numbers["bootstrap_p_share"], v.numbers["bootstrap_p_difference"])


def test_query_heads_sharing_a_key_value_head_are_one_cluster():
    b, t = one_head_case(INS, CTL, n_heads=8)
    for n_kv, clusters in ((8, 16), (4, 8), (2, 4), (1, 2)):
        c = at.cluster_counts(result("b", b, 8, 8, n_kv), result("t", t, 8, 8, n_kv), CTL, [0, 1])
        assert len(c.clusters) == clusters and c.up.sum() + c.down.sum() > 0
        # the counts of a cluster are the sums over its query heads
        per_head = at.cluster_counts(result("b", b, 8, 8), result("t", t, 8, 8), CTL, [0, 1])
        assert c.up.sum() == per_head.up.sum() and c.down.sum() == per_head.down.sum()


def test_cluster_counts_match_a_hand_count():
    base = result("b", {(0, 0): [("write", "poem")], (0, 1): [("write", "a"), ("write", "b")], (1, 0): []}, 4, 2)
    tuned = result("t", {(0, 0): [("write", "poem"), ("write", "essay")], (0, 1): [("write", "a")],
                         (1, 0): [("give", "gift")]}, 4, 2)
    c = at.cluster_counts(base, tuned, ["write", "Give", "sing"], [0])
    assert c.verbs == ("write", "give", "sing") and c.clusters == ((0, 0), (0, 1))
    assert c.up.tolist() == [[1, 0, 0], [0, 0, 0]] and c.down.tolist() == [[0, 0, 0], [1, 0, 0]]
    assert c.base_count.tolist() == [3, 0, 0] and c.supported.tolist() == [True, False, False]


def test_frequency_strata_and_matching_weights_by_hand():
    assert at.frequency_stratum(np.array([0, 1, 2, 3, 4, 7, 8])).tolist() == [0, 1, 2, 2, 3, 3, 4]
    def counts(base_counts, supported):
        n = len(base_counts)
        up = np.array([[1 if s else 0 for s in supported]])
        return at.ClusterCounts(tuple(f"v{i}" for i in range(n)), ((0, 0),), up, np.zeros_like(up), np.array(base_counts))

    ins = counts([0, 0, 5], [True, True, True])  # strata 0, 0, 3
    ctl = counts([0, 0, 0, 0, 6, 1, 20], [True, True, True, False, True, True, True])  # 3 supported in stratum 0
    w, unmatched = at.matching_weights(ins, ctl)
    assert w.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 0, 1, 0, 0]) and unmatched == 0


def test_a_rare_verb_can_only_gain_so_unmatched_controls_pass_on_noise_and_matched_do_not():
    """Instruction verbs absent from every base list: any change is a gain (share 1). Frequent control
    verbs change both ways. Without matching the difference looks large; matched to control verbs
    equally absent from the base (which also can only gain), it vanishes."""
    rng = np.random.default_rng(0)
    rare_ctl = CTL[:10]
    freq_ctl = CTL[10:40]
    base, tuned = {}, {}
    for layer in range(2):
        for head in range(8):
            b_pairs, t_pairs = [], []
            for j, v in enumerate(INS[:15] + rare_ctl):  # absent from the base; noise adds a pair sometimes
                if rng.random() < 0.3:
                    t_pairs.append((v, f"zr{layer}{head}{j}"))
            for j, v in enumerate(freq_ctl):
                b = int(rng.integers(1, 4))
                t = max(0, b + int(rng.integers(-1, 2)))
                b_pairs += [(v, f"zf{layer}{head}{j}{i}") for i in range(b)]
                t_pairs += [(v, f"zf{layer}{head}{j}{i}") for i in range(t)]
            base[(layer, head)], tuned[(layer, head)] = b_pairs, t_pairs
    b, t = result("b", base, 8, 8), result("t", tuned, 8, 8)
    kw = {"threshold": 0.5, "alpha": 0.05, "min_support": 5, "n_resamples": 999}
    unmatched = at.verb_verdict(b, t, 0, INS[:15], CTL[:40], match=False, **kw)
    matched = at.verb_verdict(b, t, 0, INS[:15], CTL[:40], match=True, **kw)
    assert unmatched.outcome == "pass"  # the artefact the matching exists for
    assert matched.outcome == "fail" and matched.numbers["bootstrap_control_share"] == 1.0


def test_the_bootstrap_is_seeded_and_deterministic():
    b, t = directed_case(INS[:20], CTL, p_up=0.7, seed=2)
    args = (result("b", b, 8, 8), result("t", t, 8, 8), 0, INS, CTL, 0.5, 0.05)
    r1, r2 = at.group_report(*args, n_resamples=499, seed=7), at.group_report(*args, n_resamples=499, seed=7)
    r3 = at.group_report(*args, n_resamples=499, seed=8)
    assert r1 == r2 and r1["bootstrap"]["lcb_share"] != r3["bootstrap"]["lcb_share"]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 12), st.sampled_from([0.05, 0.1, 0.01]))
def test_the_lower_bound_clears_the_null_exactly_when_p_is_at_most_alpha(seed, n_clusters, alpha):
    rng = np.random.default_rng(seed)
    up = rng.integers(0, 3, size=(n_clusters, 6))
    down = rng.integers(0, 3, size=(n_clusters, 6))
    ins = at.ClusterCounts(tuple("abcdef"), tuple((0, c) for c in range(n_clusters)), up, down, np.zeros(6, int))
    ctl = at.ClusterCounts(tuple("ghijkl"), ins.clusters, down, up, np.zeros(6, int))
    bs = at.cluster_bootstrap(ins, ctl, 0.5, alpha, n_resamples=199 if alpha != 0.01 else 299, seed=seed)
    k = int(np.floor(alpha * (bs.n_resamples + 1)))
    assert (bs.lcb_share > 0.5) == (bs.p_share <= k / (bs.n_resamples + 1))
    assert (bs.lcb_difference > 0) == (bs.p_difference <= k / (bs.n_resamples + 1))
    assert bs.passes(0.5) == (bs.p <= k / (bs.n_resamples + 1))
