"""The KL preflight's top-k + tail approximation against the exact KL (probes/release/kl.py).

The approximation is the exact KL of the two distributions coarse-grained onto the reference's top-k
tokens plus one tail bin, so it must (a) never exceed the exact KL, (b) miss exactly the tail mass
times the KL of the two tail-conditional distributions, (c) be 0 for identical models and (d) be
positive for different ones. (a)-(b) are checked on random distributions, (c)-(d) on tiny models,
where the exact KL is computed here from both models' full next-token distributions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.probes.cache_key import CacheEntry
from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.release import kl
from tests.builders import tiny_model, word_tokenizer


def _numpy_kl(p: np.ndarray, q: np.ndarray) -> float:
    keep = p > 0
    return float((p[keep] * (np.log(p[keep]) - np.log(q[keep]))).sum())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.integers(5, 80), k=st.integers(1, 70),
       scale=st.floats(0.1, 8.0), shift=st.floats(0.0, 3.0))
def test_approximation_is_the_coarse_grained_kl(seed, vocab, k, scale, shift):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, vocab)) * scale
    b = a + rng.normal(size=(3, vocab)) * shift
    logp = torch.log_softmax(torch.tensor(a, dtype=torch.float64), -1)
    logq = torch.log_softmax(torch.tensor(b, dtype=torch.float64), -1)
    ids, vals, tail = kl.top_k_of(logp, k)
    approx = kl.kl_from_top_k(ids, vals, tail, logq)
    exact = kl.exact_kl(logp, logq)
    p, q = logp.exp().numpy(), logq.exp().numpy()
    for row in range(3):
        in_top = np.zeros(vocab, dtype=bool)
        in_top[ids[row]] = True
        p_t, q_t = p[row][~in_top].sum(), q[row][~in_top].sum()
        # the log-sum inequality's gap, computed here from the full distributions
        missed = p_t * _numpy_kl(p[row][~in_top] / p_t, q[row][~in_top] / q_t) if p_t > 0 else 0.0
        assert approx[row] <= exact[row] + 1e-9
        assert exact[row] - approx[row] == pytest.approx(missed, abs=1e-8)
        assert np.exp(tail[row]) == pytest.approx(p_t, abs=1e-12)
    if k >= vocab:
        np.testing.assert_allclose(approx, exact, atol=1e-9)


WORDS = "write a short poem about the sea . list three red city names : explain why the cat is happy ?"


def _prompts() -> tuple[Prompt, ...]:
    texts = ["write a short poem about the sea .", "list the red city", "explain why the cat is happy ?",
             "translate a long story", "describe the blue river"]
    return tuple(Prompt(f"t{i}", "alpha" if i % 2 else "beta", t, ((0, len(t.split()[0])),))
                 for i, t in enumerate(texts))


def _responses(rng: np.random.Generator, tokenizer, n: int) -> list[tuple[int, ...]]:
    words = len(tokenizer)
    return [tuple(int(x) for x in rng.integers(4, words, size=int(rng.integers(3, 9)))) for _ in range(n)]


def _exact_per_prompt(tuned, base, tokenizer, prompts, responses) -> list[np.ndarray]:
    out = []
    for ctx, resp in zip(kl._contexts(tokenizer, prompts, False), responses):
        out.append(kl.exact_kl(kl.response_log_probs(tuned, ctx, resp), kl.response_log_probs(base, ctx, resp)))
    return out


@pytest.mark.parametrize("k", [4, 12, 64])
def test_tiny_models_approximation_error_bounded(k):
    tokenizer = word_tokenizer()
    tuned = tiny_model("llama", vocab_size=len(tokenizer), seed=1)
    base = tiny_model("llama", vocab_size=len(tokenizer), seed=2)
    prompts = _prompts()
    responses = _responses(np.random.default_rng(0), tokenizer, len(prompts))
    ref = kl.reference_pass(tuned, tokenizer, prompts, responses, False, k)
    other = kl.other_pass(base, tokenizer, prompts, ref, False)
    result = kl.result_from_entries("tuned", "base", [other])
    exact = _exact_per_prompt(tuned, base, tokenizer, prompts, responses)
    for item, ex in zip(result.prompts, exact):
        assert item.kl.shape == ex.shape
        assert np.all(item.kl <= ex + 1e-9)
        # never more than the divergence left in the tail: at most the whole exact KL, zero at k >= vocab
        if k >= len(tokenizer):
            np.testing.assert_allclose(item.kl, ex, atol=1e-9)
    pooled_exact = float(np.concatenate(exact).mean())
    assert 0 < result.pooled.mean_kl <= pooled_exact + 1e-9
    assert not result.identical()


def test_identical_models_give_zero_and_different_ones_do_not():
    tokenizer = word_tokenizer()
    tuned = tiny_model("llama", vocab_size=len(tokenizer), seed=3)
    same = tiny_model("llama", vocab_size=len(tokenizer), seed=3)
    prompts = _prompts()
    responses = _responses(np.random.default_rng(1), tokenizer, len(prompts))
    ref = kl.reference_pass(tuned, tokenizer, prompts, responses, False, 8)
    zero = kl.result_from_entries("tuned", "same", [kl.other_pass(same, tokenizer, prompts, ref, False)])
    assert zero.pooled.mean_kl == pytest.approx(0.0, abs=1e-12)
    assert zero.identical()
    assert zero.pooled.top1_agreement == 1.0
    # a planted change (the output head sharpened, as a tune sharpens its answers): KL above the
    # "identical" threshold
    with torch.no_grad():
        same.lm_head.weight.mul_(4.0)
    moved = kl.result_from_entries("tuned", "moved", [kl.other_pass(same, tokenizer, prompts, ref, False)])
    assert moved.pooled.mean_kl > kl.IDENTICAL_KL
    assert not moved.identical()


def test_groups_pool_over_tokens_and_empty_responses_count_no_tokens():
    meta = {"role": "other", "k": 4, "instances": [{"id": "a", "source": "s1"}, {"id": "b", "source": "s2"},
                                                    {"id": "c", "source": "s1"}]}
    arrays = {"a/kl": np.array([1.0, 3.0]), "a/tail": np.zeros(2), "a/agree": np.array([1, 0]),
              "b/kl": np.array([6.0]), "b/tail": np.zeros(1), "b/agree": np.array([1]),
              "c/kl": np.zeros(0), "c/tail": np.zeros(0), "c/agree": np.zeros(0)}
    result = kl.result_from_entries("tuned", "base", [CacheEntry(meta, arrays)])
    rows = {r.group: r for r in result.rows()}
    assert (rows["s1"].n_prompts, rows["s1"].n_tokens, rows["s1"].mean_kl) == (2, 2, 2.0)
    assert rows["pooled"].mean_kl == pytest.approx(10 / 3)  # over tokens, not over prompts
    assert rows["pooled"].max_prompt_kl == 6.0
    assert rows["pooled"].top1_agreement == pytest.approx(2 / 3)
    assert len(kl.table(result)) == 4
