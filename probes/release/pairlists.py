"""Finding 2's release check (issue 21 §2): the artifact's head-level pair lists agree with its
source's. No pytest.

Unit of evidence: one attention head (layer, query head) of the layers checked. Per head the
agreement is the Jaccard index |S ∩ A| / |S ∪ A| of the source's and the artifact's kept pairs
(METHODS §2.5, lower-case word pairs). A head with no pair on either side carries no evidence and is
left out; with fewer than ``MIN_HEADS`` heads that have pairs the check is inconclusive.

The verdict is on a low quantile, not the minimum: a head whose list holds two or three pairs goes
from Jaccard 1 to 0.5 when one borderline pair crosses its GloVe threshold, which a harmless cast
does (docs/RELEASE.md), while a changed model moves the pairs of many heads. ``QUANTILE`` = 0.1
still fails an edit confined to one layer in eight (a tenth of the heads). The per-layer minimum,
median and pooled Jaccard are reported next to it.

The lists come from :class:`~shiftcheck.probes.attention.AttentionProbe` through the cache, for the
probe's units that hold the layers finding 2 asserts (the lowest layer group, METHODS §2.6), so the
source's lists are the main run's own entries and only the artifact is computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The 10 % quantile of the per-head Jaccard must be at least this. Measured (docs/RELEASE.md,
# benchmarks/release_thresholds.py): 16- and 8-bit artifacts keep it at 0.82 or above (lexical model
# int8 0.82; SmolLM2 int8 0.84, Q8_0 0.95, bf16 0.96); changed models fall to 0.59 and below (lexical
# W_Q/W_K noise of 3 % of their RMS 0.59, planted verbs 0.05, a LoRA merged at 2x / 4x its scale
# 0.40 / 0.05; SmolLM2 Q5_0 0.50).
JACCARD_THRESHOLD = 0.7
QUANTILE = 0.1
MIN_HEADS = 10  # heads with pairs on either side: below 10 the 10 % quantile is the minimum, one head


def jaccard(a: set, b: set) -> float | None:
    """|a ∩ b| / |a ∪ b|, or None when both are empty (no evidence)."""
    union = len(a | b)
    return None if union == 0 else len(a & b) / union


@dataclass(frozen=True)
class HeadAgreement:
    layer: int
    head: int
    n_source: int
    n_artifact: int
    n_shared: int

    @property
    def jaccard(self) -> float | None:
        union = self.n_source + self.n_artifact - self.n_shared
        return None if union == 0 else self.n_shared / union


@dataclass(frozen=True)
class PairListAgreement:
    """Per-head agreement of two models' pair lists over ``layers``."""

    layers: tuple[int, ...]
    heads: tuple[HeadAgreement, ...]
    threshold: float = JACCARD_THRESHOLD
    quantile: float = QUANTILE
    min_heads: int = MIN_HEADS

    @property
    def informative(self) -> tuple[HeadAgreement, ...]:
        return tuple(h for h in self.heads if h.jaccard is not None)

    @property
    def values(self) -> np.ndarray:
        return np.array([h.jaccard for h in self.informative], dtype=float)

    @property
    def statistic(self) -> float | None:
        """The ``quantile`` of the per-head Jaccard over informative heads (numpy's 'lower' method,
        so it is an observed head's value)."""
        v = self.values
        return float(np.quantile(v, self.quantile, method="lower")) if v.size else None

    def outcome(self) -> str:
        if len(self.informative) < self.min_heads:
            return "inconclusive"
        return "pass" if self.statistic >= self.threshold else "fail"

    def per_layer(self) -> list[dict]:
        rows = []
        for layer in self.layers:
            hs = [h for h in self.heads if h.layer == layer]
            v = np.array([h.jaccard for h in hs if h.jaccard is not None], dtype=float)
            union = sum(h.n_source + h.n_artifact - h.n_shared for h in hs)
            rows.append({"layer": layer, "heads": len(hs), "informative": int(v.size),
                         "min": float(v.min()) if v.size else None, "median": float(np.median(v)) if v.size else None,
                         "pooled": sum(h.n_shared for h in hs) / union if union else None,
                         "pairs_source": sum(h.n_source for h in hs), "pairs_artifact": sum(h.n_artifact for h in hs)})
        return rows

    def to_dict(self) -> dict:
        v = self.values
        return {"layers": list(self.layers), "heads": len(self.heads), "informative_heads": int(v.size),
                "empty_heads": len(self.heads) - int(v.size), "quantile": self.quantile,
                "statistic": self.statistic, "threshold": self.threshold, "min_heads": self.min_heads,
                "min": float(v.min()) if v.size else None, "median": float(np.median(v)) if v.size else None,
                "per_layer": self.per_layer(), "effect": self.statistic,
                "effect_name": f"{self.quantile:.0%} quantile of per-head pair-list Jaccard"}


def pair_list_agreement(source: Any, artifact: Any, layers: Iterable[int], threshold: float = JACCARD_THRESHOLD,
                        quantile: float = QUANTILE, min_heads: int = MIN_HEADS) -> PairListAgreement:
    """Per-head Jaccard of two :class:`~shiftcheck.probes.attention.AttentionResult` over ``layers``."""
    layers = tuple(layers)
    heads = []
    for layer in layers:
        for head in range(source.n_heads):
            s, a = source.pair_set(layer, head), artifact.pair_set(layer, head)
            heads.append(HeadAgreement(layer, head, len(s), len(a), len(s & a)))
    return PairListAgreement(layers, tuple(heads), threshold, quantile, min_heads)


# ---------------------------------------------------------------------------------------------
# the probe: finding 2's own units, only those that hold the asserted layers


def asserted_layers(n_layers: int) -> list[int]:
    """The layers finding 2 asserts: the lowest of the four layer groups (METHODS §2.6)."""
    from shiftcheck.probes.attention.statistic import group_layers

    return group_layers(0, n_layers)


@dataclass(frozen=True)
class AssertedLayersProbe:
    """``probe`` (an AttentionProbe) restricted to its units that hold ``layers``. Name, code version
    and cache config are the probe's own, so every unit key is the main run's: the source's lists
    come from the cache."""

    probe: Any
    layers: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.probe.name

    @property
    def code_version(self) -> str:
        return self.probe.code_version

    def cache_config(self) -> dict[str, Any]:
        return self.probe.cache_config()

    def units(self) -> list[dict[str, Any]]:
        return [u for u in self.probe.units() if any(u["layers"][0] <= l < u["layers"][1] for l in self.layers)]

    def computed_layers(self) -> list[int]:
        return sorted({l for u in self.units() for l in range(*u["layers"])})

    def run_unit(self, checkpoint: Any, unit: dict[str, Any], progress=None):
        return self.probe.run_unit(checkpoint, unit, progress)

    def combine(self, label: str, entries: Sequence[Any]):
        return self.probe.combine(label, entries)
