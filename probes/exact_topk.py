"""Exact float64 top-K words of many columns through a float32 prefilter, shared by the attention
probe (METHODS §2.4, each query/key neuron's top words) and the FFN probe (§3.2, each principal
component's top words).

Moved unchanged from probes/attention/pairs.py, whose §2.4 wording the docstrings keep ("words
without tokens", "neurons"); the FFN probe calls it with every word allowed (a word without tokens
is a zero row there and scores 0). Imports no finding package.

Axis vocabulary: ``n_words`` (V), ``d_model`` (D), ``C`` (columns: neurons or components), ``top_k`` (K).
The selection is exact float64 (PROBE_NOTES: plain float32 changed 3 of 1,728 top-100 sets): the
activations are computed in float32 (SGEMM, about 1.8 times DGEMM's speed on a CPU), every word whose
float32 |activation| could be in the float64 top-K under a rigorous rounding bound is rescored in
float64, and the top-K is taken among those; a column whose K-th and (K+1)-th float64 values are
too close for float64 itself to order them (or, with ``ordered``, any two neighbours of its top-K)
is recomputed whole in float64 and ranked by ``torch.topk`` as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch


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
    first_equal: torch.Tensor  # (n_words,) int64: the first word whose vector equals this word's

    @cached_property
    def gram(self) -> torch.Tensor:
        """(d_model, d_model) float64 E_wᵀE_w over ALL words (as §2.3's energy sums them). Built on
        first use: the attention probe's energies need it, the FFN probe's top words do not (about
        1 CPU s per model on SmolLM2's 26k candidates)."""
        return self.E.T @ self.E


def first_equal_rows(E: torch.Tensor) -> torch.Tensor:
    """(n,) for each row of E the index of the first row equal to it (itself when unique)."""
    _, group = torch.unique(E, dim=0, return_inverse=True)
    first = torch.full((int(group.max()) + 1 if len(group) else 0,), len(group), dtype=torch.long, device=E.device)
    first.scatter_reduce_(0, group, torch.arange(len(group), device=E.device), reduce="amin")
    return first[group]


def word_matrix(E_w: torch.Tensor, has_tokens: np.ndarray) -> WordMatrix:
    allowed = torch.as_tensor(has_tokens, device=E_w.device)
    norms = E_w.norm(dim=1)[allowed]
    return WordMatrix(E_w, E_w.to(torch.float32), allowed, float(norms.max()) if len(norms) else 0.0,
                      first_equal_rows(E_w))


def float32_abs_activations(wm: WordMatrix, W: torch.Tensor) -> torch.Tensor:
    """(C, n_words) float32 |E_w · w_c| for each column c of W (d_model, C), words without tokens
    set to -1 (below every |activation|, as :func:`top_words` masks them). Column-major so that
    each column's selection below runs over contiguous memory (about 4x faster than along dim 0)."""
    a = (W.T.to(torch.float32) @ wm.E32.T).abs_()
    return a.masked_fill_(~wm.allowed[None, :], -1.0)


def candidate_threshold(top32: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """(C,) float32: the least |a32| a word of a column's float64 top-K can have. With t the K-th
    largest float32 |a| among allowed words (``top32``: each column's K largest) and |a32 - a64| ≤
    margin: K words have |a64| ≥ t - margin, so the float64 K-th value is ≥ t - margin and a word
    needs |a32| ≥ t - 2·margin. The threshold is rounded down to float32, so the comparison never
    drops a word, and kept ≥ -0.5, so words without tokens (-1) never pass while every allowed word
    (≥ 0) still can."""
    t = top32.min(1).values.to(torch.float64)
    thr = (t - 2 * margin).to(torch.float32)
    return torch.nextafter(thr, torch.full_like(thr, -math.inf)).clamp_(min=-0.5)


def candidate_mask(a32_abs: torch.Tensor, margin: torch.Tensor, k: int,
                   top32: torch.Tensor | None = None) -> torch.Tensor:
    """(C, n_words): the words that could be in a column's float64 top-K (:func:`candidate_threshold`).
    ``top32``: each column's K largest, when the caller already has them."""
    if top32 is None:
        top32 = a32_abs.topk(k, dim=1, sorted=False).values
    return a32_abs >= candidate_threshold(top32, margin)[:, None]


def near_candidates(a32_abs: torch.Tensor, margin: torch.Tensor, k: int,
                    extra: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`padded_candidates` of :func:`candidate_mask`, read off each column's K + ``extra``
    largest |a32| instead of a mask over every word (a full pass and a nonzero over (C, n_words)
    cost about a tenth of a layer). A column whose K + extra largest all pass the threshold may have
    more candidates and takes the mask. Also returns each column's K largest |a32| (C, K), for the
    overflow check. The candidates are the same words, in the same increasing-id order."""
    n_words = a32_abs.shape[1]
    k2 = min(n_words, k + extra)
    vals, idx = a32_abs.topk(k2, dim=1)  # sorted: the K-th largest is vals[:, k - 1]
    thr = candidate_threshold(vals[:, :k], margin)
    passing = vals >= thr[:, None]
    ids = torch.where(passing, idx, n_words).sort(dim=1).values  # increasing id, padding last
    valid = ids < n_words
    ids = ids.masked_fill_(~valid, 0)
    more = passing[:, -1] & (k2 < n_words)
    if more.any():
        cols = more.nonzero(as_tuple=True)[0]
        more_ids, more_valid = padded_candidates(a32_abs[cols] >= thr[cols, None])
        P = max(ids.shape[1], more_ids.shape[1])
        ids, valid = _pad(ids, P), _pad(valid, P)
        ids[cols], valid[cols] = _pad(more_ids, P), _pad(more_valid, P)
    P = int(valid.sum(1).max()) if len(valid) else 0
    return ids[:, :P], valid[:, :P], vals[:, :k]


def _pad(x: torch.Tensor, P: int) -> torch.Tensor:
    """``x`` (C, p) widened to (C, P) with zeros (word 0, not valid)."""
    return torch.nn.functional.pad(x, (0, P - x.shape[1])) if x.shape[1] < P else x


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


def exact_top_words(wm: WordMatrix, W: torch.Tensor, top_k: int,
                    whole: Callable[[torch.Tensor], TopWords] | None = None, ordered: bool = False) -> Prefiltered:
    """Each column's float64 top-K words by |E_w · w| (words without tokens never chosen), equal to
    :func:`top_words` on the float64 activations: float32 activations, the candidates
    :func:`candidate_mask` keeps, their float64 rescoring and the top-K among them.

    Ties: where the candidates' K-th and (K+1)-th float64 |a| are closer than float64 rounding can
    tell apart (tie_tol; exact ties come from duplicate word vectors), which words win depends on
    ``torch.topk``'s tie-breaking over the whole column; those columns are recomputed whole in
    float64 and ranked by the same ``torch.topk`` call as before. ``ordered``: the order inside the
    top-K matters too (the FFN probe stores it), so any two neighbours among the first K+1 that close
    also send the column to the recompute. ``whole(cols)`` is that recompute, (len(cols), K), as the
    caller's old selection computed it (default :func:`whole_columns` and :func:`top_words`); it
    is also the fallback for every column when the bound cannot hold."""
    k = min(top_k, int(wm.allowed.sum()))
    C = W.shape[1]
    if whole is None:
        def whole(cols: torch.Tensor) -> TopWords:
            return top_words(whole_columns(wm, W[:, cols]), wm.allowed.cpu().numpy(), k)
        fallback = lambda: float64_top_words(wm, W, top_k)  # noqa: E731
    else:
        fallback = lambda: Prefiltered(whole(torch.arange(C, device=W.device)),  # noqa: E731
                                       torch.full((C,), int(wm.allowed.sum()), device=W.device),
                                       torch.ones(C, dtype=torch.bool, device=W.device))
    if not ieee_float32_matmul(W.device):  # the bound needs IEEE float32
        return fallback()
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
    # margin is SAFETY times the float32 error, so a non-candidate trails the K words above t by
    # ≥ 1.5·margin in exact arithmetic too, far more than float64's own error. SmolLM2's heads have
    # 105 candidates per column on average for K = 100, at most 133: K/2 + 16 more cover them.
    ids, valid, top32 = near_candidates(a32, margin, k, extra=k // 2 + 16)
    del a32
    # float32 overflow (inf, or NaN from inf - inf) breaks the bound. torch.topk ranks NaN and +inf
    # above every number, so a column holding one has it among its K largest: checking those (C, K)
    # instead of the whole (C, n_words) saves a full pass (0.06 s a call on SmolLM2).
    if not torch.isfinite(top32).all():
        return fallback()
    a64 = rescore(wm.E, W, ids)
    best = a64.abs().masked_fill(~valid, -1.0).topk(min(k + 1, ids.shape[1]), dim=1)
    pos = best.indices[:, :k]
    top = TopWords(ids.gather(1, pos), a64.gather(1, pos))
    recomputed = torch.zeros(C, dtype=torch.bool, device=W.device)
    if best.values.shape[1] > k:  # a column with only K candidates cannot tie past its K-th
        recomputed = best.values[:, k - 1] - best.values[:, k] <= tie_tol
    if ordered and k > 1:  # padding (-1) after the last candidate is never within tie_tol of a value ≥ 0
        gaps = best.values[:, : k - 1] - best.values[:, 1:k]
        recomputed = recomputed | (gaps <= tie_tol[:, None]).any(1)
    if recomputed.any():
        cols = recomputed.nonzero(as_tuple=True)[0]
        exact = whole(cols)
        top.index[cols], top.value[cols] = exact.index, exact.value
    return Prefiltered(top, valid.sum(1), recomputed)
