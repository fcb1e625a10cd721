"""Finding 2's probe (METHODS §2): hand-worked pairs, a slow reference, thresholds, the verb share,
the authors' TSV, and planted / noise / null pairs through the real behaviour test."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.probes import attention as at
from shiftcheck.probes import words
from shiftcheck.probes.attention import pairs as ap
from shiftcheck.probes.attention.io import neuron_rows, read_pairs_tsv, split_pair, write_pairs_tsv

pytest_plugins = ["pytester"]


def _space(vectors: dict[str, list[float]], theta: list[float]) -> at.WordSpace:
    names = tuple(vectors)
    G = torch.tensor(np.array([np.asarray(v) / (np.linalg.norm(v) or 1) for v in vectors.values()]), dtype=torch.float64)
    first: dict[str, int] = {}
    lower = np.array([first.setdefault(w.lower(), i) for i, w in enumerate(names)])
    return at.WordSpace(words.WordList("t", names, "test"), lower, G, torch.tensor(theta, dtype=torch.float64), "test")


def test_a_hand_built_head_keeps_exactly_the_pairs_worked_out_by_hand():
    # GloVe: cat~dog (cos 0.8), car~road (cos 0.6), cat/car unrelated (0), sun alone.
    ws = _space({"cat": [1, 0, 0], "dog": [0.8, 0.6, 0], "car": [0, 0, 1], "road": [0, 0.8, 0.6], "sun": [0, 1, 0]},
                theta=[0.5, 0.5, 0.5, 0.5, 0.9])
    # two neurons, top_k = 2: neuron 0 queries {cat, car} and keys {dog, road}; neuron 1 queries
    # {cat, dog} keys {dog, cat} but with opposite signs for dog's key activation.
    Hq = torch.tensor([[3.0, 2.0], [0.1, 1.5], [2.0, 0.0], [0.0, 0.0], [0.0, 0.1]], dtype=torch.float64)
    Hk = torch.tensor([[0.0, 2.0], [2.5, -3.0], [0.0, 0.0], [1.5, 0.0], [0.2, 0.0]], dtype=torch.float64)
    np_ = at.neuron_pairs(Hq, Hk, ws, np.ones(5, bool), top_k=2)
    got = {(int(d), ws.candidates.words[q], ws.candidates.words[k]) for d, q, k in zip(np_.dim, np_.q, np_.k)}
    # neuron 0: (cat,dog) c=.8>.5 same sign; (car,road) c=.6 same sign; (cat,road) c=0; (car,dog) c=0.
    # neuron 1: Tq={cat,dog}, Tk={dog,cat}: (cat,dog) sign + * - fails; (dog,cat) + * + passes; (cat,cat), (dog,dog) equal words.
    assert got == {(0, "cat", "dog"), (0, "car", "road"), (1, "dog", "cat")}
    kept = at.head_pairs(np_, ws.lower_id, min_count=2)
    assert [tuple(ws.candidates.words[i] for i in row) for row in kept] == [("cat", "dog")]  # seen twice


def _reference_pairs(Hq, Hk, ws, has_tokens, k):
    """The obvious loops of §2.4-2.5, for agreement."""
    counts: dict[tuple[int, int], int] = {}
    V = Hq.shape[0]
    allowed = [w for w in range(V) if has_tokens[w]]
    for d in range(Hq.shape[1]):
        tq = sorted(allowed, key=lambda w: -abs(float(Hq[w, d])))[:k]
        tk = sorted(allowed, key=lambda w: -abs(float(Hk[w, d])))[:k]
        for a in tq:
            for b in tk:
                c = float(ws.G[a] @ ws.G[b])
                if a != b and c > 0 and c > float(ws.theta[a]) and c > float(ws.theta[b]) and Hq[a, d] * Hk[b, d] > 0:
                    key = tuple(sorted((int(ws.lower_id[a]), int(ws.lower_id[b]))))
                    counts[key] = counts.get(key, 0) + 1
    return {p for p, n in counts.items() if n >= 2}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_batched_probe_agrees_with_the_obvious_loops_gqa_included(seed):
    from builders import tiny_model
    from shiftcheck.probes.models.architectures import WeightViews

    rng = np.random.default_rng(seed)
    V = 40
    names = [f"w{i}" for i in range(V)] + ["W3"]  # a case variant shares w3's lower-case identity
    ws = _space({n: rng.normal(size=8) for n in names}, theta=list(rng.uniform(0.0, 0.4, V + 1)))
    model = tiny_model("llama", seed=seed)  # 4 query heads, 2 kv heads
    views = WeightViews(model)
    E_w = torch.tensor(rng.normal(size=(V + 1, views.d_model)), dtype=torch.float64)
    has = rng.uniform(size=V + 1) > 0.1
    Hq, Hk = at.head_activations(views, E_w, layer=1)
    for h in range(views.n_heads):
        got = {tuple(map(int, r)) for r in at.head_pairs(at.neuron_pairs(Hq[h], Hk[h], ws, has, 7), ws.lower_id, 2)}
        assert got == _reference_pairs(Hq[h], Hk[h], ws, has, 7), h


def test_head_activations_are_the_word_vectors_times_each_heads_own_folded_weights():
    """Hq/Hk read off the HF modules directly: q_proj/k_proj rows of each head, the input norm's
    gain folded in, kv head h // (n_heads / n_kv_heads) for query head h."""
    from builders import tiny_model
    from shiftcheck.probes.models.architectures import WeightViews

    model = tiny_model("llama", seed=5)  # 4 query heads, 2 kv heads
    views = WeightViews(model)
    layer = model.model.layers[1]
    g = layer.input_layernorm.weight.detach().double()
    E_w = torch.tensor(np.random.default_rng(5).normal(size=(9, views.d_model)))
    n_heads, n_kv = model.config.num_attention_heads, model.config.num_key_value_heads
    d_head = views.d_model // n_heads
    Hq, Hk = at.head_activations(views, E_w, layer=1)
    for h in range(n_heads):
        Wq = layer.self_attn.q_proj.weight.detach().double()[h * d_head:(h + 1) * d_head].T * g[:, None]
        kv = h // (n_heads // n_kv)
        Wk = layer.self_attn.k_proj.weight.detach().double()[kv * d_head:(kv + 1) * d_head].T * g[:, None]
        assert torch.allclose(Hq[h], E_w @ Wq, atol=1e-12), h
        assert torch.allclose(Hk[h], E_w @ Wk, atol=1e-12), h


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.integers(1, 5), st.integers(3, 12))
def test_the_random_control_draws_head_by_head_q_then_k(seed, n_heads, d_head, d_model):
    """The batched control gives what a per-head loop on the same generator gives: its numbers
    do not depend on the batching."""
    gen = torch.Generator().manual_seed(seed)
    Wq = torch.randn(n_heads, d_model, d_head, generator=gen, dtype=torch.float64)
    Wk = torch.randn(n_heads, d_model, d_head, generator=gen, dtype=torch.float64)
    E_w = torch.randn(7, d_model, generator=gen, dtype=torch.float64)
    Rq, Rk = at.random_heads(Wq, Wk, E_w, torch.Generator().manual_seed(seed + 1))
    loop = torch.Generator().manual_seed(seed + 1)
    for h in range(n_heads):
        for W, R in ((Wq[h], Rq[h]), (Wk[h], Rk[h])):
            draw = torch.randn(W.shape, generator=loop, dtype=torch.float64)
            expected = E_w @ (draw / draw.norm(dim=0) * W.norm(dim=0))
            assert torch.allclose(R, expected, atol=1e-12)


