"""Probe 2: self-attention heads as word pairs, and the instruction-verb statistic (METHODS §2).

Reading order: the word space (candidates, GloVe, thresholds θ, §2.4) -> word vectors E_w (§2.1)
-> per-head neurons Hq, Hk and their energy order (§2.2-2.3) -> kept pairs of one head's neurons,
batched over the neurons (§2.4) -> the head-level list (§2.5) -> :class:`AttentionProbe` (cache
units = layer ranges) -> the verb statistic per layer group and the pair-list change (§2.6).

Axis vocabulary: ``n_words`` (V), ``d_model`` (D), ``d_head`` (d'), ``top_k`` (K), ``d_glove``.
Scores are computed in float64 (PROBE_NOTES: float32 changed 3 of 1,728 top-100 sets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from shiftcheck.probes import words
from shiftcheck.probes.cache import CacheEntry

CODE_VERSION = "attention-1"


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


def head_activations(views: Any, E_w: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hq, Hk: (n_heads, n_words, d_head) = E_w @ (W · g), norm gain folded, GQA expanded (§2.2)."""
    from shiftcheck.probes.models.architectures import fold_norm_gain

    g = views.attn_norm_gain(layer).to(torch.float64)
    Wq = fold_norm_gain(views.W_Q(layer).to(torch.float64), g)  # (n_heads, d_model, d_head)
    Wk = fold_norm_gain(views.W_K(layer, expand_gqa=True).to(torch.float64), g)
    return E_w @ Wq, E_w @ Wk


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


