"""From raw importance to the instance score (METHODS §1.4-1.6) and the position profile
(Appendix B.3). Pure numpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------
# Normalisation and scoring (§1.4 - §1.6)


def normalise(I: np.ndarray, L: int = 10, b: int = 0) -> np.ndarray:
    """Paper eq. 2, per column j:  Ĩ = max(I,0) / (max_n max(I,0) + 1e-7);  S = ceil(L Ĩ);  S = 0 where S <= b.

    Returns integer levels 0..L, dtype uint8, shape (prompt_len, resp_len).
    """
    pos = np.maximum(np.asarray(I, dtype=np.float64), 0.0)
    if pos.size == 0:
        return np.zeros(pos.shape, dtype=np.uint8)
    tilde = pos / (pos.max(axis=0, keepdims=True) + 1e-7)
    S = np.ceil(L * tilde)
    S[S <= b] = 0
    return S.astype(np.uint8)


def cut(S: np.ndarray, b: int) -> np.ndarray:
    """Apply the b cut to levels already quantised with b = 0 (the released format)."""
    S = np.asarray(S)
    return np.where(S > b, S, 0)


def is_levels(S: np.ndarray, L: int = 10) -> bool:
    """True when a matrix already holds integer levels 0..L (the authors' loader check, §6)."""
    S = np.asarray(S)
    if S.size == 0:
        return True
    return bool(np.all(S == np.round(S)) and S.min() >= 0 and S.max() <= L)


def density(S: np.ndarray, p: float = 4.0) -> np.ndarray:
    """§1.5:  a_n = ||S_n||_1 / (||S_n||_p + 1e-9),  0 for an all-zero row. Shape (prompt_len,)."""
    S = np.abs(np.asarray(S, dtype=np.float64))
    if S.shape[1] == 0:
        return np.zeros(S.shape[0])
    l1 = S.sum(axis=1)
    lp = (S**p).sum(axis=1) ** (1.0 / p)
    return np.where(l1 > 0, l1 / (lp + 1e-9), 0.0)


def normalised_density(a: np.ndarray) -> np.ndarray:
    """§1.6:  â_n = a_n / (max_n' a_n' + 1e-9)  — the instance's best prompt token becomes 1."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return a
    return a / (a.max() + 1e-9)


def instruction_score(a_hat: np.ndarray, mask: np.ndarray) -> float:
    """§1.6:  score = Σ_{n ∈ Inst} â_n / log2(2 + |Inst|)  (DCG-like discount by span size)."""
    mask = np.asarray(mask, dtype=bool)
    k = int(mask.sum())
    if k == 0:
        return 0.0
    return float(a_hat[mask].sum() / math.log2(2 + k))


def instance_score(S0: np.ndarray, mask: np.ndarray, b: int = 7, p: float = 4.0) -> float:
    """Score of one instance from its b = 0 levels S0. An empty response scores 0 (§1.6)."""
    S0 = np.asarray(S0)
    if S0.shape[1] == 0:
        return 0.0
    return instruction_score(normalised_density(density(cut(S0, b), p)), mask)


# ---------------------------------------------------------------------------------------------
# Position profile (paper Appendix B.3)

_SENTENCE_END = re.compile(r"[.!?:]$")


def sentence_ids(tokens: Sequence[str]) -> np.ndarray:
    """Sentence index of each prompt token: a sentence ends after a token ending in . ! ? : or a newline."""
    out = np.zeros(len(tokens), dtype=int)
    sid = 0
    for n, tok in enumerate(tokens):
        out[n] = sid
        text = tok.replace("▁", " ").replace("Ġ", " ").strip()
        if _SENTENCE_END.search(text) or tok in ("<0x0A>", "Ċ", "\n") or "\n" in tok:
            sid += 1
    return out


def position_profile(a_hat: np.ndarray, tokens: Sequence[str], mask: np.ndarray | None = None) -> np.ndarray:
    """Share of normalised density in each quarter of its sentence (Appendix B.3). Shape (4,), sums to 1.

    Token n of a sentence with k tokens falls in quarter floor(4 n / k). With ``mask`` only those
    tokens (e.g. instruction sentences) count. All-zero density gives zeros.
    """
    a_hat = np.asarray(a_hat, dtype=np.float64)
    keep = np.ones(len(tokens), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    sids = sentence_ids(tokens)
    shares = np.zeros(4)
    for sid in np.unique(sids):
        idx = np.flatnonzero(sids == sid)
        quarters = (4 * np.arange(len(idx))) // len(idx)
        for q, n in zip(quarters, idx):
            if keep[n]:
                shares[q] += a_hat[n]
    total = shares.sum()
    return shares / total if total > 0 else shares
