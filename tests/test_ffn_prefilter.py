"""FFN top words through the exact float32 prefilter (probes/exact_topk.py) equal the whole float64
product's (the code before it, copied below as the reference): indices, their order and the float32
scores, including duplicate and zero word rows, exact ties and K above the non-zero words. And the
probe prepares Ê_o once per model, not once per unit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import DEFAULT_WORDS, tiny_model, word_tokenizer
from test_exact_topk import assert_a_top_k, first_copies
from shiftcheck.probes import ffn
from shiftcheck.probes import words as wordlib


def old_top_words(V_R: torch.Tensor, E_hat: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """probes/ffn top_words at eed6f21, before the prefilter, with one change: copies of a duplicate
    word vector take their first copy's value. The whole product may round two copies 1 ulp apart
    (MKL did on a 7 x 7 case), so which copy it ranked first was the kernel's rounding."""
    proj = (V_R @ E_hat.t())[:, first_copies(E_hat)].abs()
    score, idx = proj.topk(min(K, proj.shape[1]), dim=1)
    return idx, score


def _unit_rows(E: np.ndarray) -> np.ndarray:
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 60), st.integers(2, 20), st.integers(1, 10), st.integers(1, 70),
       st.sampled_from(["plain", "duplicates", "zeros", "ties", "mostly_zero"]))
def test_prefiltered_top_words_equal_the_whole_float64_product(seed, n_words, d_model, n_comp, K, case):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n_words, d_model))
    if case == "duplicates":
        E[rng.integers(0, n_words, n_words // 2)] = E[rng.integers(0, n_words, n_words // 2)]
    if case in ("zeros", "mostly_zero"):  # words without tokens; "mostly_zero" puts K past the rest
        E[rng.uniform(size=n_words) < (0.5 if case == "zeros" else 0.9)] = 0.0
    if case == "ties":
        E[rng.integers(0, n_words, n_words // 2)] = -E[rng.integers(0, n_words, n_words // 2)]
    E_hat = torch.tensor(_unit_rows(E))
    V = torch.tensor(np.linalg.qr(rng.normal(size=(d_model, d_model)))[0][:n_comp])  # orthonormal rows
    want_i, want_s = old_top_words(V, E_hat, K)
    for E_arg in (E_hat, ffn.output_word_matrix(E_hat)):
        got_i, got_s = ffn.top_words(V, E_arg, K)
        if case == "ties":
            assert_a_top_k(got_i, got_s, V @ E_hat.t())
            continue
        assert torch.equal(got_i, want_i)
        assert np.array_equal(got_s.numpy().astype(np.float32), want_s.numpy().astype(np.float32))


def test_float32_inputs_keep_the_whole_float32_product():
    rng = np.random.default_rng(1)
    E = torch.tensor(_unit_rows(rng.normal(size=(50, 8))), dtype=torch.float32)
    V = torch.tensor(rng.normal(size=(4, 8)), dtype=torch.float32)
    got_i, got_s = ffn.top_words(V, E, 10)
    want_i, want_s = old_top_words(V, E, 10)
    assert got_s.dtype == torch.float32 and torch.equal(got_i, want_i) and torch.equal(got_s, want_s)


def test_probe_layers_equal_the_whole_product_and_words_are_tokenised_once(monkeypatch):
    tok = word_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), num_hidden_layers=3)
    words = tuple(DEFAULT_WORDS)
    calls = []
    real = wordlib.word_token_ids
    monkeypatch.setattr(wordlib, "word_token_ids", lambda *a, **k: calls.append(1) or real(*a, **k))
    probe = ffn.FfnProbe(words, 3, ffn.FfnConfig(300, 5, "digest"), layers_per_unit=1)
    ckpt = SimpleNamespace(model=model, tokenizer=tok)
    entries = [probe.run_unit(ckpt, u) for u in probe.units()]
    assert len(calls) == 1  # three units, one tokenisation
    from shiftcheck.probes.models.architectures import WeightViews

    views = WeightViews(model)
    E_hat, _ = ffn.word_vectors_for(views, tok, words)
    for e in entries:
        for lc in ffn.from_entry(e).layers:
            W = views.W_out(lc.layer).to(torch.float64)
            V_R = ffn.principal_directions(ffn.centre_columns(W), 300)[1]
            i, s = old_top_words(V_R, E_hat.to(torch.float64), 5)
            assert np.array_equal(lc.top_idx, i.numpy().astype(np.int32))
            assert np.array_equal(lc.top_score, s.numpy().astype(np.float32))
