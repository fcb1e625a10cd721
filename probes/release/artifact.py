"""A release artifact judged against the checkpoint it was made from (issue 21 §2). No pytest.

* Tokenizer and chat template: any difference fails, named (a GGUF's own vocabulary, a dropped
  special token or a changed template breaks instruction following silently).
* Preflight KL(source || artifact) on the source's greedy responses under ``RELEASE_KL``.
* Finding 1: per-prompt instruction density of artifact and source, both attributed on the source's
  greedy responses (probes/release/forced.py), is equivalent within ``DENSITY_MARGIN`` by two
  one-sided paired t-tests (statsmodels ``ttost_paired``); the share of prompts whose greedy
  response the artifact reproduces is reported beside it.

GGUF artifacts are judged through transformers' de-quantisation to float32, not llama.cpp's kernels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# KL(source || artifact) in nats per response token (docs/RELEASE.md, benchmarks/release_thresholds.py).
# 16- and 8-bit artifacts: world fp16 1.6e-8, bf16 1.4e-6, int8 round-to-nearest 2.0e-5; SmolLM2 fp16
# 1.7e-6, bf16 4.9e-5, Q8_0 1.2e-3, int8 round-to-nearest 4.1e-3. Changed models: world bad-cpt vs
# base 3.6e-2, good vs bad-cpt 0.57-1.14; a LoRA merged at 4x its scale 0.11; SmolLM2 Q5_0 9.7e-2.
# 1e-2 admits every 8-bit artifact (2.5x above the worst) and refuses every changed model measured and
# SmolLM2's 5-bit requantisation (10x below it).
RELEASE_KL = 1e-2
# Equivalence margin of per-prompt instruction density (units of the density score, 0..1), both models
# attributing the source's responses. Density is a step function of the attributions (ceil into L = 10
# levels, cut at b = 7), so even a harmless cast moves single prompts: on SmolLM2 (16 prompts, 32
# tokens, benchmarks/release_density.py) the TOST passes from ±0.0065 (fp16), ±0.020 (bf16, one prompt
# moved 0.11) and ±0.029 (Q8_0); int8 round-to-nearest needs ±0.068, Q5_0 ±0.11, Q4_0 ±0.22. 0.05 is
# 1.7x the Q8_0 need and under half of the world's finding-1 effect (0.115, good - base), which
# world:bad-cpt given as the release of good misses by 0.10 (docs/RELEASE.md).
DENSITY_MARGIN = 0.05


def tokenizer_differences(source, artifact) -> list[str]:
    """What differs between two tokenizers, in words (empty when they tokenise and template alike)."""
    out: list[str] = []
    vs, va = source.get_vocab(), artifact.get_vocab()
    if vs != va:
        only_s = sorted(set(vs) - set(va))
        only_a = sorted(set(va) - set(vs))
        moved = sorted(t for t in set(vs) & set(va) if vs[t] != va[t])
        parts = [f"vocabulary {len(vs)} vs {len(va)} tokens"]
        if only_s:
            parts.append(f"{len(only_s)} only in the source (e.g. {only_s[:3]})")
        if only_a:
            parts.append(f"{len(only_a)} only in the artifact (e.g. {only_a[:3]})")
        if moved:
            parts.append(f"{len(moved)} with another id (e.g. {moved[:3]})")
        out.append("tokenizer: " + ", ".join(parts))
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        a, b = getattr(source, name, None), getattr(artifact, name, None)
        if a != b:
            out.append(f"special token {name}: {a!r} in the source vs {b!r} in the artifact")
    ts, ta = getattr(source, "chat_template", None), getattr(artifact, "chat_template", None)
    if ts != ta:
        if ts is None or ta is None:
            out.append(f"chat template: {'none' if ts is None else 'present'} in the source vs "
                       f"{'none' if ta is None else 'present'} in the artifact")
        else:
            at = next(i for i, (x, y) in enumerate(zip(ts + "\0", ta + "\0")) if x != y)
            out.append(f"chat template differs from character {at}: source {ts[at:at + 30]!r} vs artifact "
                       f"{ta[at:at + 30]!r}")
    return out


@dataclass(frozen=True)
class DensityEquivalence:
    n: int
    mean_diff: float  # artifact - source, mean over shared prompts
    margin: float
    p_value: float | None  # TOST: the larger of the two one-sided p-values
    greedy_agreement: float | None  # share of prompts whose greedy response the artifact reproduces

    def outcome(self, alpha: float) -> str:
        if self.p_value is None:
            return "inconclusive"
        if self.p_value < alpha:
            return "pass"
        return "fail" if abs(self.mean_diff) > self.margin else "inconclusive"

    def to_dict(self) -> dict:
        return {"n": self.n, "mean_diff": self.mean_diff, "margin": self.margin, "p_value": self.p_value,
                "greedy_agreement": self.greedy_agreement, "effect": self.mean_diff,
                "effect_name": "artifact - source density"}


def density_equivalence(source: Mapping[str, float], artifact: Mapping[str, float],
                        reproduces: Mapping[str, bool] | None = None,
                        margin: float = DENSITY_MARGIN) -> DensityEquivalence:
    """Paired TOST of per-prompt density (prompt id -> score) within ±margin. ``reproduces``: per
    prompt, whether the artifact's greedy decode gives the source's response (None: not known)."""
    from statsmodels.stats.weightstats import ttost_paired

    ids = sorted(set(source) & set(artifact))
    x_a = np.array([artifact[i] for i in ids], dtype=float)
    x_s = np.array([source[i] for i in ids], dtype=float)
    known = [bool(reproduces[i]) for i in ids if reproduces is not None and i in reproduces]
    agree = float(np.mean(known)) if known else None
    if len(ids) < 2:
        return DensityEquivalence(len(ids), float("nan") if not ids else float((x_a - x_s).mean()), margin, None,
                                  agree)
    d = x_a - x_s
    if np.ptp(d) == 0:  # a constant difference (identical densities): inside or outside the margin
        p = 0.0 if abs(d[0]) < margin else 1.0
    else:
        p = float(ttost_paired(x_a, x_s, -margin, margin)[0])
    return DensityEquivalence(len(ids), float(d.mean()), margin, p, agree)
