"""Findings 2 and 3's release checks (probes/release/pairlists.py, subspaces.py) on planted truths:

* the statistics themselves on synthetic pair lists and subspaces (identity, invariance to a
  rotation inside the subspace, planted disagreement, no evidence);
* a bf16 cast of the lexical test model (tests/lexical.py, BIG: 16 heads per layer) passes both
  checks, while a copy with instruction verbs planted in layer 0 fails the Jaccard and world:bad-cpt
  given as the release of world:good fails the FFN check;
* a LoRA merged at the wrong scale (4 instead of 1; peft, built in the test) fails the KL preflight,
  the pair-list Jaccard and the FFN subspaces, while the same merge at the right scale, cast to
  bf16, passes them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.probes.attention import AttentionResult
from shiftcheck.probes.release.pairlists import (JACCARD_THRESHOLD, MIN_HEADS, AssertedLayersProbe, asserted_layers,
                                                 jaccard, pair_list_agreement)
from shiftcheck.probes.release.subspaces import (MEAN_COS2_THRESHOLD, components_for, model_subspaces,
                                                 subspace_agreement, subspace_cosines)

WORLD = Path(__file__).resolve().parents[1] / "probes" / "world" / "shipped" / "seed0"


def _result(pairs: dict[tuple[int, int], list[tuple[int, int]]], n_heads: int = 4, n_layers: int = 2) -> AttentionResult:
    words = tuple(f"w{i}" for i in range(50))
    return AttentionResult("x", n_layers, n_heads, words, 0,
                           {k: np.array(v, dtype=np.int64).reshape(-1, 2) for k, v in pairs.items()})


# ---------------------------------------------------------------------------------------------
# the statistics


def test_jaccard_and_heads_without_evidence():
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) is None
    lists = {(0, h): [(h, h + 1), (h, h + 2), (h + 1, h + 3)] for h in range(4)}
    same = pair_list_agreement(_result(lists), _result(lists), [0, 1])
    # layer 1 has no pairs on either side: 4 heads carry no evidence, the 4 of layer 0 are too few
    assert len(same.informative) == 4 and same.statistic == 1.0
    assert same.outcome() == "inconclusive" and MIN_HEADS > 4
    assert same.to_dict()["empty_heads"] == 4


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_changed=st.integers(0, 16))
def test_jaccard_quantile_fails_exactly_when_enough_heads_lose_their_pairs(seed, n_changed):
    """16 layers x 4 heads with 10 pairs each; ``n_changed`` heads get disjoint lists (Jaccard 0).
    The 10 % quantile over 64 heads (numpy 'lower') is 0 iff at least 7 heads changed."""
    rng = np.random.default_rng(seed)
    src = {(l, h): [tuple(sorted(rng.choice(50, 2, replace=False))) for _ in range(10)] for l in range(16) for h in range(4)}
    src = {k: sorted(set(v)) for k, v in src.items()}
    art = dict(src)
    for key in map(tuple, rng.permutation(list(src))[:n_changed]):
        art[key] = [(a + 50, b + 50) for a, b in src[key]]  # words the source never pairs
    words = tuple(f"w{i}" for i in range(100))
    make = lambda p: AttentionResult("x", 16, 4, words, 0, {k: np.array(v).reshape(-1, 2) for k, v in p.items()})  # noqa: E731
    agreement = pair_list_agreement(make(src), make(art), range(16))
    assert agreement.outcome() == ("fail" if n_changed >= 7 else "pass")


def _orthonormal(rng, r, d):
    return np.linalg.qr(rng.normal(size=(d, r)))[0].T  # (r, d) orthonormal rows


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), r=st.integers(2, 12))
def test_subspace_cosines_ignore_the_basis_and_see_the_span(seed, r):
    rng = np.random.default_rng(seed)
    V = _orthonormal(rng, r, 40)
    rotation = np.linalg.qr(rng.normal(size=(r, r)))[0]  # components swapped and mixed inside the span
    assert np.allclose(subspace_cosines(V, rotation @ V), 1.0)
    other = _orthonormal(rng, 40, 40)[r : 2 * r]  # orthogonal complement rows of a fresh basis ...
    W = other - (other @ V.T) @ V  # ... made exactly orthogonal to V
    W = np.linalg.qr(W.T)[0].T
    assert np.allclose(subspace_cosines(V, W), 0.0, atol=1e-10)
    half = np.vstack([V[: r // 2], W[: r - r // 2]])  # shares r // 2 directions
    assert np.mean(subspace_cosines(V, half) ** 2) == pytest.approx((r // 2) / r)


def test_components_for_never_fills_the_space():
    assert components_for(576, 1536) == 64  # SmolLM2
    assert components_for(96, 192) == 48  # the world
    assert components_for(256, 64) == 32  # the lexical BIG model


def test_asserted_layers_probe_keeps_the_attention_probes_keys():
    from shiftcheck.probes import words
    from shiftcheck.probes.attention import AttentionProbe

    probe = AttentionProbe(30, words.WordList("w", ("a", "b"), "test"))
    sub = AssertedLayersProbe(probe, tuple(asserted_layers(30)))
    assert asserted_layers(30) == list(range(8))
    assert sub.units() == [{"layers": [0, 4]}, {"layers": [4, 8]}] and sub.computed_layers() == list(range(8))
    assert (sub.name, sub.code_version, sub.cache_config()) == (probe.name, probe.code_version, probe.cache_config())


# ---------------------------------------------------------------------------------------------
# proofs on models


@pytest.fixture(scope="module")
def lexical():
    from lexical import BIG, PairLister, lexical_model, lexical_vocab

    from shiftcheck.probes import words

    kv = words.load_glove(None)
    model, tok = lexical_model(kv, lexical_vocab(kv), **BIG)
    return {"kv": kv, "model": model, "tok": tok, "lister": PairLister(tok, kv, model)}


LAYERS = [0, 1, 2, 3]  # AttentionProbe's first unit: it holds g0 (layers 0-1) of the 8-layer model


def _checks(lx, source, artifact):
    from shiftcheck.probes.models.architectures import WeightViews

    lister = lx["lister"]
    pairs = pair_list_agreement(lister.result(source, LAYERS), lister.result(artifact, LAYERS), LAYERS)
    vs, va = WeightViews(source), WeightViews(artifact)
    r = components_for(vs.d_model, vs.d_mlp)
    return pairs, subspace_agreement(model_subspaces(vs, r), model_subspaces(va, r))


def _cast(model, dtype):
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(p.to(dtype).to(p.dtype))
    return out


def test_a_bf16_cast_passes_and_planted_verbs_fail_the_pair_lists(lexical):
    from lexical import plant_verb_relations

    pairs, subspaces = _checks(lexical, lexical["model"], _cast(lexical["model"], torch.bfloat16))
    assert pairs.outcome() == "pass" and len(pairs.informative) >= 32, pairs.to_dict()
    assert subspaces.outcome() == "pass", subspaces.to_dict()
    planted = copy.deepcopy(lexical["model"])
    plant_verb_relations(planted, lexical["tok"], lexical["kv"], layer=0)  # finding 2's planted truth, layer 0 only
    pairs, _ = _checks(lexical, lexical["model"], planted)
    assert pairs.outcome() == "fail" and pairs.statistic < JACCARD_THRESHOLD
    layer0 = next(r for r in pairs.per_layer() if r["layer"] == 0)
    assert layer0["median"] < 0.5 and all(r["min"] == 1.0 for r in pairs.per_layer() if r["layer"] != 0)


def test_another_tune_given_as_the_release_fails_the_ffn_subspaces():
    from transformers import AutoModelForCausalLM

    from shiftcheck.probes.models.architectures import WeightViews

    load = lambda name: AutoModelForCausalLM.from_pretrained(WORLD / name, dtype=torch.float32)  # noqa: E731
    good = load("good")
    views = WeightViews(good)
    r = components_for(views.d_model, views.d_mlp)
    source = model_subspaces(views, r)
    assert subspace_agreement(source, model_subspaces(WeightViews(_cast(good, torch.bfloat16)), r)).outcome() == "pass"
    for other in ("bad-cpt", "base"):
        agreement = subspace_agreement(source, model_subspaces(WeightViews(load(other)), r))
        assert agreement.outcome() == "fail", (other, agreement.to_dict())


def _kl(source, artifact, tok):
    from shiftcheck.probes.prompts import Prompt
    from shiftcheck.probes.release import kl

    texts = ["write a short poem about the sea", "explain the question of the day", "list the red house and the cat",
             "describe a good friend", "give me the name of the city", "tell the story of a small dog"]
    prompts = [Prompt(f"p{i}", "toy", t, ((0, len(t.split()[0])),)) for i, t in enumerate(texts)]
    responses = kl.greedy_responses(source, tok, prompts, 8, chat_template=False)
    reference = kl.reference_pass(source, tok, prompts, responses, chat_template=False)
    return kl.result_from_entries("source", "artifact", [kl.other_pass(artifact, tok, prompts, reference, False)]).pooled


def test_a_lora_merged_at_the_wrong_scale_fails_the_release_checks(lexical):
    from shiftcheck.probes.release.artifact import RELEASE_KL
    from shiftcheck.probes.release.casts import lora_merged

    source = lora_merged(lexical["model"], 1.0)
    good = _cast(source, torch.bfloat16)  # the right merge, shipped in bf16
    wrong = lora_merged(lexical["model"], 4.0)
    assert _kl(source, good, lexical["tok"]).mean_kl < RELEASE_KL
    pairs, subspaces = _checks(lexical, source, good)
    assert (pairs.outcome(), subspaces.outcome()) == ("pass", "pass"), (pairs.to_dict(), subspaces.to_dict())
    row = _kl(source, wrong, lexical["tok"])
    assert row.mean_kl > RELEASE_KL, row
    pairs, subspaces = _checks(lexical, source, wrong)
    assert pairs.outcome() == "fail", pairs.to_dict()
    assert subspaces.outcome() == "fail", subspaces.to_dict()
    assert subspaces.statistic < MEAN_COS2_THRESHOLD
