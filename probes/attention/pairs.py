"""METHODS §2.1-2.5: the word space, per-head query/key neurons, each neuron's kept word pairs and a
head's pair list.

Reading order: the word space (candidates, GloVe, thresholds θ, §2.4) -> word vectors E_w (§2.1)
-> per-head neurons Hq, Hk and their energy order (§2.2-2.3) -> kept pairs of one head's neurons,
batched over the neurons (§2.4) -> the head-level list (§2.5) -> the random-head control.

Axis vocabulary: ``n_words`` (V), ``d_model`` (D), ``d_head`` (d'), ``top_k`` (K), ``d_glove``.
Scores are computed in float64 (PROBE_NOTES: float32 changed 3 of 1,728 top-100 sets).
"""

from __future__ import annotations

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
    n, d_model, d_head = W.shape
    side_by_side = W.permute(1, 0, 2).reshape(d_model, n * d_head)
    return (E_w @ side_by_side).reshape(E_w.shape[0], n, d_head).permute(1, 0, 2)


def head_activations(views: Any, E_w: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hq, Hk: (n_heads, n_words, d_head) = E_w @ (W · g), norm gain folded, GQA expanded (§2.2).

    Hk is computed once per key/value head and then repeated (as HF's ``repeat_kv``), not once per
    query head: a third of the work on a 3-kv-head model such as SmolLM2."""
    from shiftcheck.probes.models.architectures import fold_norm_gain

    g = views.attn_norm_gain(layer).to(torch.float64)
    Wq = fold_norm_gain(views.W_Q(layer).to(torch.float64), g)  # (n_heads, d_model, d_head)
    Wk = fold_norm_gain(views.W_K(layer, expand_gqa=False).to(torch.float64), g)  # (n_kv_heads, ...)
    Hk = per_head(E_w, Wk).repeat_interleave(Wq.shape[0] // Wk.shape[0], dim=0)
    return per_head(E_w, Wq), Hk


def energy_order(Hq: torch.Tensor, Hk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """§2.3 for one head: N_d = Σ_w Hq[w,d]² + Σ_w Hk[w,d]²; dims in decreasing energy. (d_head,) each."""
    N = (Hq**2).sum(0) + (Hk**2).sum(0)
    return torch.argsort(N, descending=True, stable=True), N


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


def neuron_pairs(Hq: torch.Tensor, Hk: torch.Tensor, ws: WordSpace, has_tokens: np.ndarray,
                 top_k: int) -> NeuronPairs:
    """§2.4 for every neuron d of one head (Hq, Hk: (n_words, d_head)) as batched tensor ops:
    Tq/Tk = top-K words by |activation|; keep (a, b) iff c(a,b) > θ(a), c(a,b) > θ(b), c > 0,
    Hq[a,d]·Hk[b,d] > 0 and a ≠ b. Words without tokens never take part."""
    mask = torch.as_tensor(~has_tokens, device=Hq.device)
    aq = Hq.abs().masked_fill(mask[:, None], -1.0)
    ak = Hk.abs().masked_fill(mask[:, None], -1.0)
    k = min(top_k, int((~mask).sum()))
    Tq = aq.topk(k, dim=0).indices.T  # (d_head, K)
    Tk = ak.topk(k, dim=0).indices.T  # (d_head, K)
    C = torch.einsum("dqg,dkg->dqk", ws.G[Tq], ws.G[Tk])  # (d_head, K, K) cosines
    theta = torch.maximum(ws.theta[Tq][:, :, None], ws.theta[Tk][:, None, :])
    dims = torch.arange(Hq.shape[1], device=Hq.device)
    sq = Hq[Tq, dims[:, None]]  # (d_head, K) activations of the query words
    sk = Hk[Tk, dims[:, None]]
    keep = (C > theta) & (C > 0) & (sq[:, :, None] * sk[:, None, :] > 0) & (Tq[:, :, None] != Tk[:, None, :])
    d, i, j = keep.nonzero(as_tuple=True)
    order, energy = energy_order(Hq, Hk)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    c = C[d, i, j]
    sort = np.lexsort((-c.cpu().numpy(), rank[d].cpu().numpy()))
    return NeuronPairs(d.cpu().numpy()[sort], Tq[d, i].cpu().numpy()[sort], Tk[d, j].cpu().numpy()[sort],
                       c.cpu().numpy()[sort], order.cpu().numpy(), energy.cpu().numpy())


def head_pairs(np_: NeuronPairs, lower_id: np.ndarray, min_count: int) -> np.ndarray:
    """§2.5: lower-case each pair, drop its direction, count over the head's neurons, keep count >=
    ``min_count``. Returns (n_pairs, 2) int64 lower-case word ids with a <= b, sorted."""
    a, b = lower_id[np_.q], lower_id[np_.k]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys, counts = np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True) if len(lo) else (
        np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    return keys[counts >= min_count]


def random_heads(Wq: torch.Tensor, Wk: torch.Tensor, E_w: torch.Tensor,
                 rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The chance-level control of every head: Gaussian W_q/W_k with the real heads' column norms,
    on the same word vectors. Wq/Wk: (n_heads, d_model, d_head), GQA expanded; returns (Rq, Rk),
    each (n_heads, n_words, d_head). The draws come q then k, head by head (the order of the
    earlier per-head loop), so a generator seeded as before gives the same control."""
    def like(W: torch.Tensor) -> torch.Tensor:
        R = torch.randn(W.shape, generator=rng, dtype=W.dtype, device="cpu").to(W.device)
        return R / R.norm(dim=0, keepdim=True) * W.norm(dim=0, keepdim=True)
    drawn = [(like(Wq[h]), like(Wk[h])) for h in range(Wq.shape[0])]
    return per_head(E_w, torch.stack([q for q, _ in drawn])), per_head(E_w, torch.stack([k for _, k in drawn]))

