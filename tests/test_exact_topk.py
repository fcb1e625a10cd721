"""The shared exact top-K (probes/exact_topk.py) beyond tests/test_attention.py's cases: the
``ordered`` mode (order inside the top K equals torch.topk's on the whole float64 column), a caller's
own whole-column ranking, and float32 overflow sending the selection to float64. The reference is
always torch.topk on the whole float64 product, computed here."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.probes import exact_topk as ex


def first_copies(E: torch.Tensor) -> torch.Tensor:
    """For each row of E, the index of the first row equal to it. A product of all columns and one of
    a few may round two copies of a duplicate word vector 1 ulp apart, differently, so references
    give every copy its first copy's value (as the code under test does)."""
    _, first, inverse = np.unique(E.numpy(), axis=0, return_index=True, return_inverse=True)
    return torch.from_numpy(first[inverse.reshape(-1)])


def _reference(E: torch.Tensor, W: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, k) indices and float64 |values|: torch.topk over each whole column of |E @ W|, every word
    allowed, copies of a duplicate word vector given their first copy's value."""
    v, i = (W.T @ E.T)[:, first_copies(E)].abs().topk(min(k, E.shape[0]), dim=1)
    return i, v


def _whole(E: torch.Tensor, W: torch.Tensor, k: int):
    def whole(cols: torch.Tensor) -> ex.TopWords:
        i, v = _reference(E, W[:, cols], k)
        return ex.TopWords(i, v)
    return whole


def assert_a_top_k(idx: torch.Tensor, value: torch.Tensor, product: torch.Tensor) -> None:
    """``idx`` (C, k) is a top k of each row of |product| (C, n) in decreasing order, up to ties
    within float64 rounding, and ``value`` holds those words' |values|. Sign flips tie two distinct
    words exactly; a product of all rows and one of a few may round the pair 1 ulp apart in
    opposite ways, so which of them ranks first is the kernel's rounding and not asserted."""
    a = product.abs()
    tol = 1e-12 * float(a.max()) if a.numel() else 0.0
    k = idx.shape[1]
    assert torch.allclose(a.gather(1, idx), a.sort(dim=1, descending=True).values[:, :k], rtol=0, atol=tol)
    assert torch.allclose(value.abs(), a.gather(1, idx), rtol=0, atol=tol)
    assert all(len(set(row)) == len(row) for row in idx.tolist())


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 50), st.integers(2, 16), st.integers(1, 8), st.integers(1, 60),
       st.sampled_from(["plain", "duplicates", "zeros", "ties"]))
def test_ordered_selection_equals_topk_on_the_whole_product(seed, n_words, d_model, n_cols, top_k, case):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n_words, d_model))
    if case == "duplicates":
        E[rng.integers(0, n_words, n_words // 2)] = E[rng.integers(0, n_words, n_words // 2)]
    if case == "zeros":
        E[rng.uniform(size=n_words) < 0.5] = 0.0
    if case == "ties":  # sign flips tie |a| exactly
        E[rng.integers(0, n_words, n_words // 2)] = -E[rng.integers(0, n_words, n_words // 2)]
    E, W = torch.tensor(E), torch.tensor(rng.normal(size=(d_model, n_cols)))
    wm = ex.word_matrix(E, np.ones(n_words, bool))
    got = ex.exact_top_words(wm, W, top_k, whole=_whole(E, W, top_k), ordered=True)
    if case == "ties":
        assert_a_top_k(got.top.index, got.top.value, (W.T @ E.T))
        return
    want_i, want_v = _reference(E, W, top_k)
    assert torch.equal(got.top.index, want_i)
    assert torch.equal(got.top.value.abs().float(), want_v.float())


def test_exact_ties_inside_the_top_k_are_recomputed_only_when_ordered():
    """Two copies of a word in the middle of the top K: the order between them is torch.topk's
    choice over the whole column, so ``ordered`` recomputes the column; unordered it need not."""
    rng = np.random.default_rng(7)
    E = rng.normal(size=(500, 8))
    W = torch.tensor(rng.normal(size=(8, 1)))
    order = np.argsort(-np.abs(E @ W.numpy()[:, 0]))
    E[order[5]] = E[order[4]]
    E = torch.tensor(E)
    wm = ex.word_matrix(E, np.ones(500, bool))
    assert not bool(ex.exact_top_words(wm, W, 20).recomputed[0])
    got = ex.exact_top_words(wm, W, 20, whole=_whole(E, W, 20), ordered=True)
    assert bool(got.recomputed[0])
    assert torch.equal(got.top.index, _reference(E, W, 20)[0])


def test_float32_overflow_falls_back_to_float64():
    """Activations past float32's range (3.4e38) are inf in the prefilter: the cheap finiteness check
    on the K largest must catch them, the selection then coming whole from float64."""
    rng = np.random.default_rng(8)
    E = rng.normal(size=(40, 6))
    E[3] *= 1e36
    E, W = torch.tensor(E), torch.tensor(rng.normal(size=(6, 3)) * 1e6)
    wm = ex.word_matrix(E, np.ones(40, bool))
    assert not torch.isfinite(ex.float32_abs_activations(wm, W)).all()  # the overflow is real
    got = ex.exact_top_words(wm, W, 5, whole=_whole(E, W, 5), ordered=True)
    assert got.candidates.tolist() == [40] * 3 and bool(got.recomputed.all())
    assert torch.equal(got.top.index, _reference(E, W, 5)[0])
    default = ex.exact_top_words(wm, W, 5)
    assert default.candidates.tolist() == [40] * 3
    assert [set(r) for r in default.top.index.tolist()] == [set(r) for r in _reference(E, W, 5)[0].tolist()]


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 300), st.integers(1, 12), st.integers(1, 40), st.integers(0, 8),
       st.floats(0.0, 2.0), st.booleans())
def test_near_candidates_are_the_masks_candidates_in_the_same_order(seed, n_words, n_cols, k, extra, margin, gaps):
    """The K + extra largest read off a sorted top-k give the same padded candidates as the mask over
    every word, including columns with more candidates than K + extra (the mask's fallback) and
    words without tokens (-1)."""
    k = min(k, n_words)
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 3, size=(n_cols, n_words)).astype(np.float32)
    if gaps:  # repeated values: ties at the threshold
        a = np.round(a, 1)
    a[:, rng.uniform(size=n_words) < 0.2] = -1.0
    a32 = torch.from_numpy(a)
    m = torch.full((n_cols,), margin, dtype=torch.float64)
    want_ids, want_valid = ex.padded_candidates(ex.candidate_mask(a32, m, k))
    ids, valid, top = ex.near_candidates(a32, m, k, extra)
    assert torch.equal(valid, want_valid)
    assert torch.equal(ids[valid], want_ids[want_valid])
    assert torch.equal(top.min(1).values, a32.topk(k, dim=1).values[:, -1])
