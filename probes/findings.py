"""The verdicts of all three findings, and finding 1's comparisons (METHODS §1.8).

:class:`Verdict` is the one type every finding reports through: the claim, the test and its
alternative (one-sided Welch for finding 1, two-sided Welch for finding 2, an equivalence check
for finding 3), the outcome, what was obtained and expected, and the numbers. The pytest helper
``shiftcheck_expect`` records it and passes or fails; the report renders it.

Finding 1: groups are the prompts' ``source`` values plus ``pooled``; each comparison is a flat,
JSON-able :class:`Shift`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING
from dataclasses import asdict, dataclass, field

import numpy as np

from shiftcheck.probes import stats

if TYPE_CHECKING:
    from shiftcheck.probes.importance import ImportanceResult

POOLED = "pooled"
OUTCOMES = ("pass", "fail", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    """A finding's outcome in one group, as the report and the failure message show it.

    ``test`` names the statistical test, ``alternative`` its direction (``"greater"``: the
    compared side exceeds the reference; ``"two-sided"``; ``"equivalence"``: no difference beyond
    a tolerance). ``outcome`` is ``pass``, ``fail`` or ``inconclusive`` (too little support to
    judge). ``obtained`` and ``expected`` are the human-readable lines; ``numbers`` the flat,
    JSON-able values (``p_value`` and ``effect`` when the test has them).
    """

    finding: str
    group: str
    claim: str
    test: str
    alternative: str
    alpha: float
    outcome: str
    obtained: str
    expected: str
    reason: str = ""  # why it did not pass; empty on pass
    hint: str = ""  # what to try when it did not pass
    numbers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_dict(self) -> dict:
        return asdict(self)


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

    def obtained(self) -> str:
        return (
            f"{self.b_label} {_f(self.b_mean)} ± {_f(self.b_std)} (n={self.b_n}) vs "
            f"{self.a_label} {_f(self.a_mean)} ± {_f(self.a_std)} (n={self.a_n}); "
            f"difference {_f(self.mean_diff)} (95% bootstrap CI [{_f(self.ci_low)}, {_f(self.ci_high)}]), "
            f"Hedges' g = {_f(self.hedges_g, 3)}, Welch one-sided p = {_f(self.p_value)}"
            + (f", paired p = {_f(self.paired_p)} on {self.paired_n} shared prompts" if self.paired_n else "")
        )

    def why_not(self, alpha: float) -> str:
        """The reason ``holds(alpha)`` is False, in words (empty when it holds)."""
        if self.holds(alpha):
            return ""
        if min(self.a_n, self.b_n) < 2:
            return f"too few values to test ({self.a_label} n={self.a_n}, {self.b_label} n={self.b_n})"
        if self.p_value is None:
            return ("p = n/a: the t-test is undefined because both samples are constant "
                    f"({self.a_label} and {self.b_label} each have zero variance)")
        if self.mean_diff is not None and self.mean_diff <= 0:
            return f"{self.b_label} is not higher than {self.a_label} (difference {_f(self.mean_diff)})"
        return f"the difference is not significant (p = {_f(self.p_value)} >= alpha = {alpha})"

    def verdict(self, finding: str, alpha: float, claim: str, hint: str) -> Verdict:
        """This comparison judged as the paper does: one-sided Welch, ``b`` greater than ``a``."""
        holds = self.holds(alpha)
        return Verdict(
            finding=finding, group=self.group, claim=claim,
            test="Welch t-test, one-sided, unpaired (METHODS §1.8)", alternative="greater", alpha=alpha,
            outcome="pass" if holds else "fail", obtained=self.obtained(),
            expected=f"{self.b_label} higher than {self.a_label}: difference > 0 and p < alpha = {alpha}",
            reason=self.why_not(alpha), hint="" if holds else hint,
            numbers=dict(self.to_dict(), effect=self.hedges_g, effect_name="Hedges' g"),
        )


def _f(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3g}" if x != 0 and abs(x) < 1e-3 else f"{x:.{digits}f}"


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
