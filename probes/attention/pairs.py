"""METHODS §2.1-2.5: the word space, per-head query/key neurons, each neuron's kept word pairs and a
head's pair list.

Reading order: the word space (candidates, GloVe, thresholds θ, §2.4) -> word vectors E_w (§2.1)
-> per-head neurons Hq, Hk and their energy order (§2.2-2.3) -> each neuron's top-K words, exact
float64 through a float32 prefilter -> kept pairs of one head's neurons, batched over the neurons
(§2.4) -> the head-level list (§2.5) -> the random-head control.

Axis vocabulary: ``n_words`` (V), ``d_model`` (D), ``d_head`` (d'), ``top_k`` (K), ``d_glove``.
The selection is exact float64 (PROBE_NOTES: plain float32 changed 3 of 1,728 top-100 sets): the
activations are computed in float32 (SGEMM, about 1.8 times DGEMM's speed on a CPU), every word whose
float32 |activation| could be in the float64 top-K under a rigorous rounding bound is rescored in
float64, and the top-K is taken among those; a neuron whose K-th and (K+1)-th float64 values are
too close for float64 itself to order them is recomputed whole in float64 and ranked by
``torch.topk`` as before (duplicate word vectors tie exactly). Energies come from the float64 Gram
matrix of the word vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shiftcheck.probes import words


@dataclass(frozen=True)
class AttentionConfig:
    """Defaults are the authors' code (METHODS §5)."""

    top_k: int = 100  # K words per query/key neuron, by |activation| (§2.4)
    z: float = 1.96  # θ(w) = mean + z * std of c(w, u) over the baseline (§2.4)
    baseline: int = words.BASELINE_SIZE  # first 3000 candidates (§2.4, the code; the paper says 1000)
    min_count: int = 2  # a head keeps pairs seen at least twice over its neurons (§2.5)
    layers_per_unit: int = 4  # cache unit = this many layers (a crash keeps finished units)
    control_seed: int = 0  # the random-head control's generator



# ---------------------------------------------------------------------------------------------
# the word space: candidates, lower-cased forms, GloVe and thresholds (§2.4, §2.5)


@dataclass(frozen=True)
class WordSpace:
    """Candidates, their lower-case identity (§2.5 lower-cases pair words), unit GloVe rows, θ."""

    candidates: words.WordList
    lower_id: np.ndarray  # (n_words,) index of the first candidate with the same lower-case form
    G: torch.Tensor  # (n_words, d_glove) float64, L2-normalised, zero rows for unknown words
    theta: torch.Tensor  # (n_words,) float64
    glove_source: str

    @property
    def lower(self) -> list[str]:
        return [w.lower() for w in self.candidates.words]


def thresholds(G: torch.Tensor, baseline: int, z: float, chunk: int = 4096) -> torch.Tensor:
    """θ(w) = mean_u c(w, u) + z · std_u c(w, u) over the first ``baseline`` candidates u
    (population std). Whole list at once, in row chunks of ``chunk`` to bound memory."""
    B = G[:baseline]  # (baseline, d_glove)
    out = torch.empty(G.shape[0], dtype=G.dtype, device=G.device)
    for start in range(0, G.shape[0], chunk):
        C = G[start : start + chunk] @ B.T  # (chunk, baseline)
        out[start : start + chunk] = C.mean(1) + z * C.std(1, unbiased=False)
    return out


def word_space(candidates: words.WordList, kv: Any, config: AttentionConfig, glove_source: str,
               device: str | torch.device = "cpu") -> WordSpace:
    first: dict[str, int] = {}
    lower_id = np.array([first.setdefault(w.lower(), i) for i, w in enumerate(candidates.words)], dtype=np.int64)
    G = torch.tensor(words.glove_matrix(kv, candidates.words), dtype=torch.float64, device=device)
    return WordSpace(candidates, lower_id, G, thresholds(G, config.baseline, config.z), glove_source)


# ---------------------------------------------------------------------------------------------
# word vectors and per-head neurons (§2.1-2.3)


