"""Probe 3: feed-forward "concepts" as principal components of the down-projection (METHODS §3.1-3.2).

Reading order: the decomposition of one layer (§3.1), the output-embedding word vectors and the
top words of a component (§3.2), one layer end to end, the authors' TSV format (§6), and last the
:class:`FfnProbe` that runs layer ranges through the result cache (runner.py protocol).

Conventions (written, never silent): ``W_out`` is ``(d_mlp, d_model)``, one row per FFN value vector
(``WeightViews.W_out``); columns are centred before the SVD; no norm is folded (the final norm's
gain is not applied, §3.2); word vectors are the output-embedding rows (``W_U.T``), mean over a
word's tokens, then L2-normalised. Axis vocabulary: ``d_mlp d_model n_comp n_words top_k``.

Words are stored as indices into the candidate list whose digest is part of the cache key.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftcheck.probes import words as wordlib
from shiftcheck.probes.cache import CacheEntry
from shiftcheck.probes.exact_topk import U64, TopWords, WordMatrix, dot_error_factor, exact_top_words, word_matrix

CODE_VERSION = "ffn-1"
R_DEFAULT = 300  # components per layer kept for the analysis (METHODS §3.1, §5)
K_DEFAULT = 50  # words stored per component (§3.2)
K_SHOWN = 15  # words the annotator sees (§3.2)
TSV_COLUMNS = ("Model", "Size", "Layer", "Type", "Head", "Rank", "Score", "TopK")


class FfnError(ValueError):
    """Bad FFN probe input (layers out of range, unreadable TSV); the message names the cause."""


@dataclass(frozen=True)
class FfnConfig:
    """Everything besides the checkpoint that changes the numbers."""

    n_components: int = R_DEFAULT  # R, capped at min(d_model, d_mlp) per layer
    top_k: int = K_DEFAULT  # K
    words_digest: str = ""  # digest of the candidate list the indices point into
    float64: bool = True  # SVD precision (float32 is allowed, METHODS §3.1)

    def cache_config(self) -> dict[str, Any]:
        return {"R": self.n_components, "K": self.top_k, "words": self.words_digest, "float64": self.float64}


# ---------------------------------------------------------------------------------------------
# §3.1 decomposition


def centre_columns(W: torch.Tensor) -> torch.Tensor:
    """``W̃ = W − mean_rows(W)``: each of the d_model columns centred over the d_mlp rows. (d_mlp, d_model)"""
    return W - W.mean(dim=0, keepdim=True)


def principal_directions(W_tilde: torch.Tensor, R: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD ``W̃ = U Σ Vᵀ``; returns ``(ratio, V_R)``.

    ``ratio[r] = σ_r² / Σ_s σ_s²`` over ALL min(d_mlp, d_model) components (the ``Score`` column), and
    ``V_R`` (n_comp, d_model): the first ``R`` right singular vectors (rows), by decreasing σ.
    """
    S, Vh = torch.linalg.svd(W_tilde, full_matrices=False)[1:]  # S (k,), Vh (k, d_model)
    var = S**2
    ratio = var / var.sum().clamp_min(torch.finfo(var.dtype).tiny)
    return ratio, Vh[: min(R, Vh.shape[0])]


# ---------------------------------------------------------------------------------------------
# §3.2 words


def output_word_vectors(W_U: torch.Tensor, tokens: wordlib.WordTokens) -> torch.Tensor:
    """``Ê_o`` (n_words, d_model): mean output-embedding row of each word's tokens (§2.1 trick on
    ``W_U.T``), L2-normalised. Words without tokens are zero rows and never score."""
    E = wordlib.mean_rows(W_U.t(), tokens)  # (n_words, d_model)
    return E / E.norm(dim=1, keepdim=True).clamp_min(1e-12)


