"""METHODS §2.1-2.5: the word space, per-head query/key neurons, each neuron's kept word pairs and a
head's pair list.

Reading order: the word space (candidates, GloVe, thresholds θ, §2.4) -> word vectors E_w (§2.1)
-> per-head neurons Hq, Hk and their energy order (§2.2-2.3) -> each neuron's top-K words, exact
float64 through a float32 prefilter (probes/exact_topk.py) -> kept pairs of one head's neurons, batched over the neurons
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

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shiftcheck.probes import words
# The exact top-K moved to probes/exact_topk.py (shared with the FFN probe); re-exported because
# this module's callers and tests/test_attention.py reach it as ``pairs.<name>``.
from shiftcheck.probes.exact_topk import (SAFETY, U32, U64, UNDERFLOW, Prefiltered, TopWords, WordMatrix,  # noqa: F401
                                          candidate_mask, dot_error_factor, exact_top_words, first_equal_rows,
                                          float32_abs_activations, float64_top_words, ieee_float32_matmul,
                                          padded_candidates, rescore, top_words, whole_columns, word_matrix)


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


# ---------------------------------------------------------------------------------------------
# head weights side by side (the columns the shared exact top-K selects over, probes/exact_topk.py)


def side_by_side(W: torch.Tensor) -> torch.Tensor:
    """(d_model, n·d_head): the heads of W (n, d_model, d_head) as columns, head-major."""
    n, d_model, d_head = W.shape
    return W.permute(1, 0, 2).reshape(d_model, n * d_head)


def gram_energy(gram: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Σ_w (E_w W)[w, c]² = w_cᵀ (E_wᵀE_w) w_c for every column c of W (d_model, C), float64: the
    same sums as §2.3's, without the (n_words, C) activations."""
    return ((gram @ W) * W).sum(0)


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