def random_head(Hq_like: torch.Tensor, Wq: torch.Tensor, Wk: torch.Tensor, E_w: torch.Tensor,
                rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The chance-level control: Gaussian W_q/W_k with the real heads' column norms, on the same
    word vectors. Wq/Wk: (d_model, d_head)."""
    def like(W: torch.Tensor) -> torch.Tensor:
        R = torch.randn(W.shape, generator=rng, dtype=W.dtype, device="cpu").to(W.device)
        return R / R.norm(dim=0, keepdim=True) * W.norm(dim=0, keepdim=True)
    return E_w @ like(Wq), E_w @ like(Wk)


# ---------------------------------------------------------------------------------------------
# the probe (cache units = layer ranges)


@dataclass(frozen=True)
class AttentionResult:
    """Head-level pair lists of one model: ``pairs[(layer, head)]`` is a (n, 2) array of lower-case
    word ids; ``control[(layer, head)]`` the random-head control's pair count."""

    label: str
    n_layers: int
    n_heads: int
    words_lower: tuple[str, ...]  # lower-case form of each candidate id (ids index this)
    words_without_tokens: int
    pairs: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    control: dict[tuple[int, int], int] = field(default_factory=dict)

    def pair_set(self, layer: int, head: int) -> set[tuple[str, str]]:
        """The head's kept pairs as lower-case word strings (comparable across models and replays)."""
        w = self.words_lower
        return {(w[a], w[b]) for a, b in self.pairs.get((layer, head), np.zeros((0, 2), np.int64))}

    @cached_property
    def _word_counts(self) -> dict[tuple[int, int], Counter]:
        """Per head: lower-case word -> number of kept pairs containing it (a pair ``v=v`` counts once)."""
        w = self.words_lower
        out = {}
        for key, p in self.pairs.items():
            c: Counter = Counter()
            for a, b in p:
                c[w[a]] += 1
                if w[b] != w[a]:
                    c[w[b]] += 1
            out[key] = c
        return out

    def count_head(self, layer: int, head: int, word: str) -> int:
        """§2.5: kept pairs of the head that contain ``word`` (exact lower-case match, no lemmatisation)."""
        return self._word_counts.get((layer, head), Counter()).get(word.lower(), 0)

    def total_pairs(self, layer: int) -> int:
        return sum(len(self.pairs.get((layer, h), ())) for h in range(self.n_heads))


@dataclass(frozen=True)
class AttentionProbe:
    """Finding 2's word pairs for one model, cached per range of ``layers_per_unit`` layers."""

    n_layers: int
    candidates: words.WordList
    glove_path: str | None = None
    config: AttentionConfig = AttentionConfig()
    name: str = "attention"
    code_version: str = CODE_VERSION

    def cache_config(self) -> dict[str, Any]:
        c = self.config
        return {"candidates": self.candidates.digest, "glove": words.glove_digest(self.glove_path), "K": c.top_k,
                "z": c.z, "baseline": c.baseline, "min_count": c.min_count, "control_seed": c.control_seed}

    def units(self) -> list[dict[str, Any]]:
        step = self.config.layers_per_unit
        return [{"layers": [s, min(self.n_layers, s + step)]} for s in range(0, self.n_layers, step)]

    def _space(self, device: Any) -> WordSpace:
        kv = words.load_glove(self.glove_path)
        return word_space(self.candidates, kv, self.config, words.glove_digest(self.glove_path), device)

    def run_unit(self, checkpoint: Any, unit: dict[str, Any], progress=None) -> CacheEntry:
        views, tokenizer = checkpoint.views, checkpoint.tokenizer
        device = views.W_E.device
        ws = self._space(device)
        E_w, has_tokens = word_vectors(views, tokenizer, self.candidates)
        arrays: dict[str, np.ndarray] = {}
        control: dict[str, int] = {}
        start, stop = unit["layers"]
        rng = torch.Generator().manual_seed(self.config.control_seed + start)
        for layer in range(start, stop):
            Hq, Hk = head_activations(views, E_w, layer)
            from shiftcheck.probes.models.architectures import fold_norm_gain

            g = views.attn_norm_gain(layer).to(torch.float64)
            Wq = fold_norm_gain(views.W_Q(layer).to(torch.float64), g)
            Wk = fold_norm_gain(views.W_K(layer).to(torch.float64), g)
            for h in range(Hq.shape[0]):
                npairs = neuron_pairs(Hq[h], Hk[h], ws, has_tokens, self.config.top_k)
                arrays[f"{layer}/{h}"] = head_pairs(npairs, ws.lower_id, self.config.min_count)
                rq, rk = random_head(Hq[h], Wq[h], Wk[h], E_w, rng)
                control[f"{layer}/{h}"] = len(head_pairs(neuron_pairs(rq, rk, ws, has_tokens, self.config.top_k),
                                                         ws.lower_id, self.config.min_count))
            if progress is not None:
                progress("attention pairs", layer + 1 - start, stop - start)
        meta = {"n_heads": int(views.n_heads), "words_without_tokens": int((~has_tokens).sum()), "control": control}
        return CacheEntry(meta=meta, arrays=arrays)

    def combine(self, label: str, entries: Sequence[CacheEntry]) -> AttentionResult:
        pairs: dict[tuple[int, int], np.ndarray] = {}
        control: dict[tuple[int, int], int] = {}
        for e in entries:
            for key, arr in e.arrays.items():
                layer, head = map(int, key.split("/"))
                pairs[(layer, head)] = np.asarray(arr, dtype=np.int64).reshape(-1, 2)
            for key, n in e.meta["control"].items():
                layer, head = map(int, key.split("/"))
                control[(layer, head)] = int(n)
        return AttentionResult(label, self.n_layers, int(entries[0].meta["n_heads"]),
                               tuple(w.lower() for w in self.candidates.words),
                               int(entries[0].meta["words_without_tokens"]), pairs, control)


# ---------------------------------------------------------------------------------------------
# the statistic (§2.6)


def layer_group(layer: int, n_layers: int) -> int:
    """§2.6: ``layer // (n_layers / 4)``: four groups (the paper's groups of 8 on 32 layers)."""
    return int(layer // (n_layers / 4))


def group_layers(group: int, n_layers: int) -> list[int]:
    return [layer for layer in range(n_layers) if layer_group(layer, n_layers) == group]


@dataclass(frozen=True)
class VerbShares:
    """One verb list in one layer group: per-verb share of changed heads in which tuned > base."""

    shares: dict[str, float]  # verb -> share (only verbs with at least one changed head)
    changed_heads: dict[str, int]  # verb -> number of changed heads
    dropped: int  # verbs of the list with no changed head (or unknown to the candidates)

    @property
    def values(self) -> np.ndarray:
        return np.array(list(self.shares.values()), dtype=float)


def verb_shares(base: AttentionResult, tuned: AttentionResult, verbs: Sequence[str], layers: Sequence[int]) -> VerbShares:
    """§2.6: over heads of ``layers`` with count_T(v) != count_B(v), the fraction with count_T > count_B;
    heads with equal counts (both zero included) are skipped; a verb with no changed head is dropped."""
    shares, changed, dropped = {}, {}, 0
    for v in verbs:
        up = down = 0
        for layer in layers:
            for h in range(base.n_heads):
                b, t = base.count_head(layer, h, v), tuned.count_head(layer, h, v)
                up += t > b
                down += t < b
        if up + down == 0:
            dropped += 1
            continue
        shares[v], changed[v] = up / (up + down), up + down
    return VerbShares(shares, changed, dropped)


def pair_list_change(base: AttentionResult, tuned: AttentionResult, layer: int) -> float:
    """Figure 2's diagnostic for one layer: mean over heads of 1 − |E_B ∩ E_T| / |E_B ∪ E_T|."""
    out = []
    for h in range(base.n_heads):
        eb, et = base.pair_set(layer, h), tuned.pair_set(layer, h)
        union = eb | et
        out.append(0.0 if not union else 1.0 - len(eb & et) / len(union))
    return float(np.mean(out)) if out else 0.0


def heads_changed(base: AttentionResult, tuned: AttentionResult) -> int:
    return sum(base.pair_set(layer, h) != tuned.pair_set(layer, h)
               for layer in range(base.n_layers) for h in range(base.n_heads))


# ---------------------------------------------------------------------------------------------
# the verdict


def verb_verdict(base: AttentionResult, tuned: AttentionResult, group: int, instruction: Sequence[str],
                 control: Sequence[str], threshold: float, alpha: float, min_support: int):
    """Finding 2 in one layer group (§2.6, Table 3): the instruction verbs' mean share of changed heads
    is above ``threshold`` and above the control verbs', Welch two-sided p < alpha. Fewer than
    ``min_support`` instruction verbs with a changed head is inconclusive; no changed head at all fails."""
    from shiftcheck.probes import stats
    from shiftcheck.probes.findings import Verdict

    layers = group_layers(group, base.n_layers)
    ins = verb_shares(base, tuned, instruction, layers)
    ctl = verb_shares(base, tuned, control, layers)
    a, b = ins.values, ctl.values
    test = stats.welch(a, b, "two-sided") if len(a) >= 2 and len(b) >= 2 else None
    p = None if test is None or np.isnan(test.pvalue) else float(test.pvalue)
    g = stats.hedges_g(a, b) if len(a) >= 2 and len(b) >= 2 else float("nan")
    mean_a = float(a.mean()) if len(a) else None
    mean_b = float(b.mean()) if len(b) else None
    changed = heads_changed(base, tuned)
    numbers = {"layers": [layers[0], layers[-1]] if layers else [], "instruction_mean": mean_a,
               "instruction_std": float(a.std()) if len(a) else None, "instruction_n": len(a),
               "control_mean": mean_b, "control_std": float(b.std()) if len(b) else None, "control_n": len(b),
               "instruction_dropped": ins.dropped, "control_dropped": ctl.dropped, "p_value": p,
               "effect": None if np.isnan(g) else float(g), "effect_name": "Hedges' g", "threshold": threshold,
               "heads_changed_in_model": changed, "heads_per_instruction_verb": ins.changed_heads,
               "min_support": min_support}
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    obtained = (f"layers {layers[0]}-{layers[-1]}: instruction verbs {fmt(mean_a)} ± {fmt(numbers['instruction_std'])} "
                f"(n={len(a)} verbs with a changed head, {ins.dropped} dropped) vs control verbs {fmt(mean_b)} ± "
                f"{fmt(numbers['control_std'])} (n={len(b)}); Welch two-sided p = {fmt(p)}") if layers else "no layers"
    expected = (f"instruction share > {threshold} and > the control share, p < alpha = {alpha}, with at least "
                f"{min_support} instruction verbs having a changed head")
    if changed == 0:
        outcome, reason = "fail", "no head changed: base and tuned have identical pair lists in every head"
    elif len(a) < min_support:
        outcome = "inconclusive"
        reason = (f"insufficient support: {len(a)} instruction verb(s) with a changed head in layers "
                  f"{layers[0]}-{layers[-1]} (need {min_support}); heads per verb: {ins.changed_heads}")
    elif mean_a is not None and mean_b is not None and mean_a > threshold and mean_a > mean_b and p is not None and p < alpha:
        outcome, reason = "pass", ""
    else:
        outcome = "fail"
        why = []
        if mean_a is None or mean_a <= threshold:
            why.append(f"instruction share {fmt(mean_a)} is not above {threshold}")
        if mean_a is not None and mean_b is not None and mean_a <= mean_b:
            why.append(f"not above the control share {fmt(mean_b)}")
        if p is None or p >= alpha:
            why.append(f"the difference is not significant (p = {fmt(p)})")
        reason = "; ".join(why)
    return Verdict(finding="attention_verbs", group=f"layers {layers[0]}-{layers[-1]}" if layers else str(group),
                   claim="instruction verbs gain word pairs in more than half of the changed heads of the low layers, "
                         "more than control verbs",
                   test="Welch t-test, two-sided, unpaired (METHODS §2.6)", alternative="two-sided", alpha=alpha,
                   outcome=outcome, obtained=obtained, expected=expected, reason=reason,
                   hint="" if outcome == "pass" else "check that --tuned is the instruction-tuned checkpoint; with "
                        "few changed heads, a larger model (more heads per group) gives the statistic support",
                   numbers=numbers)
