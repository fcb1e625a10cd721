"""Statistics behind the findings (METHODS.md §1.8), pure numpy/scipy.

Notation: group ``a`` with ``n_a`` values ``x``, group ``b`` with ``n_b`` values ``y``; ``mean`` is the
arithmetic mean, ``s²`` the sample variance (ddof 1) and ``σ`` the population standard deviation
(ddof 0, ``np.std``) that METHODS §1.8 reports as "mean ± std".

Every one-sided test here has the alternative ``mean(a) < mean(b)``:

* base vs tuned ("Table 2"): ``a = base``, ``b = tuned`` - Welch, one-sided, unpaired, as the paper;
* followed vs unfollowed ("Table 1"): ``a = unfollowed``, ``b = followed``.

Degenerate inputs (a group with fewer than 2 values, zero variance) never raise: the affected
numbers are NaN and a ``note`` says why; ``to_dict`` turns NaN into ``None`` for JSON.
Non-finite input values are an error, since silently dropping them would change ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

ALTERNATIVES = ("two-sided", "less", "greater")


class StatsInputError(ValueError):
    """Input to a statistic is malformed (wrong shape, non-finite values, misaligned groups)."""


def as_sample(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite 1-D float64 array; raises :class:`StatsInputError` naming ``name`` otherwise."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise StatsInputError(f"{name} must be 1-D, got shape {arr.shape}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise StatsInputError(f"{name} has {bad} non-finite value(s) of {arr.size}; drop or fix them before testing")
    return arr


def none_if_nan(value: Any) -> Any:
    """JSON-safe scalar: NaN/inf -> ``None``, numpy scalars -> Python scalars."""
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def join_notes(*notes: str) -> str:
    """Non-empty notes, de-duplicated in order, joined with ``"; "``."""
    return "; ".join(dict.fromkeys(n for n in notes if n))


# ---------------------------------------------------------------------------------------------
# summaries and effect sizes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """``n``, ``mean = Σx/n`` and population ``std = sqrt(Σ(x - mean)²/n)`` (ddof 0, METHODS §1.8)."""

    n: int
    mean: float
    std: float


def describe(x: Any) -> Summary:
    """:class:`Summary` of ``x``; mean and std are NaN for an empty sample."""
    arr = as_sample(x, "x")
    if arr.size == 0:
        return Summary(n=0, mean=math.nan, std=math.nan)
    return Summary(n=int(arr.size), mean=float(arr.mean()), std=float(arr.std(ddof=0)))


def hedges_g(a: Any, b: Any) -> float:
    """Bias-corrected standardised mean difference of ``a`` over ``b`` (Hedges 1981).

    ``s_p = sqrt(((n_a-1)s_a² + (n_b-1)s_b²) / (n_a+n_b-2))``, ``d = (mean(a) - mean(b)) / s_p``,
    ``J = 1 - 3 / (4(n_a+n_b) - 9)``, ``g = J·d``. NaN if ``n_a+n_b < 3`` or ``s_p = 0``.
    """
    x, y = as_sample(a, "a"), as_sample(b, "b")
    n_a, n_b = x.size, y.size
    if n_a < 1 or n_b < 1 or n_a + n_b < 3:
        return math.nan
    ss = ((x - x.mean()) ** 2).sum() + ((y - y.mean()) ** 2).sum()
    s_p = math.sqrt(ss / (n_a + n_b - 2))
    if s_p == 0.0:
        return math.nan
    j = 1.0 - 3.0 / (4.0 * (n_a + n_b) - 9.0)
    return float(j * (x.mean() - y.mean()) / s_p)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """A t test: ``statistic`` t, ``df``, ``pvalue`` for ``alternative``; NaN plus ``note`` when undefined."""

    __test__ = False  # not a pytest test class

    test: str
    alternative: str
    statistic: float
    df: float
    pvalue: float
    note: str = ""


def check_alternative(alternative: str) -> None:
    """Reject anything but ``"two-sided"``, ``"less"``, ``"greater"``."""
    if alternative not in ALTERNATIVES:
        raise StatsInputError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def undefined(test: str, alternative: str, note: str) -> TestResult:
    """A :class:`TestResult` of NaNs carrying ``note``."""
    return TestResult(test=test, alternative=alternative, statistic=math.nan, df=math.nan, pvalue=math.nan, note=note)


def welch(a: Any, b: Any, alternative: str = "two-sided") -> TestResult:
    """Welch's unequal-variance t test of ``mean(a)`` against ``mean(b)``.

    ``t = (mean(a) - mean(b)) / sqrt(s_a²/n_a + s_b²/n_b)``, Welch–Satterthwaite
    ``df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))``;
    computed by ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative=alternative)``.
    """
    check_alternative(alternative)
    x, y = as_sample(a, "a"), as_sample(b, "b")
    if x.size < 2 or y.size < 2:
        return undefined("welch", alternative, f"Welch test needs >= 2 values per group (n_a={x.size}, n_b={y.size})")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return undefined("welch", alternative, "Welch test undefined: both groups have zero variance")
    res = sps.ttest_ind(x, y, equal_var=False, alternative=alternative)
    return TestResult(test="welch", alternative=alternative, statistic=float(res.statistic), df=float(res.df), pvalue=float(res.pvalue))


def welch_less(base: Any, tuned: Any) -> TestResult:
    """The paper's base-vs-tuned test (METHODS §1.8 "Table 2"): Welch, one-sided ``mean(base) < mean(tuned)``.

    ``scipy.stats.ttest_ind(base, tuned, equal_var=False, alternative="less")``.
    """
    return welch(base, tuned, "less")


def paired(a: Any, b: Any, alternative: str = "two-sided") -> TestResult:
    """Paired t test on ``d_i = a_i - b_i``: ``t = mean(d) / (s_d / sqrt(n))``, ``df = n - 1``.

    ``scipy.stats.ttest_rel(a, b, alternative=alternative)``; ``a`` and ``b`` must be aligned.
    """
    check_alternative(alternative)
    x, y = as_sample(a, "a"), as_sample(b, "b")
    if x.size != y.size:
        raise StatsInputError(f"paired test needs aligned samples of equal length, got {x.size} and {y.size}")
    if x.size < 2:
        return undefined("paired", alternative, f"paired test needs >= 2 pairs (n={x.size})")
    if np.ptp(x - y) == 0:
        return undefined("paired", alternative, "paired test undefined: all differences are equal")
    res = sps.ttest_rel(x, y, alternative=alternative)
    return TestResult(test="paired", alternative=alternative, statistic=float(res.statistic), df=float(res.df), pvalue=float(res.pvalue))


def paired_less(base: Any, tuned: Any) -> TestResult:
    """Paired one-sided test ``mean(base - tuned) < 0`` on shared prompts (METHODS §1.8: extra check, not the paper's)."""
    return paired(base, tuned, "less")


def bootstrap_mean_diff_ci(
    base: Any,
    tuned: Any,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``Δ = mean(tuned) - mean(base)``.

    Each of ``R = n_resamples`` replicates draws indices with replacement (``np.random.default_rng(seed)``):
    independently per group, or one index set for both when ``paired`` (aligned samples). The interval is
    the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the ``R`` replicate ``Δ*``. ``(nan, nan)`` if a group is empty.
    """
    x, y = as_sample(base, "base"), as_sample(tuned, "tuned")
    if not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 1):
        raise StatsInputError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise StatsInputError(f"confidence must lie in (0, 1), got {confidence!r}")
    if paired and x.size != y.size:
        raise StatsInputError(f"paired bootstrap needs aligned samples of equal length, got {x.size} and {y.size}")
    if x.size == 0 or y.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    block = max(1, 4_000_000 // max(x.size, y.size))  # bound memory: block × n indices at a time
    deltas: list[np.ndarray] = []
    for start in range(0, n_resamples, block):
        r = min(block, n_resamples - start)
        if paired:
            idx = rng.integers(0, x.size, size=(r, x.size))  # (resample, pair)
            deltas.append((y[idx] - x[idx]).mean(axis=1))
        else:
            idx_x = rng.integers(0, x.size, size=(r, x.size))  # (resample, base item)
            idx_y = rng.integers(0, y.size, size=(r, y.size))  # (resample, tuned item)
            deltas.append(y[idx_y].mean(axis=1) - x[idx_x].mean(axis=1))
    all_deltas = np.concatenate(deltas)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(all_deltas, [tail, 1.0 - tail])
    return (float(low), float(high))


# ---------------------------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Two groups compared under the alternative ``mean(a) < mean(b)``.

    ``mean_diff = mean(b) - mean(a)``; ``welch`` is Welch one-sided (``less``, a vs b); ``paired`` the
    one-sided paired test on ``n_paired`` aligned items, or ``None``; ``hedges_g = g(b, a)`` (positive when
    ``b`` is higher); ``ci`` the bootstrap CI of ``mean_diff``.
    """

    name_a: str
    name_b: str
    a: Summary
    b: Summary
    mean_diff: float
    welch: TestResult
    paired: TestResult | None
    n_paired: int
    hedges_g: float
    ci: tuple[float, float]
    confidence: float
    n_resamples: int
    seed: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able dict; NaN becomes ``None``."""
        raw: dict[str, Any] = {
            "name_a": self.name_a,
            "name_b": self.name_b,
            "n_a": self.a.n,
            "mean_a": self.a.mean,
            "std_a": self.a.std,
            "n_b": self.b.n,
            "mean_b": self.b.mean,
            "std_b": self.b.std,
            "mean_diff": self.mean_diff,
            "alternative": "less",
            "welch_t": self.welch.statistic,
            "welch_df": self.welch.df,
            "welch_p": self.welch.pvalue,
            "n_paired": self.n_paired,
            "paired_t": self.paired.statistic if self.paired else None,
            "paired_df": self.paired.df if self.paired else None,
            "paired_p": self.paired.pvalue if self.paired else None,
            "hedges_g": self.hedges_g,
            "ci_low": self.ci[0],
            "ci_high": self.ci[1],
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "note": self.note,
        }
        return {key: none_if_nan(value) for key, value in raw.items()}


def align_by_ids(
    base: np.ndarray, tuned: np.ndarray, base_ids: Sequence[str], tuned_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(base[i], tuned[j])`` for ids shared by both, in ``base_ids`` order; ids must be unique and match lengths."""
    for ids, values, name in ((base_ids, base, "base"), (tuned_ids, tuned, "tuned")):
        if len(ids) != values.size:
            raise StatsInputError(f"{name}_ids has {len(ids)} ids for {values.size} {name} scores")
        if len(set(ids)) != len(ids):
            raise StatsInputError(f"{name}_ids contains duplicate ids; pairing needs one score per id")
    tuned_index = {item: j for j, item in enumerate(tuned_ids)}
    pairs = [(i, tuned_index[item]) for i, item in enumerate(base_ids) if item in tuned_index]
    i_idx = np.array([i for i, _ in pairs], dtype=np.intp)
    j_idx = np.array([j for _, j in pairs], dtype=np.intp)
    return base[i_idx], tuned[j_idx]


def compare_groups(
    a: np.ndarray,
    b: np.ndarray,
    names: tuple[str, str],
    pair: tuple[np.ndarray, np.ndarray] | None,
    n_resamples: int,
    confidence: float,
    seed: int,
    note: str = "",
) -> Comparison:
    """Assemble a :class:`Comparison` of ``a`` vs ``b`` (alternative ``mean(a) < mean(b)``)."""
    sum_a, sum_b = describe(a), describe(b)
    welch_res = welch(a, b, "less")
    paired_res = paired(pair[0], pair[1], "less") if pair is not None else None
    g = hedges_g(b, a)
    notes = [note, welch_res.note, paired_res.note if paired_res else ""]
    if math.isnan(g) and a.size and b.size:
        notes.append("Hedges' g undefined (pooled SD is 0 or too few values)")
    return Comparison(
        name_a=names[0],
        name_b=names[1],
        a=sum_a,
        b=sum_b,
        mean_diff=sum_b.mean - sum_a.mean,
        welch=welch_res,
        paired=paired_res,
        n_paired=0 if pair is None else int(pair[0].size),
        hedges_g=g,
        ci=bootstrap_mean_diff_ci(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        note=join_notes(*notes),
    )


def compare_density(
    base_scores: Any,
    tuned_scores: Any,
    *,
    base_ids: Sequence[str] | None = None,
    tuned_ids: Sequence[str] | None = None,
    paired_by_position: bool = False,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Base vs tuned scores (METHODS §1.8 "Table 2"): ``a = base``, ``b = tuned``.

    The headline test is Welch one-sided unpaired (:func:`welch_less`), as the paper. The paired test
    (:func:`paired_less`) is added when pairing is known: on shared ids when ``base_ids`` and ``tuned_ids``
    are both given, or by position when ``paired_by_position`` (equal lengths required). Without
    either, no pairing is assumed.
    """
    base, tuned = as_sample(base_scores, "base_scores"), as_sample(tuned_scores, "tuned_scores")
    if (base_ids is None) != (tuned_ids is None):
        raise StatsInputError("give both base_ids and tuned_ids, or neither")
    if base_ids is not None and paired_by_position:
        raise StatsInputError("pair either by ids or by position, not both")
    pair: tuple[np.ndarray, np.ndarray] | None = None
    if base_ids is not None and tuned_ids is not None:
        pair = align_by_ids(base, tuned, base_ids, tuned_ids)
    elif paired_by_position:
        if base.size != tuned.size:
            raise StatsInputError(f"paired_by_position needs equal lengths, got {base.size} base and {tuned.size} tuned")
        pair = (base, tuned)
    return compare_groups(base, tuned, ("base", "tuned"), pair, n_resamples, confidence, seed)


def followed_vs_unfollowed(
    scores: Mapping[str, float],
    ratings: Mapping[str, int],
    n_response_tokens: Mapping[str, int],
    min_tokens: int = 5,
    *,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Tuned-model scores of unfollowed vs followed responses (METHODS §1.8 "Table 1").

    Keep ids with ``rating > 0`` (rated) and ``n_response_tokens >= min_tokens``; ``followed`` = rating >= 2,
    ``unfollowed`` = rating 1. ``a = unfollowed``, ``b = followed``: Welch
    ``ttest_ind(unfollowed, followed, equal_var=False, alternative="less")``. Ids of ``scores`` without a
    rating count as unrated; ids without a token count are an error.
    """
    missing_tokens = [item for item in scores if item not in n_response_tokens]
    if missing_tokens:
        raise StatsInputError(f"{len(missing_tokens)} id(s) have no response token count, e.g. {missing_tokens[:3]}")
    unrated = [item for item in scores if int(ratings.get(item, 0)) <= 0]
    short = [item for item in scores if int(ratings.get(item, 0)) > 0 and int(n_response_tokens[item]) < min_tokens]
    kept = [item for item in scores if int(ratings.get(item, 0)) > 0 and int(n_response_tokens[item]) >= min_tokens]
    followed = np.array([scores[item] for item in kept if int(ratings[item]) >= 2], dtype=np.float64)
    unfollowed = np.array([scores[item] for item in kept if int(ratings[item]) == 1], dtype=np.float64)
    note = f"dropped {len(unrated)} unrated and {len(short)} response(s) under {min_tokens} tokens"
    return compare_groups(
        as_sample(unfollowed, "unfollowed"),
        as_sample(followed, "followed"),
        ("unfollowed", "followed"),
        None,
        n_resamples,
        confidence,
        seed,
        note=note,
    )


def group_by(ids: Sequence[str], sources: Sequence[str]) -> dict[str, list[int]]:
    """Indices into ``ids`` per source (in first-seen order), plus ``"pooled"`` holding all indices.

    ``sources[i]`` is the dataset of ``ids[i]`` (e.g. the prompt's ``source``); ids must be unique.
    """
    if len(ids) != len(sources):
        raise StatsInputError(f"group_by needs one source per id, got {len(ids)} ids and {len(sources)} sources")
    if len(set(ids)) != len(ids):
        raise StatsInputError("group_by: ids must be unique")
    if "pooled" in sources:
        raise StatsInputError("group_by: 'pooled' is reserved for all items and cannot be a source name")
    groups: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        groups.setdefault(str(source), []).append(i)
    groups["pooled"] = list(range(len(ids)))
    return groups
