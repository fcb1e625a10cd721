"""Finding 2's probe: each model's head-level pair lists (METHODS §2.5), cached per range of layers.

``AttentionResult`` is what both the probe and the authors' TSV replay (``io.py``) produce: per
(layer, query head) a list of lower-case word pairs, plus the model's key/value head count so that
the statistic can group query heads that share W_K (GQA) into one cluster.
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
from shiftcheck.probes.attention.pairs import (AttentionConfig, HeadTops, WordMatrix, WordSpace, head_pairs, head_tops,
                                               head_weights, kept_pairs, random_weights, word_matrix, word_space,
                                               word_vectors)
from shiftcheck.probes.cache import CacheEntry

CODE_VERSION = "attention-2"  # 2: the key/value head count is stored (the statistic's clusters)


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
    n_kv_heads: int | None = None  # None: unknown (a replay), each query head is its own cluster

    def cluster(self, head: int) -> int:
        """The key/value head of a query head (METHODS §2.2: h // (H / H_kv)): query heads sharing W_K
        are one unit of evidence for the statistic."""
        kv = self.n_kv_heads or self.n_heads
        return head // (self.n_heads // kv)

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
        return self._word_counts.get((layer, head), {}).get(word.lower(), 0)

    def total_pairs(self, layer: int) -> int:
        return sum(len(self.pairs.get((layer, h), ())) for h in range(self.n_heads))


def head_list(top: HeadTops, ws: WordSpace, config: AttentionConfig) -> np.ndarray:
    """§2.4-2.5: one head's pair list from its neurons' top words."""
    return head_pairs(kept_pairs(top.q, top.k, ws, top.order, top.energy), ws.lower_id, config.min_count)


def head_pair_lists(views: Any, E_w: torch.Tensor, has_tokens: np.ndarray, ws: WordSpace, layers: Sequence[int],
                    config: AttentionConfig) -> dict[tuple[int, int], np.ndarray]:
    """§2.5 lists of every head of ``layers``, without the random-head control (for experiments that
    only need the lists, e.g. the null series of tests/test_attention_nulls.py)."""
    wm = word_matrix(E_w, has_tokens)
    out = {}
    for layer in layers:
        tops, _ = head_tops(wm, *head_weights(views, layer), config.top_k)
        for h, top in enumerate(tops):
            out[(layer, h)] = head_list(top, ws, config)
    return out


@dataclass(frozen=True)
class AttentionProbe:
    """Finding 2's word pairs for one model, cached per range of ``layers_per_unit`` layers."""

    n_layers: int
    candidates: words.WordList
    glove_path: str | None = None
    config: AttentionConfig = AttentionConfig()
    name: str = "attention"
    code_version: str = CODE_VERSION
    # Per-process memo of what every unit of a run shares (the GloVe word space per device, the
    # candidate word vectors and their Gram matrix per loaded model, held weakly so they go with the
    # model): about 9 s a unit on SmolLM2 (GloVe thresholds, 26k words tokenised) and 1-2 s for the
    # Gram matrix. Not part of the cache key.
    _memo: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def cache_config(self) -> dict[str, Any]:
        c = self.config
        return {"candidates": self.candidates.digest, "glove": words.glove_digest(self.glove_path), "K": c.top_k,
                "z": c.z, "baseline": c.baseline, "min_count": c.min_count, "control_seed": c.control_seed}

    def units(self) -> list[dict[str, Any]]:
        step = self.config.layers_per_unit
        return [{"layers": [s, min(self.n_layers, s + step)]} for s in range(0, self.n_layers, step)]

    def _space(self, device: Any) -> WordSpace:
        key = ("space", str(device))
        if key not in self._memo:
            kv = words.load_glove(self.glove_path)
            self._memo[key] = word_space(self.candidates, kv, self.config, words.glove_digest(self.glove_path), device)
        return self._memo[key]

    def _word_vectors(self, views: Any, tokenizer: Any) -> tuple[WordMatrix, np.ndarray]:
        import weakref

        per_model = self._memo.setdefault("vectors", weakref.WeakKeyDictionary())
        if views not in per_model:
            E_w, has_tokens = word_vectors(views, tokenizer, self.candidates)
            per_model[views] = (word_matrix(E_w, has_tokens), has_tokens)
        return per_model[views]

    def run_unit(self, checkpoint: Any, unit: dict[str, Any], progress=None) -> CacheEntry:
        views, tokenizer = checkpoint.views, checkpoint.tokenizer
        device = views.W_E.device
        ws = self._space(device)
        wm, has_tokens = self._word_vectors(views, tokenizer)
        arrays: dict[str, np.ndarray] = {}
        control: dict[str, int] = {}
        start, stop = unit["layers"]
        rng = torch.Generator().manual_seed(self.config.control_seed + start)
        for layer in range(start, stop):
            Wq, Wk = head_weights(views, layer)
            tops, _ = head_tops(wm, Wq, Wk, self.config.top_k)
            # the control's W_K, GQA expanded: one random key head per query head, as before (the
            # folded kv heads repeated are exactly the folded expanded ones: a row scaling commutes)
            Rq, Rk = random_weights(Wq, Wk.repeat_interleave(Wq.shape[0] // Wk.shape[0], dim=0), rng)
            random_tops, _ = head_tops(wm, Rq, Rk, self.config.top_k)
            for h, (top, rand) in enumerate(zip(tops, random_tops)):
                arrays[f"{layer}/{h}"] = head_list(top, ws, self.config)
                control[f"{layer}/{h}"] = len(head_list(rand, ws, self.config))
            if progress is not None:
                progress("attention pairs", layer + 1 - start, stop - start)
        meta = {"n_heads": int(views.n_heads), "n_kv_heads": int(views.n_kv_heads),
                "words_without_tokens": int((~has_tokens).sum()), "control": control}
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
                               int(entries[0].meta["words_without_tokens"]), pairs, control,
                               int(entries[0].meta["n_kv_heads"]))