def word_vectors(views: Any, tokenizer: Any, candidates: words.WordList) -> tuple[torch.Tensor, np.ndarray]:
    """E_w: (n_words, d_model) float64 mean input-embedding rows (§2.1) and which words have tokens."""
    tokens = words.word_token_ids(tokenizer, candidates.words)
    E = words.mean_rows(views.W_E.to(torch.float64), tokens)
    return E, tokens.has_tokens


def per_head(E_w: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """(n, n_words, d_head) = E_w @ W[h] for every head h of W (n, d_model, d_head), as ONE matmul
    against the heads side by side: BLAS runs a (d_model, n·d_head) product about 1.6 times faster
    than n narrow ones on one CPU core (the sums agree to rounding, ~1e-14 in float64)."""
    n, _, d_head = W.shape
    return (E_w @ side_by_side(W)).reshape(E_w.shape[0], n, d_head).permute(1, 0, 2)


def head_weights(views: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W_Q (n_heads, d_model, d_head) and W_K per key/value head (n_kv_heads, ...), float64, the
    attention norm's gain folded in (§2.2)."""
    from shiftcheck.probes.models.architectures import fold_norm_gain

    g = views.attn_norm_gain(layer).to(torch.float64)
    Wq = fold_norm_gain(views.W_Q(layer).to(torch.float64), g)
    Wk = fold_norm_gain(views.W_K(layer, expand_gqa=False).to(torch.float64), g)
    return Wq, Wk


def head_activations(views: Any, E_w: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hq, Hk: (n_heads, n_words, d_head) = E_w @ (W · g), norm gain folded, GQA expanded (§2.2).

    Hk is computed once per key/value head and then repeated (as HF's ``repeat_kv``), not once per
    query head: a third of the work on a 3-kv-head model such as SmolLM2."""
    Wq, Wk = head_weights(views, layer)
    Hk = per_head(E_w, Wk).repeat_interleave(Wq.shape[0] // Wk.shape[0], dim=0)
    return per_head(E_w, Wq), Hk


def energy_order(Hq: torch.Tensor, Hk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """§2.3 for one head: N_d = Σ_w Hq[w,d]² + Σ_w Hk[w,d]²; dims in decreasing energy. (d_head,) each."""
    N = (Hq**2).sum(0) + (Hk**2).sum(0)
    return torch.argsort(N, descending=True, stable=True), N


@dataclass(frozen=True)
class TopWords:
    """Each neuron's top-K words by |activation|: ``index[d]`` (word ids, decreasing |activation|)
    and ``value[d]`` their float64 activations (signed: §2.4 keeps same-sign pairs only)."""

    index: torch.Tensor  # (d_head, K) int64
    value: torch.Tensor  # (d_head, K) float64


def top_words(H: torch.Tensor, has_tokens: np.ndarray, top_k: int) -> TopWords:
    """§2.4's T_d from a whole float64 activation matrix H (n_words, d_head): ``torch.topk`` of
    |H| with words without tokens masked to -1, so they are never chosen while K ≤ their count."""
    mask = torch.as_tensor(~has_tokens, device=H.device)
    a = H.abs().masked_fill(mask[:, None], -1.0)
    T = a.topk(min(top_k, int((~mask).sum())), dim=0).indices.T  # (d_head, K)
    return TopWords(T, H.gather(0, T.T).T)


# ---------------------------------------------------------------------------------------------
# exact float64 top-K words of many neurons through a float32 prefilter (§2.2-2.4)
#
# Why the bound is rigorous: a float32 activation a32 = fl32(Σ_i e32_i·w32_i) with e32 = fl32(e),
# w32 = fl32(w). Rounding the inputs moves each product by at most (2u + u²)|e_i w_i| (u = 2^-24),
# and a float32 sum of n products, in ANY order and grouping (whatever blocking, vector lanes or FMA
# the BLAS uses: every term passes through at most n roundings), is off by at most
# γ_n·Σ|e32_i w32_i|, γ_n = n·u/(1 - n·u) (Higham, Accuracy and Stability, §3.1). So
# |a32 - e·w| ≤ ((n+2)·u·1.01)·Σ|e_i||w_i| ≤ c·‖e‖·‖w‖ (Cauchy-Schwarz; 1.01 covers 1/(1 - n·u) and
# the u² terms for n ≤ 10^5); the float64 sum adds ~n·2^-53·Σ|e_i w_i|, 2^29 times less. Gradual
# underflow adds an absolute ≤ 2^-150 per rounding (at most |w_i| or |e_i| times that for a rounded
# input), covered by n·UNDERFLOW·(1 + ‖e‖ + ‖w‖);
# non-finite float32 values (overflow) send the column group to float64 throughout. The margin is
# multiplied by ``SAFETY`` (4) against what this argument does not model. A BLAS that rounds inputs
# or partial sums to a narrower type (TF32/BF16 matmul modes) would break it: those modes are
# checked for and make the probe use float64 throughout.

U32 = 2.0**-24
U64 = 2.0**-53
SAFETY = 4.0
UNDERFLOW = 2.0**-140  # per term, absolute: far above float32's 2^-150 subnormal rounding


def dot_error_factor(n: int, u: float) -> float:
    """c with |fl(e·w) - e·w| ≤ c·‖e‖·‖w‖ for inputs rounded to unit roundoff u and a length-n dot
    product summed in any order (the comment above), times the safety factor."""
    return SAFETY * 1.01 * (n + 2) * u


def ieee_float32_matmul(device: torch.device) -> bool:
    """Whether float32 matmuls on ``device`` are true IEEE float32 (not TF32/BF16 internally): the
    prefilter's bound assumes so."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if torch.device(device).type == "cuda":
        return not torch.backends.cuda.matmul.allow_tf32
    mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return getattr(mkldnn, "fp32_precision", "none") in ("none", "ieee")


@dataclass(frozen=True)
class WordMatrix:
    """E_w prepared once per model for the prefilter: float64 and float32 copies, which words take
    part, the largest row norm among them (the bound's ‖e‖) and the Gram matrix E_wᵀE_w (energies)."""

    E: torch.Tensor  # (n_words, d_model) float64
    E32: torch.Tensor  # (n_words, d_model) float32
    allowed: torch.Tensor  # (n_words,) bool: has tokens
    max_norm: float  # max ‖e‖ over allowed words
    gram: torch.Tensor  # (d_model, d_model) float64, over ALL words (as §2.3's energy sums them)
    first_equal: torch.Tensor  # (n_words,) int64: the first word whose vector equals this word's


def first_equal_rows(E: torch.Tensor) -> torch.Tensor:
    """(n,) for each row of E the index of the first row equal to it (itself when unique)."""
    _, group = torch.unique(E, dim=0, return_inverse=True)
    first = torch.full((int(group.max()) + 1 if len(group) else 0,), len(group), dtype=torch.long, device=E.device)
    first.scatter_reduce_(0, group, torch.arange(len(group), device=E.device), reduce="amin")
    return first[group]


def word_matrix(E_w: torch.Tensor, has_tokens: np.ndarray) -> WordMatrix:
    allowed = torch.as_tensor(has_tokens, device=E_w.device)
    norms = E_w.norm(dim=1)[allowed]
    return WordMatrix(E_w, E_w.to(torch.float32), allowed, float(norms.max()) if len(norms) else 0.0, E_w.T @ E_w,
                      first_equal_rows(E_w))


def side_by_side(W: torch.Tensor) -> torch.Tensor:
    """(d_model, n·d_head): the heads of W (n, d_model, d_head) as columns, head-major."""
    n, d_model, d_head = W.shape
    return W.permute(1, 0, 2).reshape(d_model, n * d_head)


def gram_energy(gram: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Σ_w (E_w W)[w, c]² = w_cᵀ (E_wᵀE_w) w_c for every column c of W (d_model, C), float64: the
    same sums as §2.3's, without the (n_words, C) activations."""
    return ((gram @ W) * W).sum(0)


def float32_abs_activations(wm: WordMatrix, W: torch.Tensor) -> torch.Tensor:
    """(C, n_words) float32 |E_w · w_c| for each column c of W (d_model, C), words without tokens
    set to -1 (below every |activation|, as :func:`top_words` masks them). Column-major so that
    each column's selection below runs over contiguous memory (about 4x faster than along dim 0)."""
    a = (W.T.to(torch.float32) @ wm.E32.T).abs_()
    return a.masked_fill_(~wm.allowed[None, :], -1.0)


def candidate_mask(a32_abs: torch.Tensor, margin: torch.Tensor, k: int) -> torch.Tensor:
    """(C, n_words): the words that could be in a column's float64 top-K. With t the K-th largest
    float32 |a| among allowed words and |a32 - a64| ≤ margin: K words have |a64| ≥ t - margin, so
    the float64 K-th value is ≥ t - margin and a word needs |a32| ≥ t - 2·margin. The threshold is
    rounded down to float32, so the comparison never drops a word, and kept ≥ -0.5, so words
    without tokens (-1) never pass while every allowed word (≥ 0) still can."""
    t = a32_abs.topk(k, dim=1, sorted=False).values.min(1).values.to(torch.float64)
    thr = (t - 2 * margin).to(torch.float32)
    thr = torch.nextafter(thr, torch.full_like(thr, -math.inf)).clamp_(min=-0.5)
    return a32_abs >= thr[:, None]


def padded_candidates(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, P) word ids of each column's candidates (increasing id) padded with word 0, and the
    (C, P) validity mask; P = the most candidates of any column."""
    col, word = mask.nonzero(as_tuple=True)
    counts = torch.bincount(col, minlength=mask.shape[0])
    P = int(counts.max()) if len(counts) else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(col), device=mask.device) - starts[col]
    ids = torch.zeros((mask.shape[0], P), dtype=torch.long, device=mask.device)
    valid = torch.zeros((mask.shape[0], P), dtype=torch.bool, device=mask.device)
    ids[col, slot] = word
    valid[col, slot] = True
    return ids, valid


def rescore(E: torch.Tensor, W: torch.Tensor, ids: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """(C, P) float64 activations E[ids[c, p]] · W[:, c], a gather of the candidates' rows, in
    column chunks small enough to stay in cache (16 columns: about twice as fast as 64)."""
    out = torch.empty(ids.shape, dtype=torch.float64, device=E.device)
    for s in range(0, ids.shape[0], chunk):
        part = ids[s : s + chunk]
        rows = E.index_select(0, part.reshape(-1)).view(*part.shape, E.shape[1])  # (chunk, P, d_model)
        out[s : s + chunk] = torch.bmm(rows, W.T[s : s + chunk, :, None])[:, :, 0]
    return out


def whole_columns(wm: WordMatrix, W: torch.Tensor) -> torch.Tensor:
    """(n_words, C) float64 E_w · W for columns that need ``torch.topk``'s own tie-breaking. Which of
    several equal values topk keeps depends on every comparison it makes along the column, so the
    values must compare as the whole-layer float64 GEMM's did. That GEMM gave duplicate word
    vectors equal values; a GEMM of a few columns may give them values 1 ulp apart, so duplicates
    get their first copy's value here and tie exactly whatever the BLAS kernel."""
    return (wm.E @ W)[wm.first_equal]


@dataclass(frozen=True)
class Prefiltered:
    """Top words of every column of a weight stack, and what it took: candidates rescored per
    column, and the columns recomputed whole because their K-th and (K+1)-th values nearly tie."""

    top: TopWords  # (C, K): index and float64 value per column
    candidates: torch.Tensor  # (C,) int64
    recomputed: torch.Tensor  # (C,) bool


def float64_top_words(wm: WordMatrix, W: torch.Tensor, top_k: int) -> Prefiltered:
    """The selection without the prefilter (every allowed word a candidate): for float32 matmuls
    that are not IEEE float32 and for overflow."""
    C, n_allowed = W.shape[1], int(wm.allowed.sum())
    return Prefiltered(top_words(wm.E @ W, wm.allowed.cpu().numpy(), top_k),
                       torch.full((C,), n_allowed, device=W.device), torch.ones(C, dtype=torch.bool, device=W.device))


def exact_top_words(wm: WordMatrix, W: torch.Tensor, top_k: int) -> Prefiltered:
    """Each column's float64 top-K words by |E_w · w| (words without tokens never chosen), equal to
    :func:`top_words` on the float64 activations: float32 activations, the candidates
    :func:`candidate_mask` keeps, their float64 rescoring and the top-K among them.

    Ties: where the candidates' K-th and (K+1)-th float64 |a| are closer than float64 rounding can
    tell apart (tie_tol; exact ties come from duplicate word vectors), which words win depends on
    ``torch.topk``'s tie-breaking over the whole column; those columns are recomputed whole in
    float64 and ranked by the same ``torch.topk`` call as before."""
    k = min(top_k, int(wm.allowed.sum()))
    C = W.shape[1]
    if not ieee_float32_matmul(W.device):  # the bound needs IEEE float32
        return float64_top_words(wm, W, top_k)
    if k == 0:
        empty = torch.zeros((C, 0), dtype=torch.long, device=W.device)
        return Prefiltered(TopWords(empty, empty.to(torch.float64)), torch.zeros(C, dtype=torch.long, device=W.device),
                           torch.zeros(C, dtype=torch.bool, device=W.device))
    n, w_norm = W.shape[0], W.norm(dim=0)
    margin = dot_error_factor(n, U32) * w_norm * wm.max_norm + n * UNDERFLOW * (1 + w_norm + wm.max_norm)
    # The old float64 GEMM and this rescoring each miss the exact value by ≤ dot_error_factor(n, U64)
    # ·‖e‖·‖w‖; a boundary gap above 4 of those orders the two sides the same way in both.
    tie_tol = 4 * dot_error_factor(n, U64) * w_norm * wm.max_norm
    a32 = float32_abs_activations(wm, W)
    if not torch.isfinite(a32).all():  # float32 overflow: the bound does not hold
        return float64_top_words(wm, W, top_k)
    # margin is SAFETY times the float32 error, so a non-candidate trails the K words above t by
    # ≥ 1.5·margin in exact arithmetic too, far more than float64's own error.
    mask = candidate_mask(a32, margin, k)
    del a32
    ids, valid = padded_candidates(mask)
    a64 = rescore(wm.E, W, ids)
    best = a64.abs().masked_fill(~valid, -1.0).topk(min(k + 1, ids.shape[1]), dim=1)
    pos = best.indices[:, :k]
    top = TopWords(ids.gather(1, pos), a64.gather(1, pos))
    recomputed = torch.zeros(C, dtype=torch.bool, device=W.device)
    if best.values.shape[1] > k:  # a column with only K candidates cannot tie past its K-th
        recomputed = best.values[:, k - 1] - best.values[:, k] <= tie_tol
    if recomputed.any():
        cols = recomputed.nonzero(as_tuple=True)[0]
        exact = top_words(whole_columns(wm, W[:, cols]), wm.allowed.cpu().numpy(), k)
        top.index[cols], top.value[cols] = exact.index, exact.value
    return Prefiltered(top, valid.sum(1), recomputed)


@dataclass(frozen=True)
class HeadTops:
    """One query head's neurons: top words of its query and key side, dims by decreasing energy
    and the energies (§2.3-2.4)."""

    q: TopWords
    k: TopWords
    order: torch.Tensor
    energy: torch.Tensor


def head_tops(wm: WordMatrix, Wq: torch.Tensor, Wk: torch.Tensor,
              top_k: int) -> tuple[list[HeadTops], list[Prefiltered]]:
    """Every query head of a layer from its weights: Wq (n_heads, d_model, d_head), Wk (n_kv_heads,
    ...) with query head h reading key head h // (n_heads / n_kv_heads) (GQA; n_kv_heads = n_heads
    for the random control). Key sides are selected once per key head. Also returns the two
    :class:`Prefiltered` (query, key) for the benchmark's candidate counts."""
    n_heads, _, d_head = Wq.shape
    group = n_heads // Wk.shape[0]
    Sq, Sk = side_by_side(Wq), side_by_side(Wk)
    pq, pk = exact_top_words(wm, Sq, top_k), exact_top_words(wm, Sk, top_k)
    Nq, Nk = gram_energy(wm.gram, Sq), gram_energy(wm.gram, Sk)
    out = []
    for h in range(n_heads):
        q, k = slice(h * d_head, (h + 1) * d_head), slice((h // group) * d_head, (h // group + 1) * d_head)
        N = Nq[q] + Nk[k]
        out.append(HeadTops(TopWords(pq.top.index[q], pq.top.value[q]), TopWords(pk.top.index[k], pk.top.value[k]),
                            torch.argsort(N, descending=True, stable=True), N))
    return out, [pq, pk]


# ---------------------------------------------------------------------------------------------
# pairs of one head, all neurons at once (§2.4) and the head-level list (§2.5)


@dataclass(frozen=True)
class NeuronPairs:
    """Kept pairs of every neuron of one head: row r of ``q``/``k``/``c`` is one pair of neuron
    ``dim[r]`` (query word, key word, cosine), ordered by neuron rank then decreasing c."""

    dim: np.ndarray
    q: np.ndarray
    k: np.ndarray
    c: np.ndarray
    order: np.ndarray  # (d_head,) dims by decreasing energy
    energy: np.ndarray  # (d_head,)


def kept_pairs(tq: TopWords, tk: TopWords, ws: WordSpace, order: torch.Tensor, energy: torch.Tensor) -> NeuronPairs:
    """§2.4 for every neuron of one head from its top words: keep (a, b) iff c(a,b) > θ(a),
    c(a,b) > θ(b), c > 0, Hq[a,d]·Hk[b,d] > 0 and a ≠ b; rows by neuron rank, then decreasing c."""
    Tq, Tk = tq.index, tk.index
    C = torch.einsum("dqg,dkg->dqk", ws.G[Tq], ws.G[Tk])  # (d_head, K, K) cosines
    theta = torch.maximum(ws.theta[Tq][:, :, None], ws.theta[Tk][:, None, :])
    same_sign = tq.value[:, :, None] * tk.value[:, None, :] > 0
    keep = (C > theta) & (C > 0) & same_sign & (Tq[:, :, None] != Tk[:, None, :])
    d, i, j = keep.nonzero(as_tuple=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    c = C[d, i, j]
    sort = np.lexsort((-c.cpu().numpy(), rank[d].cpu().numpy()))
    return NeuronPairs(d.cpu().numpy()[sort], Tq[d, i].cpu().numpy()[sort], Tk[d, j].cpu().numpy()[sort],
                       c.cpu().numpy()[sort], order.cpu().numpy(), energy.cpu().numpy())


def neuron_pairs(Hq: torch.Tensor, Hk: torch.Tensor, ws: WordSpace, has_tokens: np.ndarray,
                 top_k: int) -> NeuronPairs:
    """§2.4 for every neuron d of one head (Hq, Hk: (n_words, d_head) float64) as batched tensor ops:
    Tq/Tk = top-K words by |activation|, then :func:`kept_pairs`. Words without tokens never take part."""
    return kept_pairs(top_words(Hq, has_tokens, top_k), top_words(Hk, has_tokens, top_k), ws, *energy_order(Hq, Hk))


def head_pairs(np_: NeuronPairs, lower_id: np.ndarray, min_count: int) -> np.ndarray:
    """§2.5: lower-case each pair, drop its direction, count over the head's neurons, keep count >=
    ``min_count``. Returns (n_pairs, 2) int64 lower-case word ids with a <= b, sorted."""
    a, b = lower_id[np_.q], lower_id[np_.k]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys, counts = np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True) if len(lo) else (
        np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    return keys[counts >= min_count]


def random_weights(Wq: torch.Tensor, Wk: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The chance-level control's weights: Gaussian W_q/W_k with the real heads' column norms.
    Wq/Wk: (n_heads, d_model, d_head), GQA expanded; returns the same shapes. The draws come q then
    k, head by head (the order of the earlier per-head loop), so a generator seeded as before gives
    the same control."""
    def like(W: torch.Tensor) -> torch.Tensor:
        R = torch.randn(W.shape, generator=rng, dtype=W.dtype, device="cpu").to(W.device)
        return R / R.norm(dim=0, keepdim=True) * W.norm(dim=0, keepdim=True)
    drawn = [(like(Wq[h]), like(Wk[h])) for h in range(Wq.shape[0])]
    return torch.stack([q for q, _ in drawn]), torch.stack([k for _, k in drawn])


def random_heads(Wq: torch.Tensor, Wk: torch.Tensor, E_w: torch.Tensor,
                 rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The random control's activations (Rq, Rk), each (n_heads, n_words, d_head), on the same word
    vectors: :func:`random_weights` times E_w."""
    Rq, Rk = random_weights(Wq, Wk, rng)
    return per_head(E_w, Rq), per_head(E_w, Rk)