def full_top_words(V_R: torch.Tensor, E_hat: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``K`` words of each component by ``|v_r · ê_o(w)|`` from the whole (n_comp, n_words)
    product: the float32 path, and the float64 ranking :func:`top_words` must reproduce (and falls
    back to for the components it cannot settle from a prefilter). Ties are broken by torch.topk."""
    proj = (V_R @ E_hat.t()).abs()  # (n_comp, n_words)
    score, idx = proj.topk(min(K, proj.shape[1]), dim=1)
    return idx, score


def output_word_matrix(E_hat: torch.Tensor) -> WordMatrix:
    """Ê_o (float64) prepared for the exact prefiltered top-K, every word allowed: a word without
    tokens is a zero row that scores 0 and can be chosen once K exceeds the other words, as in
    :func:`full_top_words`."""
    return word_matrix(E_hat.to(torch.float64), np.ones(E_hat.shape[0], dtype=bool))


def top_words(V_R: torch.Tensor, E_hat: torch.Tensor | WordMatrix, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``K`` words of each component by ``|v_r · ê_o(w)|`` (sign of v_r is arbitrary, §3.2).

    Returns ``(idx, score)``, both (n_comp, top_k), float64 scores; equal, indices, order and
    scores, to :func:`full_top_words` in float64 (ties broken by its torch.topk, copies of a
    duplicate word vector given their first copy's value) at about three
    quarters of its CPU time on SmolLM2 (the float32 product is most of what is left): float32
    activations, a rigorous rounding bound, float64 rescoring of the words that could make the top K
    (probes/exact_topk.py), and the whole product for components whose order float64 rounding could
    flip. That last step takes the product of those components' rows only, which equals the same
    rows of the whole product where the BLAS computes each output element independently of the
    row count (checked on all 30 SmolLM2 layers by benchmarks/ffn.py topk-compare). ``E_hat`` may
    be a prepared :func:`output_word_matrix` (once per model: it holds a float32 copy and the
    duplicate-row map). Float32 inputs take the whole float32 product, as before."""
    if not isinstance(E_hat, WordMatrix) and V_R.dtype != torch.float64:
        return full_top_words(V_R, E_hat, K)
    wm = E_hat if isinstance(E_hat, WordMatrix) else output_word_matrix(E_hat)
    V_R = V_R.to(torch.float64)  # a prepared Ê_o is float64: so is the whole product it stands for

    def whole(rows: torch.Tensor) -> TopWords:
        # A product of a few rows may round a duplicate word vector's two copies 1 ulp apart where
        # the whole product did not, or the other way round: copies take their first copy's value,
        # so which copy wins is torch.topk's tie rule, not the BLAS kernel's rounding.
        score, idx = (V_R[rows] @ wm.E.t())[:, wm.first_equal].abs().topk(min(K, wm.E.shape[0]), dim=1)
        return TopWords(idx, score)

    pre = exact_top_words(wm, V_R.T, K, whole=whole, ordered=True)
    idx, value = pre.top.index, pre.top.value.abs()
    # Stored scores are float32: a rescored value that float64 rounding alone could move across a
    # float32 rounding boundary (within 2 GEMM errors of it) might round otherwise than the whole
    # product's; such components are taken from the whole product (about 1 in 10^5 values).
    tol = (2 * dot_error_factor(V_R.shape[1], U64) * wm.max_norm * V_R.norm(dim=1))[:, None]
    unsure = ((value - tol).to(torch.float32) != (value + tol).to(torch.float32)).any(1) & ~pre.recomputed
    if unsure.any():
        rows = unsure.nonzero(as_tuple=True)[0]
        exact = whole(rows)
        idx[rows], value[rows] = exact.index, exact.value
    return idx, value


# ---------------------------------------------------------------------------------------------
# one layer


@dataclass(frozen=True)
class LayerComponents:
    """One layer's decomposition: all variance ratios and the top words of the first R components."""

    layer: int
    ratio: np.ndarray  # (min(d_mlp, d_model),) explained-variance ratios, decreasing
    top_idx: np.ndarray  # (n_comp, top_k) int32 indices into the candidate list
    top_score: np.ndarray  # (n_comp, top_k) float32 |v_r · ê_o(w)|


def layer_components(W_out: torch.Tensor, E_hat: torch.Tensor | WordMatrix, config: FfnConfig,
                     layer: int) -> LayerComponents:
    """§3.1-3.2 for one layer on a given device; float64 (or float32) for the SVD. ``E_hat`` may be
    a prepared :func:`output_word_matrix` (float64 only; on W_out's device)."""
    dtype = torch.float64 if config.float64 else torch.float32
    W = W_out.to(dtype)  # (d_mlp, d_model)
    ratio, V_R = principal_directions(centre_columns(W), config.n_components)
    if isinstance(E_hat, WordMatrix) and not config.float64:
        E_hat = E_hat.E
    E = E_hat if isinstance(E_hat, WordMatrix) else E_hat.to(device=W.device, dtype=dtype)
    idx, score = top_words(V_R, E, config.top_k)
    return LayerComponents(layer, ratio.cpu().numpy().astype(np.float64), idx.cpu().numpy().astype(np.int32),
                           score.cpu().numpy().astype(np.float32))


@dataclass(frozen=True)
class FfnResult:
    """One model's components over its layers, words as indices into ``words``."""

    label: str
    words: tuple[str, ...]
    layers: tuple[LayerComponents, ...]
    d_model: int
    d_mlp: int
    n_words_with_tokens: int
    meta: dict = field(default_factory=dict)

    def component_words(self, layer_pos: int, rank: int, k: int = K_SHOWN) -> list[str]:
        """The first ``k`` words of component ``rank`` (1-based) of the ``layer_pos``-th stored layer."""
        return [self.words[i] for i in self.layers[layer_pos].top_idx[rank - 1, :k]]

    def cumulative_variance(self) -> dict[int, np.ndarray]:
        return {lc.layer: np.cumsum(lc.ratio) for lc in self.layers}


def word_vectors_for(views: Any, tokenizer: Any, words: Sequence[str]) -> tuple[torch.Tensor, int]:
    """(Ê_o, number of words with at least one token) for a model."""
    tokens = wordlib.word_token_ids(tokenizer, words)
    return output_word_vectors(views.W_U, tokens), len(words) - tokens.empty


@dataclass(frozen=True)
class OutputWords:
    """What every layer of one model shares: Ê_o (prepared for the top-K when float64) and the
    number of words with tokens."""

    E_hat: torch.Tensor | WordMatrix
    n_words_with_tokens: int


def output_words(views: Any, tokenizer: Any, words: Sequence[str], config: FfnConfig,
                 device: str | None = None) -> OutputWords:
    E_hat, n_tok = word_vectors_for(views, tokenizer, words)
    E_hat = E_hat.to(torch.device(device) if device else E_hat.device)
    return OutputWords(output_word_matrix(E_hat) if config.float64 else E_hat, n_tok)


def ffn_components(views: Any, tokenizer: Any, words: Sequence[str], config: FfnConfig,
                   layers: Sequence[int] | None = None, label: str = "", device: str | None = None,
                   prepared: OutputWords | None = None) -> FfnResult:
    """Public entry point without the cache: PCA + words for ``layers`` (default all) of one model.
    ``prepared``: this model's :func:`output_words`, when the caller keeps them between calls."""
    layers = list(range(views.n_layers)) if layers is None else list(layers)
    bad = [l for l in layers if not 0 <= l < views.n_layers]
    if bad:
        raise FfnError(f"layers {bad} out of range: the model has {views.n_layers} layers (0-based)")
    ow = prepared if prepared is not None else output_words(views, tokenizer, words, config, device)
    E = ow.E_hat.E if isinstance(ow.E_hat, WordMatrix) else ow.E_hat
    out = tuple(layer_components(views.W_out(l).to(E.device), ow.E_hat, config, l) for l in layers)
    return FfnResult(label, tuple(words), out, views.d_model, views.d_mlp, ow.n_words_with_tokens)


# ---------------------------------------------------------------------------------------------
# §6 the authors' TSV (Model Size Layer Type Head Rank Score TopK)


def decode_field(text: str) -> str:
    """Authors' escaping (§6): a field fully wrapped in double quotes is unwrapped (``""`` -> ``"``),
    then ``/n`` -> newline and ``/t`` -> tab."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text.replace("/n", "\n").replace("/t", "\t")


def encode_field(text: str) -> str:
    return text.replace("\n", "/n").replace("\t", "/t")


def to_tsv_rows(result: FfnResult, model: str, size: str, n_rows: int | None = None) -> list[list[str]]:
    """One row per component: Type FFN, Head 0, Rank 1-based, Score = explained-variance ratio."""
    rows = []
    for lc in result.layers:
        n = lc.top_idx.shape[0] if n_rows is None else min(n_rows, lc.top_idx.shape[0])
        for r in range(n):
            top = "|||".join(encode_field(result.words[i]) for i in lc.top_idx[r])
            rows.append([model, size, str(lc.layer), "FFN", "0", str(r + 1), repr(float(lc.ratio[r])), top])
    return rows


def write_tsv(rows: Sequence[Sequence[str]], path: Path, header: Sequence[str] = TSV_COLUMNS) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    Path(path).write_text(buf.getvalue(), encoding="utf-8")
    return Path(path)


def read_tsv(path: str | Path) -> list[dict[str, str]]:
    """Rows of an FFN TSV (plain or annotated) as dicts, fields decoded; ``TopK`` kept joined."""
    p = Path(path)
    if not p.is_file():
        raise FfnError(f"FFN TSV not found: {p}")
    lines = p.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise FfnError(f"{p}: empty file")
    header = lines[0].split("\t")
    missing = [c for c in ("Layer", "Rank", "TopK") if c not in header]
    if missing:
        raise FfnError(f"{p}: missing columns {missing}; expected the authors' header {' '.join(TSV_COLUMNS)}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < len(header):
            cells += [""] * (len(header) - len(cells))
        rows.append({h: decode_field(c) for h, c in zip(header, cells)})
    return rows


def split_topk(text: str) -> list[str]:
    return [w for w in text.split("|||") if w != ""]


# ---------------------------------------------------------------------------------------------
# the Probe (runner.py protocol): units are layer ranges


def layer_ranges(n_layers: int, per_unit: int) -> list[tuple[int, int]]:
    return [(a, min(a + per_unit, n_layers)) for a in range(0, n_layers, per_unit)]


@dataclass(frozen=True)
class FfnProbe:
    """Finding 3's decomposition as a cached probe; one unit per range of ``layers_per_unit`` layers.

    Unit arrays: ``ratio_<l>`` (all variance ratios), ``idx_<l>`` (n_comp, top_k) int32,
    ``score_<l>`` float32. Meta: d_model, d_mlp, words with tokens, the layers.
    """

    words: tuple[str, ...]
    n_layers: int
    config: FfnConfig = FfnConfig()
    layers_per_unit: int = 4
    device: str | None = None
    name: str = "ffn"
    code_version: str = CODE_VERSION
    # Per-process memo of Ê_o per loaded model (held weakly, so it goes with the model), as
    # AttentionProbe keeps its word vectors: tokenising the 26,473 candidates and preparing Ê_o took
    # about 3 s in each of a SmolLM2 run's 8 units. Ê_o depends only on the model's W_U and
    # tokenizer, both fixed for a loaded checkpoint. Not part of the cache key.
    _memo: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def cache_config(self) -> dict[str, Any]:
        return self.config.cache_config()

    def _output_words(self, views: Any, model: Any, tokenizer: Any) -> OutputWords:
        import weakref

        per_model = self._memo.setdefault("output_words", weakref.WeakKeyDictionary())
        if model not in per_model:
            per_model[model] = output_words(views, tokenizer, self.words, self.config, self.device)
        return per_model[model]

    def units(self) -> list[dict[str, Any]]:
        return [{"layers": [a, b]} for a, b in layer_ranges(self.n_layers, self.layers_per_unit)]

    def run_unit(self, checkpoint: Any, unit: dict[str, Any], progress: Any = None) -> CacheEntry:
        from shiftcheck.probes.models.architectures import WeightViews

        a, b = unit["layers"]
        views = WeightViews(checkpoint.model)
        ow = self._output_words(views, checkpoint.model, checkpoint.tokenizer)
        res = ffn_components(views, checkpoint.tokenizer, self.words, self.config, range(a, b), device=self.device,
                             prepared=ow)
        return to_entry(res)

    def combine(self, label: str, entries: Sequence[CacheEntry]) -> FfnResult:
        layers: list[LayerComponents] = []
        for e in entries:
            layers += from_entry(e).layers
        m = entries[0].meta
        return FfnResult(label, self.words, tuple(layers), m["d_model"], m["d_mlp"], m["n_words_with_tokens"])


def to_entry(res: FfnResult) -> CacheEntry:
    arrays: dict[str, np.ndarray] = {}
    for lc in res.layers:
        arrays[f"ratio_{lc.layer}"] = lc.ratio
        arrays[f"idx_{lc.layer}"] = lc.top_idx
        arrays[f"score_{lc.layer}"] = lc.top_score
    meta = {"layers": [lc.layer for lc in res.layers], "d_model": res.d_model, "d_mlp": res.d_mlp,
            "n_words_with_tokens": res.n_words_with_tokens}
    return CacheEntry(meta=meta, arrays=arrays)


def from_entry(entry: CacheEntry, words: tuple[str, ...] = (), label: str = "") -> FfnResult:
    m, a = entry.meta, entry.arrays
    layers = tuple(LayerComponents(l, np.asarray(a[f"ratio_{l}"]), np.asarray(a[f"idx_{l}"]),
                                   np.asarray(a[f"score_{l}"])) for l in m["layers"])
    return FfnResult(label, words, layers, m["d_model"], m["d_mlp"], m["n_words_with_tokens"])
