"""Finding 2's verdict over seeds, in CI: nulls with support fail at most at the alpha rate, and
planted gains pass, on the pair lists of the lexical test model (tests/lexical.py, 16 head clusters
in the lowest group).

The series edit the base model's real head-level lists (computed once), so 20+ seeds cost seconds;
one model-level instance of the same construction runs through the probe (W_Q/W_K planted).
The model-level series are measured by benchmarks/attention_nulls.py (docs/ATTENTION.md).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from attention_cases import edit_lists, head_lists, result
from scipy.stats import binomtest

from shiftcheck.probes import attention as at
from shiftcheck.probes import words

SEEDS = 20
ALPHA = 0.05
LAYERS = [0, 1]


@pytest.fixture(scope="module")
def lexical():
    from lexical import BIG, PairLister, lexical_model, lexical_vocab

    kv = words.load_glove()
    vocab = lexical_vocab(kv)
    model, tok = lexical_model(kv, vocab, **BIG)
    lister = PairLister(tok, kv, model)
    base = lister.result(model, LAYERS, "base")
    iv = [v for v in words.instruction_verbs().words if v in tok.get_vocab()]
    # each instruction verb's partners: its 3 nearest GloVe neighbours in the vocabulary (no verb of either list)
    G = words.glove_matrix(kv, vocab)
    G = G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-9)
    banned = set(iv) | set(words.control_verbs().words)
    allowed = np.array([w.isalpha() and w not in banned for w in vocab])
    partners = {}
    for v in iv:
        sims = np.where(allowed, G @ G[vocab.index(v)], -1.0)
        partners[v] = [vocab[i] for i in np.argsort(-sims)[:3]]
    return {"model": model, "tok": tok, "kv": kv, "lister": lister, "base": base, "iv": iv, "partners": partners,
            "vocab": [w for w in vocab if w.isalpha()], "cv": list(words.control_verbs().words)}


def _verdict(lx, base_lists, tuned_lists, **kw):
    b = result("b", base_lists, 8, 16, 8)
    t = result("t", tuned_lists, 8, 16, 8)
    return at.verb_verdict(b, t, 0, lx["iv"], lx["cv"], 0.5, ALPHA, 5, n_resamples=999, **kw)


def _series(lx, construction: str, seeds: int = SEEDS, **kw) -> list:
    lists = head_lists(lx["base"], LAYERS)
    iv, partners = lx["iv"], lx["partners"]
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        if construction == "shuffle":  # every verb planted on both sides, in independent random heads
            pb, pt = partners, partners
        elif construction == "noise":  # the tuned lists only: pairs dropped and random pairs added
            pb, pt = None, {}
        elif construction == "split":  # half the verbs planted in the base, the other half in the tuned model
            perm = list(rng.permutation(iv))
            pb = {v: partners[v] for v in perm[: len(iv) // 2]}
            pt = {v: partners[v] for v in perm[len(iv) // 2 :]}
        else:  # "planted": every verb planted in the tuned model only
            pb, pt = {}, partners
        common = {"n_heads": 16, "n_kv_heads": 8, "p_head": 0.4, "drop": 0.2, "add": 0.2, "vocab": lx["vocab"]}
        if pb is None:
            common.update(drop=0.5, add=2.0)
        base = lists if pb is None else edit_lists(lists, rng, plant=pb, **common)
        out.append(_verdict(lx, base, edit_lists(lists, rng, plant=pt, **common), **kw))
    return out


def _rate_not_above_alpha(verdicts) -> tuple[int, float]:
    k = sum(v.outcome == "pass" for v in verdicts)
    return k, binomtest(k, len(verdicts), ALPHA, alternative="greater").pvalue


@pytest.mark.parametrize("construction", ["shuffle", "split"])
def test_nulls_with_support_pass_at_most_at_the_alpha_rate(lexical, construction):
    verdicts = _series(lexical, construction)
    # support: every seed changes >= 10 instruction verbs in >= 10 head clusters, so a fail is the statistic's
    assert all(v.numbers["instruction_verbs_with_change"] >= 10 and v.numbers["instruction_changed_clusters"] >= 10
               for v in verdicts)
    assert all(v.outcome in ("pass", "fail") for v in verdicts)
    k, p = _rate_not_above_alpha(verdicts)
    ci = binomtest(k, len(verdicts)).proportion_ci(method="exact")
    print(f"{construction}: {k}/{len(verdicts)} pass, Clopper-Pearson 95 % [{ci.low:.3f}, {ci.high:.3f}]")
    assert p > ALPHA, f"{k}/{len(verdicts)} nulls pass: significantly above alpha (binomial p = {p:.3g})"


def test_planted_gains_pass_with_power(lexical):
    verdicts = _series(lexical, "planted")
    k = sum(v.outcome == "pass" for v in verdicts)
    ci = binomtest(k, len(verdicts)).proportion_ci(method="exact")
    print(f"planted: power {k}/{len(verdicts)}, Clopper-Pearson 95 % [{ci.low:.3f}, {ci.high:.3f}]")
    assert k >= 0.8 * len(verdicts)


def test_one_model_level_null_fails_on_the_statistic(lexical):
    """The shuffle construction on the weights: every instruction verb planted into random (layer, kv
    head)s of the base and, independently, of the tuned model (W_Q/W_K), then the real probe."""
    from lexical import plant_random_heads

    lx = lexical
    mb, mt = copy.deepcopy(lx["model"]), copy.deepcopy(lx["model"])
    plant_random_heads(mb, lx["tok"], lx["kv"], lx["iv"], LAYERS, 0.5, 1000, not_keys=frozenset(lx["iv"]))
    plant_random_heads(mt, lx["tok"], lx["kv"], lx["iv"], LAYERS, 0.5, 2000, not_keys=frozenset(lx["iv"]))
    b, t = lx["lister"].result(mb, LAYERS), lx["lister"].result(mt, LAYERS)
    v = at.verb_verdict(b, t, 0, lx["iv"], lx["cv"], 0.5, ALPHA, 5)
    assert v.numbers["instruction_changed_clusters"] >= 10 and v.numbers["instruction_verbs_with_change"] >= 10
    assert v.outcome == "fail", v.obtained


def test_noise_on_the_tuned_lists_only_fails_with_matched_controls(lexical):
    """Frequency: instruction verbs are rare in the base lists, so random additions to the tuned lists
    mostly add them (a gain) while frequent words are also dropped (a loss). The verdict compares them
    with control verbs of the same base-count strata; the unmatched rate is printed for the docs."""
    matched = _series(lexical, "noise")
    unmatched = _series(lexical, "noise", match=False)
    supported = [v.numbers["instruction_changed_clusters"] >= 10 and v.numbers["instruction_verbs_with_change"] >= 10
                 for v in matched]
    assert sum(supported) >= 18  # seed 17 has 9 clusters: inconclusive, counted as not passing
    k, p = _rate_not_above_alpha(matched)
    ku, _ = _rate_not_above_alpha(unmatched)
    assert ku > k  # without matching, rare instruction verbs "gain" on noise: 15 of 20 pass (docs)
    shares = [v.numbers["bootstrap_instruction_share"] for v in matched]
    print(f"noise: matched {k}/{len(matched)}, unmatched {ku}/{len(unmatched)} pass; instruction share "
          f"{np.mean(shares):.3f}, matched control {np.mean([v.numbers['bootstrap_control_share'] for v in matched]):.3f}, "
          f"unmatched control {np.mean([v.numbers['bootstrap_control_share'] for v in unmatched]):.3f}")
    assert p > ALPHA, f"{k}/{len(matched)} noise runs pass"
