"""Probe 3's maths (METHODS §3.1-3.2) against numpy and hand-built embeddings, its TSV format (§6),
and the cached FfnProbe on a tiny random Llama and GPT-2 (down-projection orientation)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from builders import DEFAULT_WORDS, tiny_model, word_tokenizer
from shiftcheck.probes import ffn
from shiftcheck.probes.cache import ResultCache
from shiftcheck.probes.models.architectures import WeightViews
from shiftcheck.probes.runner import run


@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (40, 40)])
def test_pca_matches_numpy(shape):
    rng = np.random.default_rng(0)
    W = rng.normal(size=shape) * rng.uniform(0.1, 3.0, size=shape[1])
    ratio, V = ffn.principal_directions(ffn.centre_columns(torch.tensor(W)), 300)
    Wc = W - W.mean(0)
    _, S, Vt = np.linalg.svd(Wc, full_matrices=False)
    np.testing.assert_allclose(ratio.numpy(), S**2 / (S**2).sum(), rtol=1e-10, atol=1e-14)
    assert V.shape == (min(shape), shape[1])  # R capped at min(d_mlp, d_model)
    live = S > 1e-8 * S[0]  # centring 16 rows leaves rank 15: the null direction is arbitrary
    np.testing.assert_allclose(np.abs((V.numpy() * Vt).sum(1))[live], 1.0, atol=1e-8)  # equal up to sign
    evals, evecs = np.linalg.eigh(Wc.T @ Wc)  # covariance route
    np.testing.assert_allclose(np.sort(evals)[::-1][: len(S)] / evals.sum(), ratio.numpy(), atol=1e-10)


def test_float32_path_close_to_float64():
    rng = np.random.default_rng(1)
    W = torch.tensor(rng.normal(size=(96, 24)), dtype=torch.float32)
    E = torch.nn.functional.normalize(torch.randn(50, 24, generator=torch.Generator().manual_seed(0)), dim=1)
    a = ffn.layer_components(W, E, ffn.FfnConfig(8, 5, float64=True), 0)
    b = ffn.layer_components(W, E, ffn.FfnConfig(8, 5, float64=False), 0)
    np.testing.assert_allclose(a.ratio, b.ratio, rtol=1e-4)


def test_word_lists_are_sign_invariant():
    g = torch.Generator().manual_seed(2)
    V = torch.nn.functional.normalize(torch.randn(6, 12, generator=g), dim=1)
    E = torch.nn.functional.normalize(torch.randn(40, 12, generator=g), dim=1)
    i1, s1 = ffn.top_words(V, E, 7)
    i2, s2 = ffn.top_words(-V, E, 7)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2)


def test_top_words_on_a_hand_built_output_embedding():
    words = ["alpha", "beta", "gamma", "delta"]
    tok = word_tokenizer(words)  # ids 4..7
    W_U = torch.zeros(3, len(tok))  # (d_model, d_vocab)
    W_U[:, 4] = torch.tensor([3.0, 0.0, 0.0])  # alpha: e0, large norm (normalisation removes it)
    W_U[:, 5] = torch.tensor([0.0, -1.0, 0.0])  # beta: -e1 (|.| makes the sign irrelevant)
    W_U[:, 6] = torch.tensor([1.0, 1.0, 0.0])  # gamma: between
    W_U[:, 7] = torch.tensor([0.0, 0.0, 1.0])  # delta: e2
    views = SimpleNamespace(W_U=W_U)
    E, n = ffn.word_vectors_for(views, tok, words + ["unknownword"])
    assert n == 4 and torch.equal(E[4], torch.zeros(3))
    idx, score = ffn.top_words(torch.tensor([[0.0, 1.0, 0.0]]), E, 3)
    assert [(words + ["unknownword"])[i] for i in idx[0]] == ["beta", "gamma", "alpha"]
    torch.testing.assert_close(score[0], torch.tensor([1.0, 2**-0.5, 0.0]))


def test_tsv_round_trip_and_escapes(tmp_path):
    lc = ffn.LayerComponents(3, np.array([0.5, 0.3, 0.2]), np.array([[0, 1], [2, 0]], dtype=np.int32),
                             np.ones((2, 2), dtype=np.float32))
    res = ffn.FfnResult("m", ("a\tb", "line\nbreak", "c"), (lc,), 4, 8, 3)
    path = ffn.write_tsv(ffn.to_tsv_rows(res, "M", "7B"), tmp_path / "f.tsv")
    rows = ffn.read_tsv(path)
    assert [r["Rank"] for r in rows] == ["1", "2"] and rows[0]["Type"] == "FFN" and rows[0]["Head"] == "0"
    assert float(rows[1]["Score"]) == 0.3 and rows[0]["Layer"] == "3"
    assert ffn.split_topk(rows[0]["TopK"]) == ["a\tb", "line\nbreak"]
    assert ffn.decode_field('"say ""hi"""') == 'say "hi"'


def test_bad_tsv_names_the_columns(tmp_path):
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ffn.FfnError, match="missing columns"):
        ffn.read_tsv(tmp_path / "x.tsv")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_probe_units_are_cached_and_match_direct(tmp_path, family):
    tok = word_tokenizer()
    model = tiny_model(family, vocab_size=len(tok), num_hidden_layers=3) if family == "llama" else \
        tiny_model(family, vocab_size=len(tok), n_layer=3)
    views = WeightViews(model)
    assert views.W_out(0).shape == (views.d_mlp, views.d_model)
    words = tuple(DEFAULT_WORDS)
    probe = ffn.FfnProbe(words, views.n_layers, ffn.FfnConfig(300, 5, "digest"), layers_per_unit=2)
    cache = ResultCache(tmp_path / "cache")
    ckpt = SimpleNamespace(model=model, tokenizer=tok)
    first = run(probe, "base", "fp", cache, lambda: ckpt)
    second = run(probe, "base", "fp", cache, lambda: (_ for _ in ()).throw(AssertionError("loaded")))
    assert first.computed == 2 and second.all_cached
    direct = ffn.ffn_components(views, tok, words, probe.config)
    for a, b in zip(second.result.layers, direct.layers):
        np.testing.assert_allclose(a.ratio, b.ratio)
        assert a.top_idx.shape == (min(views.d_mlp, views.d_model), 5)
        assert [set(r) for r in a.top_idx] == [set(r) for r in b.top_idx]


def test_layers_out_of_range_are_named():
    tok = word_tokenizer()
    views = WeightViews(tiny_model("llama", vocab_size=len(tok)))
    with pytest.raises(ffn.FfnError, match="out of range"):
        ffn.ffn_components(views, tok, DEFAULT_WORDS, ffn.FfnConfig(), [5])