def _float64_top(E: torch.Tensor, W: torch.Tensor, has: np.ndarray, k: int) -> ap.TopWords:
    """The selection before the prefilter: torch.topk on the whole float64 activations."""
    return ap.top_words(E @ W, has, k)


def _assert_same_selection(got: ap.TopWords, want: ap.TopWords) -> None:
    assert got.index.shape == want.index.shape
    for c in range(want.index.shape[0]):
        sign = dict(zip(want.index[c].tolist(), torch.sign(want.value[c]).tolist()))
        assert set(got.index[c].tolist()) == set(sign), c
        assert [sign[i] for i in got.index[c].tolist()] == torch.sign(got.value[c]).tolist(), c


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 60), st.integers(2, 24), st.integers(1, 12), st.integers(1, 70),
       st.sampled_from(["plain", "duplicates", "near_ties", "few_tokens"]))
def test_the_prefiltered_top_words_are_the_float64_ones(seed, n_words, d_model, n_cols, top_k, case):
    """Sets and signs equal torch.topk on the float64 activations, also with duplicate word vectors
    (exact ties, some straddling the K-th place), rows 1e-9 apart (near-ties below float32's
    resolution), most words without tokens and K above the number of words with tokens."""
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n_words, d_model)) * rng.uniform(0.2, 3.0, size=(n_words, 1))
    has = rng.uniform(size=n_words) > (0.8 if case == "few_tokens" else 0.1)
    if case == "duplicates":
        E[rng.integers(0, n_words, n_words // 2)] = E[rng.integers(0, n_words, n_words // 2)]
    if case == "near_ties":
        src = rng.integers(0, n_words, n_words // 2)
        E[rng.integers(0, n_words, n_words // 2)] = E[src] * (1 + 1e-9 * rng.choice([-1, 1], size=(len(src), 1)))
    E, W = torch.tensor(E), torch.tensor(rng.normal(size=(d_model, n_cols)))
    got = ap.exact_top_words(ap.word_matrix(E, has), W, top_k)
    _assert_same_selection(got.top, _float64_top(E, W, has, top_k))


def test_a_planted_float32_reversal_needs_the_bound_and_the_prefilter_keeps_the_float64_winner():
    """K = 1. Word b's float64 activation 1 + 2e-5 beats a's 1 + 1e-5, but b's is a cancellation
    (1024 - 1023.00002) whose second input rounds to 1023 in float32: float32 says b = 1 < a. With a
    zero bound only a is a candidate (wrong); with the rigorous bound b is kept and wins."""
    E = torch.tensor([[1 + 1e-5, 0.0], [1024.0, 1023.0 - 2e-5], [0.5, 0.0]], dtype=torch.float64)
    W = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    wm = ap.word_matrix(E, np.ones(3, bool))
    a32 = ap.float32_abs_activations(wm, W)
    assert a32[0, 1] < a32[0, 0]  # the reversal is real
    assert ap.candidate_mask(a32, torch.zeros(1, dtype=torch.float64), 1)[0].tolist() == [True, False, False]
    got = ap.exact_top_words(wm, W, 1)
    assert got.top.index.tolist() == [[1]] == _float64_top(E, W, np.ones(3, bool), 1).index.tolist()


def test_duplicate_word_vectors_tied_at_the_kth_place_are_broken_as_topk_breaks_them():
    """Four copies of one vector straddle the K-th place of a long column (as on SmolLM2, where
    208 of 26,473 word vectors are duplicates): the column is recomputed whole and torch.topk's
    own choice among the copies is kept; words without tokens stay out."""
    rng = np.random.default_rng(3)
    E = rng.normal(size=(3000, 16))
    W = torch.tensor(rng.normal(size=(16, 3)))
    a = np.abs(E @ W.numpy()[:, 0])
    kth = np.argsort(-a)[54]  # 50th largest of column 0 among words with tokens (5 below have none)
    copies = rng.choice(np.setdiff1d(np.arange(3000), np.argsort(-a)[:60]), 3, replace=False)
    E[copies] = E[kth]
    has = np.ones(3000, bool)
    has[np.argsort(-a)[:5]] = False  # the five largest have no tokens
    E = torch.tensor(E)
    got = ap.exact_top_words(ap.word_matrix(E, has), W, 50)
    assert bool(got.recomputed[0])
    _assert_same_selection(got.top, _float64_top(E, W, has, 50))


def test_k_above_the_words_with_tokens_selects_them_all():
    rng = np.random.default_rng(4)
    E, W = torch.tensor(rng.normal(size=(30, 6))), torch.tensor(rng.normal(size=(6, 4)))
    has = np.zeros(30, bool)
    has[[2, 7, 11]] = True
    got = ap.exact_top_words(ap.word_matrix(E, has), W, 100)
    assert [set(r) for r in got.top.index.tolist()] == [{2, 7, 11}] * 4
    _assert_same_selection(got.top, _float64_top(E, W, has, 100))


def test_without_ieee_float32_matmuls_the_selection_is_float64_throughout():
    """TF32/BF16 float32 matmuls break the rounding bound: every word is then a candidate."""
    rng = np.random.default_rng(5)
    E, W = torch.tensor(rng.normal(size=(40, 6))), torch.tensor(rng.normal(size=(6, 3)))
    has = np.ones(40, bool)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        got = ap.exact_top_words(ap.word_matrix(E, has), W, 5)
    finally:
        torch.set_float32_matmul_precision(before)
    assert got.candidates.tolist() == [40] * 3
    _assert_same_selection(got.top, _float64_top(E, W, has, 5))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 40), st.integers(2, 12), st.integers(1, 9))
def test_gram_energies_equal_the_sums_of_squared_activations(seed, n_words, d_model, n_cols):
    rng = np.random.default_rng(seed)
    E, W = torch.tensor(rng.normal(size=(n_words, d_model))), torch.tensor(rng.normal(size=(d_model, n_cols)))
    want = ((E @ W) ** 2).sum(0)
    assert torch.allclose(ap.gram_energy(E.T @ E, W), want, rtol=1e-11, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_head_tops_give_the_float64_neuron_pairs_and_control_gqa_included(seed):
    """The probe's path (weights -> prefiltered top words -> pairs) against the float64 one
    (activations -> neuron_pairs), real heads and the random control on the same generator."""
    from builders import tiny_model
    from shiftcheck.probes.models.architectures import WeightViews, fold_norm_gain

    rng = np.random.default_rng(seed)
    V = 60
    ws = _space({f"w{i}": rng.normal(size=8) for i in range(V)}, theta=list(rng.uniform(0.0, 0.3, V)))
    views = WeightViews(tiny_model("llama", seed=seed))  # 4 query heads, 2 kv heads
    E_w = torch.tensor(rng.normal(size=(V, views.d_model)))
    E_w[7] = E_w[3]  # a duplicate word vector
    has = rng.uniform(size=V) > 0.1
    wm = ap.word_matrix(E_w, has)
    Wq, Wk = ap.head_weights(views, 1)
    tops, _ = ap.head_tops(wm, Wq, Wk, 9)
    Hq, Hk = at.head_activations(views, E_w, layer=1)
    Wk_all = fold_norm_gain(views.W_K(1).to(torch.float64), views.attn_norm_gain(1).to(torch.float64))
    # the probe's control reuses the folded kv heads, repeated: exactly the folded expanded W_K
    assert torch.equal(Wk.repeat_interleave(views.n_heads // Wk.shape[0], dim=0), Wk_all)
    random_tops, _ = ap.head_tops(wm, *ap.random_weights(Wq, Wk_all, torch.Generator().manual_seed(seed)), 9)
    Rq, Rk = at.random_heads(Wq, Wk_all, E_w, torch.Generator().manual_seed(seed))
    for h in range(views.n_heads):
        for top, (q, k) in ((tops[h], (Hq[h], Hk[h])), (random_tops[h], (Rq[h], Rk[h]))):
            new = ap.kept_pairs(top.q, top.k, ws, top.order, top.energy)
            old = at.neuron_pairs(q, k, ws, has, 9)
            assert {*zip(new.dim, new.q, new.k)} == {*zip(old.dim, old.q, old.k)}, h
            assert np.array_equal(at.head_pairs(new, ws.lower_id, 2), at.head_pairs(old, ws.lower_id, 2)), h
            assert np.array_equal(new.order, old.order) and np.allclose(new.energy, old.energy, rtol=1e-11), h


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 30), st.integers(2, 10))
def test_thresholds_equal_a_direct_per_word_computation(seed, n, baseline):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(n, 4))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    got = at.thresholds(torch.tensor(G), baseline=min(baseline, n), z=1.96, chunk=3).numpy()
    for w in range(n):
        c = np.array([G[w] @ G[u] for u in range(min(baseline, n))])
        assert got[w] == pytest.approx(c.mean() + 1.96 * c.std(), abs=1e-12)


def _result(label, counts: dict[tuple[int, int], list[tuple[str, str]]], n_layers=4, n_heads=2):
    vocab: dict[str, int] = {}
    pairs = {key: np.array([(vocab.setdefault(a, len(vocab)), vocab.setdefault(b, len(vocab))) for a, b in p],
                           dtype=np.int64).reshape(-1, 2) for key, p in counts.items()}
    return at.AttentionResult(label, n_layers, n_heads, tuple(vocab), 0, pairs)


def test_verb_share_skips_unchanged_heads_and_drops_verbs_without_change():
    base = _result("b", {(0, 0): [("write", "poem")], (0, 1): [("give", "gift")], (1, 0): [("write", "text")]})
    tuned = _result("t", {(0, 0): [("write", "poem"), ("write", "essay")], (0, 1): [("give", "gift")],
                          (1, 0): []})
    s = at.verb_shares(base, tuned, ["write", "give", "sing"], layers=[0, 1])
    # write: head (0,0) up 1->2, head (1,0) down 1->0, head (0,1) unchanged (skipped): share 1/2.
    # give: unchanged everywhere -> dropped; sing: never appears -> dropped.
    assert s.shares == {"write": 0.5} and s.changed_heads == {"write": 2} and s.dropped == 2


def test_layer_groups_are_quarters_of_the_depth():
    assert [at.layer_group(layer, 32) for layer in (0, 7, 8, 31)] == [0, 0, 1, 3]
    assert at.group_layers(0, 30) == [0, 1, 2, 3, 4, 5, 6, 7] and at.group_layers(3, 30)[-1] == 29


def test_the_authors_tsv_round_trips_with_escapes_and_ambiguous_words(tmp_path):
    names = ("a/nb", "cat", "dog", "x=y", "|")
    np_ = at.NeuronPairs(dim=np.array([0, 0, 1, 1]), q=np.array([1, 3, 1, 2]), k=np.array([2, 4, 2, 0]),
                         c=np.array([0.9, 0.8, 0.7, 0.6]), order=np.array([1, 0]), energy=np.array([1.0, 2.0]))
    words_ = tuple(n.replace("/n", "\n") for n in names)
    path = tmp_path / "pairs.tsv"
    write_pairs_tsv(path, neuron_rows("m", "135M", 3, 2, np_, words_))
    lines = path.read_text().splitlines()
    assert lines[0] == "Model\tSize\tLayer\tType\tHead\tDim\tRank\tScore\tTopK"
    assert lines[1].split("\t")[5:7] == ["1", "1"]  # the higher-energy dim comes first
    assert "a/nb=dog" in lines[1] and "\n" not in lines[1]
    result = read_pairs_tsv(path, "base", min_count=2)
    assert result.pair_set(3, 2) == {("cat", "dog")}  # seen in both neurons
    assert split_pair("x=y=|") == ("x", "y=|") and split_pair("==x") == ("=", "x") and split_pair("=") is None


# --------------------------------------------------------------------------------------------- planted truth


@pytest.fixture(scope="module")
def lexical_pairs(tmp_path_factory):
    """A planted two-way effect with a known truth (the ``tilted`` construction of
    benchmarks/attention_nulls.py, seed 3): every instruction verb is planted into each (layer, kv
    head) of layers 0-1 with probability 0.1 in the base and 0.9 in the tuned model (independent
    draws; the plant's query direction leaves out the control verbs' top 3 embedding directions),
    and both get Gaussian noise at 1.0 x RMS on W_Q/W_K. Instruction verbs gain pairs in most of
    their changed heads and lose them in some. Power over seeds 0-19: 19/20 (docs/ATTENTION.md)."""
    from lexical import BIG, add_layer_noise, lexical_model, lexical_vocab, plant_random_heads, save_lexical, verb_subspace

    root = tmp_path_factory.mktemp("lexical")
    kv = words.load_glove()
    base0, tok = lexical_model(kv, lexical_vocab(kv), **BIG)  # 8 layers, 16 heads, 8 kv heads: g0 has 16 clusters
    iv = [v for v in words.instruction_verbs().words if v in tok.get_vocab()]
    avoid = verb_subspace(base0, tok, words.control_verbs().words, 3)
    models = {}
    for name, p_head, seed in (("base", 0.1, 1003), ("planted", 0.9, 2003)):
        m = copy.deepcopy(base0)
        plant_random_heads(m, tok, kv, iv, [0, 1], p_head, seed, not_keys=frozenset(iv), avoid=avoid)
        add_layer_noise(m, [0, 1], 1.0, seed + 2000)
        models[name] = m
    return {name: save_lexical(m, tok, root / name) for name, m in models.items()}


@pytest.fixture
def suite(pytester, tmp_path_factory):
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "behaviour_tests" / "test_attention_verbs.py"
    shutil.copy(src, pytester.path / src.name)
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path_factory.getbasetemp() / "attention-cache"))
    return pytester


def _run(suite, base, tuned):
    # few, short prompts: the plan's KL preflight (fixtures/release.py) generates responses whenever models run
    result = suite.runpytest_subprocess("--base", str(base), "--tuned", str(tuned), "--device", "cpu",
                                        "--max-prompts", "2", "--max-new-tokens", "4", "-p", "no:cacheprovider", "-rs")
    return result, json.loads((suite.path / "shiftcheck-report" / "results.json").read_text())


def test_a_planted_verb_relation_passes_in_the_lowest_group(suite, lexical_pairs):
    result, report = _run(suite, lexical_pairs["base"], lexical_pairs["planted"])
    result.assert_outcomes(passed=1)  # only the lowest group is a test; g1-g3 are report context
    (g0,) = report["findings"]
    assert g0["finding"] == "instruction_verbs_gain_pairs_in_the_low_layers" and g0["outcome"] == "pass"
    n = g0["numbers"]
    assert n["bootstrap_lcb_share"] > 0.5 and n["bootstrap_lcb_difference"] > 0 and n["p_value"] <= 0.05
    assert n["instruction_changed_clusters"] >= 10 and n["instruction_verbs_with_change"] >= 5
    assert (suite.path / "shiftcheck-report" / "figures" / "attention_verb_shares.png").stat().st_size > 1000


def test_the_base_against_itself_fails_saying_no_head_changed(suite, lexical_pairs):
    result, _ = _run(suite, lexical_pairs["base"], lexical_pairs["base"])
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no head changed*"])


def test_the_embedded_world_is_toy_scale_and_skips_with_the_reason(pytester):
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "behaviour_tests" / "test_attention_verbs.py"
    shutil.copy(src, pytester.path / src.name)
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*toy scale: the model has 2 layers*"])


def test_the_pairs_export_writes_the_authors_format_and_replays(tmp_path, capsys):
    from shiftcheck.cli import main

    out = tmp_path / "pairs.tsv"
    assert main(["pairs", "world:good", "--layers", "0", "--out", str(out), "--device", "cpu"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == ["Model", "Size", "Layer", "Type", "Head", "Dim", "Rank", "Score", "TopK"]
    assert len(lines) == 1 + 4 * 24  # 4 heads x 24 neurons of layer 0
    assert all(line.split("\t")[3] == "QK" for line in lines[1:])
    replay = read_pairs_tsv(out, "good")
    assert replay.n_heads == 4 and any(replay.pair_set(0, h) for h in range(4))
