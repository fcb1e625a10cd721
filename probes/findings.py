"""Finding 1 as numbers: per-group comparisons of instance scores (METHODS §1.8).

Groups are the prompts' ``source`` values plus ``pooled``. Each comparison is a flat, JSON-able
:class:`Shift` so reports and failure messages read the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from shiftcheck.probes import stats
from shiftcheck.probes.importance import ImportanceResult

POOLED = "pooled"


@dataclass(frozen=True)
class Shift:
    """Group a (reference) vs group b (expected higher), with the paper's test and extras.

    ``p_value`` is the one-sided Welch test ``ttest_ind(a, b, equal_var=False, alternative="less")``;
    ``paired_p`` the one-sided paired t-test on ids present in both (None when not paired).
    """

    group: str
    a_label: str
    b_label: str
    a_n: int
    a_mean: float | None
    a_std: float | None
    b_n: int
    b_mean: float | None
    b_std: float | None
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    t_stat: float | None
    paired_n: int
    paired_p: float | None
    hedges_g: float | None

    def holds(self, alpha: float) -> bool:
        """b exceeds a: positive mean difference and p < alpha."""
        return (
            self.p_value is not None
            and self.mean_diff is not None
            and self.mean_diff > 0
            and self.p_value < alpha
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def shift(group: str, a: np.ndarray, b: np.ndarray, a_label: str, b_label: str,
          paired: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0) -> Shift:
    """Compare two score samples; ``paired`` holds aligned (a, b) values on shared ids."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    sa, sb = stats.describe(a), stats.describe(b)
    welch = stats.welch_less(a, b)
    ci = stats.bootstrap_mean_diff_ci(a, b, seed=seed) if len(a) > 1 and len(b) > 1 else (None, None)
    paired_p, paired_n = None, 0
    if paired is not None and len(paired[0]) > 1:
        paired_n = len(paired[0])
        paired_p = stats.paired_less(paired[0], paired[1]).pvalue
    return Shift(
        group=group,
        a_label=a_label,
        b_label=b_label,
        a_n=int(sa.n),
        a_mean=_num(sa.mean),
        a_std=_num(sa.std),
        b_n=int(sb.n),
        b_mean=_num(sb.mean),
        b_std=_num(sb.std),
        mean_diff=_num(sb.mean - sa.mean) if sa.n and sb.n else None,
        ci_low=_num(ci[0]),
        ci_high=_num(ci[1]),
        p_value=_num(welch.pvalue),
        t_stat=_num(welch.statistic),
        paired_n=paired_n,
        paired_p=_num(paired_p),
        hedges_g=_num(stats.hedges_g(b, a)) if len(a) > 1 and len(b) > 1 else None,
    )


def groups_of(result: ImportanceResult) -> list[str]:
    return sorted(set(result.sources)) + [POOLED]


def _select(result: ImportanceResult, group: str) -> dict[str, float]:
    return {
        inst.id: score
        for inst, score in zip(result.instances, result.scores)
        if group == POOLED or inst.source == group
    }


def density_shift(base: ImportanceResult, tuned: ImportanceResult, group: str) -> Shift:
    """Tuned instruction density exceeds base ("Table 2"): Welch one-sided on all instances of the group."""
    a, b = _select(base, group), _select(tuned, group)
    shared = sorted(set(a) & set(b))
    paired = (np.array([a[i] for i in shared]), np.array([b[i] for i in shared]))
    return shift(group, np.array(list(a.values())), np.array(list(b.values())), "base", "tuned", paired)


def followed_shift(tuned: ImportanceResult, ratings: Mapping[str, int], group: str, min_tokens: int = 5) -> Shift:
    """Followed responses carry more instruction density than unfollowed ones ("Table 1", §1.8).

    Ratings <= 0 (unrated) and responses shorter than ``min_tokens`` are dropped; followed means
    rating >= 2, unfollowed rating 1. Welch one-sided ``ttest_ind(unfollowed, followed, less)``.
    """
    followed, unfollowed = [], []
    for inst, score in zip(tuned.instances, tuned.scores):
        if group != POOLED and inst.source != group:
            continue
        rating = ratings.get(inst.id)
        if rating is None or rating <= 0 or inst.n_response_tokens < min_tokens:
            continue
        (followed if rating >= 2 else unfollowed).append(score)
    return shift(group, np.array(unfollowed), np.array(followed), "unfollowed", "followed")
