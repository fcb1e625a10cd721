"""Finding 3's label statistics (METHODS §3.4, paper Table 5 and Figure 3) and its two verdicts.

Labels are substrings of the lower-cased answers (§3.4). Per model and repetition: the percentage
of explainable components (Rank <= 300, layers pooled) carrying each label. The paper's Table 5
rows (:func:`compare`: mean ± population std, Student two-sided over repetitions; a pooled 2 x 2
chi-square with one repetition) are kept for the report. The verdicts test the claims themselves:

* :func:`linguistic_unchanged`: an equivalence test (two one-sided tests) per linguistic level;
* :func:`user_task_rise`: a one-sided test that the user-task share rises.

Both are inconclusive when the annotator failed calibration (:class:`LabelSource`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shiftcheck.probes.ffn.annotators import Annotation
from shiftcheck.probes.ffn.annotators.calibration import Calibration
from shiftcheck.probes.findings import Verdict

SCENARIOS = ("writing", "math", "coding", "translation", "none")
LEVELS = ("phonology", "morphology", "syntax", "semantic")
USER_TASKS = ("writing", "math", "coding")
MIN_EXPLAINABLE = 20  # fewer explainable components per model and repetition: inconclusive


def labels(answer: str, categories: Sequence[str]) -> dict[str, int]:
    """§3.4 indicators: category keyword is a substring of the lower-cased answer."""
    low = answer.lower()
    return {c: int(c in low) for c in categories}


@dataclass(frozen=True)
class CategoryRow:
    category: str
    base_mean: float
    base_std: float
    tuned_mean: float
    tuned_std: float
    p_value: float | None
    test: str

    @property
    def diff(self) -> float:
        return self.tuned_mean - self.base_mean


def indicators(anns: Sequence[Annotation], field: str, categories: Sequence[str]) -> np.ndarray:
    """(n_explainable, n_categories) 0/1 labels of the explainable annotations of one repetition."""
    rows = [[c in getattr(a, field).lower() for c in categories] for a in anns if a.explainable]
    return np.array(rows, dtype=bool).reshape(len(rows), len(categories))


def percentages(reps: Sequence[Sequence[Annotation]], field: str, categories: Sequence[str]) -> np.ndarray:
    """(n_reps, n_categories) percentages of explainable components with each label."""
    out = np.zeros((len(reps), len(categories)))
    for k, anns in enumerate(reps):
        m = indicators(anns, field, categories)
        if len(m):
            out[k] = 100.0 * m.mean(axis=0)
    return out


def counts(reps: Sequence[Sequence[Annotation]], field: str, categories: Sequence[str]) -> tuple[np.ndarray, int]:
    """Pooled label counts over repetitions and the number of explainable annotations."""
    ms = [indicators(anns, field, categories) for anns in reps]
    total = sum((m.sum(axis=0) for m in ms), np.zeros(len(categories), dtype=int))
    return total.astype(int), sum(len(m) for m in ms)


def user_task_share(reps: Sequence[Sequence[Annotation]]) -> np.ndarray:
    """Per repetition: % of explainable components with any user-task scenario label."""
    out = []
    for anns in reps:
        m = indicators(anns, "scenario", USER_TASKS)
        out.append(100.0 * float(m.any(axis=1).mean()) if len(m) else 0.0)
    return np.array(out)


def compare(base: Sequence[Sequence[Annotation]], tuned: Sequence[Sequence[Annotation]], field: str,
            categories: Sequence[str]) -> list[CategoryRow]:
    """Table 5 rows: Student two-sided over repetitions, or chi-square of pooled counts with one."""
    from scipy import stats

    pb, pt = percentages(base, field, categories), percentages(tuned, field, categories)
    rows = []
    single = min(len(base), len(tuned)) < 2
    cb, nb = counts(base, field, categories)
    ct, nt = counts(tuned, field, categories)
    for j, cat in enumerate(categories):
        if single:
            table = np.array([[cb[j], nb - cb[j]], [ct[j], nt - ct[j]]])
            if table.sum(axis=0).min() == 0 or table.sum(axis=1).min() == 0:
                p, test = 1.0 if nb and nt else None, "chi-square of pooled counts (degenerate: p = 1)"
            else:
                p, test = float(stats.chi2_contingency(table).pvalue), "chi-square of pooled counts (2x2)"
        else:
            with warnings.catch_warnings():  # identical seeds: scipy warns, then p is nan (handled below)
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.ttest_ind(pb[:, j], pt[:, j])
            p = None if math.isnan(res.pvalue) else float(res.pvalue)
            p = 1.0 if p is None and np.allclose(pb[:, j].mean(), pt[:, j].mean()) else p
            test = "Student t-test, two-sided (METHODS §3.4)"
        rows.append(CategoryRow(cat, float(pb[:, j].mean()), float(pb[:, j].std()), float(pt[:, j].mean()),
                                float(pt[:, j].std()), p, test))
    return rows


def table(rows: Sequence[CategoryRow]) -> str:
    lines = ["category | base % | tuned % | diff pp | p"]
    for r in rows:
        p = "n/a" if r.p_value is None else f"{r.p_value:.3g}"
        lines.append(f"{r.category} | {r.base_mean:.1f} ± {r.base_std:.1f} | {r.tuned_mean:.1f} ± {r.tuned_std:.1f} | "
                     f"{r.diff:+.1f} | {p}")
    return "\n".join(lines)


def _support(reps: Sequence[Sequence[Annotation]]) -> int:
    return min((sum(a.explainable for a in anns) for anns in reps), default=0)


# ---------------------------------------------------------------------------------------------
# the two verdicts (issue 19): an equivalence test per level, a one-sided test for the user-task rise


@dataclass(frozen=True)
class LabelSource:
    """Who made the labels, and whether they may decide a verdict.

    ``calibration`` is the annotator's score on the shipped calibration set
    (:func:`~shiftcheck.probes.ffn.annotators.calibration.calibrate`), or None for labels made
    elsewhere (replayed files): those are not calibrated here and keep ``provenance``.
    """

    annotator: str
    calibration: Calibration | None = None
    provenance: str = ""

    def phrase(self) -> str:
        """One line for a verdict: the annotator and its calibration accuracy (or why none)."""
        c = self.calibration
        if c is None:
            return f"annotator {self.annotator} (not calibrated here; {self.provenance or 'labels made elsewhere'})"
        if not c.per_label:
            return f"annotator {self.annotator} (calibration {'passed' if c.passed else 'FAILED'}: no per-label scores)"
        worst = min(c.per_label, key=c.per_label.__getitem__)
        return (f"annotator {self.annotator} (calibration {'passed' if c.passed else 'FAILED'}: lowest per-label "
                f"accuracy {c.per_label[worst]:.2f} ({worst}) on {c.n_items} items, minimum {c.minimum:.2f})")

    def gate(self) -> str:
        """Why the labels may not decide (empty when they may): a failed calibration."""
        c = self.calibration
        if c is None or c.passed:
            return ""
        return f"the annotator failed calibration: {c.reason or c.summary()}"

    def to_dict(self) -> dict:
        return {"annotator": self.annotator, "provenance": self.provenance,
                "calibration": None if self.calibration is None else self.calibration.to_dict()}


@dataclass(frozen=True)
class Equivalence:
    """One category's equivalence test: tuned − base share in pp, its (1 − 2α) interval, TOST p."""

    category: str
    base_share: float
    tuned_share: float
    low: float
    high: float
    p_tost: float
    margin: float
    test: str

    @property
    def diff(self) -> float:
        return self.tuned_share - self.base_share

    @property
    def decision(self) -> str:
        """inside (equivalent), outside (wholly beyond the margin) or overlaps (undecided)."""
        if self.low > -self.margin and self.high < self.margin:
            return "inside"
        if self.low > self.margin or self.high < -self.margin:
            return "outside"
        return "overlaps"

    def to_dict(self) -> dict:
        """JSON-able: an interval that could not be computed (no components) is None."""
        finite = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in self.__dict__.items()}
        return finite | {"diff": self.diff, "decision": self.decision}


def as_source(source: LabelSource | str) -> LabelSource:
    """A bare annotator name is an uncalibrated source (callers that predate the calibration gate)."""
    return source if isinstance(source, LabelSource) else LabelSource(str(source))


PROPORTION_TEST = ("TOST of two independent proportions (statsmodels tost_proportions_2indep, score), "
                   "Newcombe interval; unit: explainable component")
REPETITION_TEST = ("TOST over repetition shares (statsmodels ttost_ind, Welch) and of the mean counts as "
                   "proportions (score); interval = hull of the Welch and Newcombe intervals; unit: "
                   "repetition and explainable component")


def proportion_equivalence(cb, nb, ct, nt, margin_pp: float, alpha: float):
    """(low, high, p): the (1 − 2α) Newcombe interval of p_tuned − p_base in pp and the score TOST p.

    Newcombe's hybrid score interval, because the score interval's inversion fails at 0 % and
    100 % (a level nobody uses is common). Counts may be arrays (simulations): so are the results."""
    from statsmodels.stats.proportion import confint_proportions_2indep, tost_proportions_2indep

    m = margin_pp / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        p = tost_proportions_2indep(ct, nt, cb, nb, -m, m, method="score", compare="diff").pvalue
        low, high = confint_proportions_2indep(ct, nt, cb, nb, method="newcomb", compare="diff", alpha=2 * alpha)
    if np.ndim(p) == 0:
        return 100.0 * float(low), 100.0 * float(high), float(p)
    return 100.0 * np.asarray(low), 100.0 * np.asarray(high), np.asarray(p)


def shown_equivalent(low, high, p, margin_pp: float, alpha: float):
    """The pass rule of one category: interval inside ±margin and TOST p < α (arrays allowed)."""
    return (np.asarray(low) > -margin_pp) & (np.asarray(high) < margin_pp) & (np.asarray(p) < alpha)


def repetition_equivalence(sb: np.ndarray, st: np.ndarray, margin_pp: float, alpha: float
                           ) -> tuple[float, float, float]:
    """(low, high, p) over repetition shares (pp): Welch (1 − 2α) interval and ``ttost_ind`` p.

    Identical shares on both sides (a deterministic annotator replayed) leave no repetition
    variance: the interval is the point difference and p is 0 inside the margin, 1 outside."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_ind

    d = float(st.mean() - sb.mean())
    if np.ptp(sb) == 0 and np.ptp(st) == 0:
        return d, d, 0.0 if abs(d) < margin_pp else 1.0
    p = float(ttost_ind(st, sb, -margin_pp, margin_pp, usevar="unequal")[0])
    low, high = CompareMeans(DescrStatsW(st), DescrStatsW(sb)).tconfint_diff(alpha=2 * alpha, usevar="unequal")
    return float(low), float(high), p


def _explainable_counts(reps: Sequence[Sequence[Annotation]]) -> np.ndarray:
    return np.array([sum(a.explainable for a in anns) for anns in reps])


def equivalence(base, tuned, field: str, categories: Sequence[str], margin_pp: float, alpha: float
                ) -> list[Equivalence]:
    """Per category: is the tuned − base share within ±``margin_pp``?

    One repetition on either side: a TOST of two proportions on the counts (components are the
    unit). Repetitions on both sides: the repetition spread (Welch TOST over the per-repetition
    shares) AND the component count (the proportion TOST on the mean counts per repetition) must
    both show equivalence: five seeds that agree on 40 components still describe 40 components.
    """
    pb, pt = percentages(base, field, categories), percentages(tuned, field, categories)
    single = min(len(base), len(tuned)) < 2
    cb, nb = counts(base, field, categories)
    ct, nt = counts(tuned, field, categories)
    kb, kt = max(len(base), 1), max(len(tuned), 1)
    rows = []
    for j, cat in enumerate(categories):
        # mean counts per repetition, as proportions of the mean explainable count
        nb1, nt1 = int(round(nb / kb)), int(round(nt / kt))
        cb1, ct1 = min(int(round(cb[j] / kb)), nb1), min(int(round(ct[j] / kt)), nt1)
        if nb1 == 0 or nt1 == 0:
            rows.append(Equivalence(cat, float(pb[:, j].mean()), float(pt[:, j].mean()), -math.inf, math.inf, 1.0,
                                    margin_pp, "no explainable components"))
            continue
        low, high, p = proportion_equivalence(cb1, nb1, ct1, nt1, margin_pp, alpha)
        test = PROPORTION_TEST
        if not single:
            rl, rh, rp = repetition_equivalence(pb[:, j], pt[:, j], margin_pp, alpha)
            low, high, p, test = min(low, rl), max(high, rh), max(p, rp), REPETITION_TEST
        rows.append(Equivalence(cat, float(pb[:, j].mean()), float(pt[:, j].mean()), low, high, p, margin_pp, test))
    return rows


def equivalence_table(rows: Sequence[Equivalence], alpha: float) -> list[str]:
    """Markdown table of the equivalence rows (for the report)."""
    ci = f"{100 * (1 - 2 * alpha):.0f} % interval (pp)"
    out = [f"| level | base % | tuned % | diff (pp) | {ci} | TOST p | decision |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.category} | {r.base_share:.2f} | {r.tuned_share:.2f} | {r.diff:+.2f} | "
                   f"[{r.low:+.2f}, {r.high:+.2f}] | {r.p_tost:.3g} | {r.decision} |")
    return out


def linguistic_unchanged(base, tuned, margin_pp: float, alpha: float, source: LabelSource | str) -> Verdict:
    """Equivalence of every linguistic level's share within ±``margin_pp`` (two one-sided tests).

    pass: every level's (1 − 2α) interval inside ±margin and every TOST p < α (verdict p = the
    largest); fail: one level's interval wholly outside; otherwise inconclusive. Also inconclusive:
    fewer than MIN_EXPLAINABLE explainable components in a repetition, or a failed calibration.
    """
    source = as_source(source)
    rows = equivalence(base, tuned, "level", LEVELS, margin_pp, alpha)
    support = min(_support(base), _support(tuned))
    p_max = max(r.p_tost for r in rows)
    worst = max(rows, key=lambda r: max(abs(r.low), abs(r.high)))
    outside = [r for r in rows if r.decision == "outside"]
    undecided = [r for r in rows if not shown_equivalent(r.low, r.high, r.p_tost, margin_pp, alpha)]
    if outside:
        outcome = "fail"
        reason = "; ".join(f"{r.category} changed {r.diff:+.2f} pp, interval [{r.low:+.2f}, {r.high:+.2f}] wholly "
                           f"outside ±{margin_pp:g} pp" for r in outside)
    elif undecided:
        outcome = "inconclusive"
        reason = ("not shown equivalent: " + "; ".join(f"{r.category} interval [{r.low:+.2f}, {r.high:+.2f}] pp, "
                                                         f"TOST p = {r.p_tost:.3g}" for r in undecided)
                  + f" (margin ±{margin_pp:g} pp; {support} explainable components in the smallest repetition)")
    else:
        outcome, reason = "pass", ""
    if support < MIN_EXPLAINABLE and outcome != "fail":
        outcome, reason = "inconclusive", (f"only {support} explainable components in a repetition "
                                           f"(need {MIN_EXPLAINABLE}); add layers or components")
    if source.gate():
        outcome, reason = "inconclusive", source.gate()
    reps = (len(base), len(tuned))
    test = rows[0].test if rows else PROPORTION_TEST
    numbers = {"rows": [r.to_dict() for r in rows], "margin_pp": margin_pp, "min_explainable": support,
               "p_value": p_max, "effect": worst.diff, "effect_name": f"change of {worst.category} (pp)",
               "repetitions": list(reps), "source": source.to_dict(),
               "table5": [r.__dict__ | {"diff": r.diff} for r in compare(base, tuned, "level", LEVELS)]}
    return Verdict(
        finding="linguistic_level_mix_unchanged_after_tuning", group="pooled",
        claim="the linguistic-level mix of FFN concepts is unchanged by instruction tuning",
        test=f"{test}; per level, margin ±{margin_pp:g} pp", alternative="equivalence", alpha=alpha,
        outcome=outcome,
        obtained=(f"{source.phrase()}; repetitions {reps[0]} vs {reps[1]}, >= {support} explainable components; "
                  f"widest level {worst.category} {worst.diff:+.2f} pp, interval [{worst.low:+.2f}, {worst.high:+.2f}]; "
                  f"largest TOST p = {p_max:.3g}"),
        expected=f"every level's {100 * (1 - 2 * alpha):.0f} % interval inside ±{margin_pp:g} pp (TOST p < {alpha})",
        reason=reason,
        hint="" if outcome == "pass" else ("more components (layers, --ffn-components) narrow the intervals; "
                                            "--ffn-tolerance sets the margin; see the level table in the report"),
        numbers=numbers)


def user_task_counts(reps: Sequence[Sequence[Annotation]]) -> tuple[int, int]:
    """Pooled (components with any user-task label, explainable components)."""
    ms = [indicators(anns, "scenario", USER_TASKS) for anns in reps]
    return sum(int(m.any(axis=1).sum()) for m in ms), sum(len(m) for m in ms)


def user_task_rise(base, tuned, alpha: float, source: LabelSource | str) -> Verdict:
    """One-sided test that the user-task share (a component counts once if it carries any of the
    writing, math, coding labels) is higher in the tuned model.

    One repetition: the score test of two proportions, alternative "larger". Repetitions on both
    sides: the one-sided Welch t over repetition shares AND the score test on the mean counts per
    repetition; p = the larger. pass: p < α and the share rose; fail otherwise; inconclusive with
    too few explainable components or a failed calibration.
    """
    from scipy import stats
    from statsmodels.stats.proportion import test_proportions_2indep

    source = as_source(source)
    sb, st = user_task_share(base), user_task_share(tuned)
    diff = float(st.mean() - sb.mean())
    cb, nb = user_task_counts(base)
    ct, nt = user_task_counts(tuned)
    kb, kt = max(len(base), 1), max(len(tuned), 1)
    nb1, nt1 = int(round(nb / kb)), int(round(nt / kt))
    single = min(len(base), len(tuned)) < 2
    support = min(_support(base), _support(tuned))
    p = 1.0
    if nb1 and nt1:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = test_proportions_2indep(min(round(ct / kt), nt1), nt1, min(round(cb / kb), nb1), nb1,
                                        method="score", compare="diff", alternative="larger")
        p = 1.0 if math.isnan(r.pvalue) else float(r.pvalue)
    test = "one-sided score test of two proportions (statsmodels test_proportions_2indep); unit: explainable component"
    p_rep = None
    if not single:
        if np.ptp(sb) == 0 and np.ptp(st) == 0:
            p_rep = 0.0 if diff > 0 else 1.0
        else:
            t = stats.ttest_ind(st, sb, equal_var=False, alternative="greater")
            p_rep = 1.0 if math.isnan(t.pvalue) else float(t.pvalue)
        p = max(p, p_rep)
        test = ("one-sided Welch t over repetition shares and score test of the mean counts as proportions, "
                "p = the larger; unit: repetition and explainable component")
    ok = p < alpha and diff > 0
    outcome = "pass" if ok else "fail"
    reason = "" if ok else (f"user-task share changed {diff:+.2f} pp, one-sided p = {p:.3g} (not < {alpha}): "
                            "no significant rise")
    if support < MIN_EXPLAINABLE:
        outcome, reason = "inconclusive", (f"only {support} explainable components in a repetition "
                                           f"(need {MIN_EXPLAINABLE})")
    if source.gate():
        outcome, reason = "inconclusive", source.gate()
    rows = compare(base, tuned, "scenario", SCENARIOS)
    return Verdict(
        finding="user_task_concepts_rise_after_tuning", group="pooled",
        claim="the share of FFN concepts for user tasks (writing, math, coding) rises after tuning",
        test=test + "; share = components with any of the writing, math, coding labels", alternative="greater",
        alpha=alpha, outcome=outcome,
        obtained=(f"{source.phrase()}; user-task share (any of writing, math, coding per component) base "
                  f"{sb.mean():.2f} % tuned {st.mean():.2f} % ({diff:+.2f} pp), one-sided p = {p:.3g}; repetitions "
                  f"{len(base)} vs {len(tuned)}, >= {support} explainable components"),
        expected=f"tuned share > base share, one-sided p < {alpha}", reason=reason,
        hint="" if ok else "check the pair and the annotator; see the scenario table in the report",
        numbers={"base_share": float(sb.mean()), "tuned_share": float(st.mean()), "effect": diff,
                 "effect_name": "change in user-task share (pp)", "p_value": p, "p_repetitions": p_rep,
                 "counts": {"base": [cb, nb], "tuned": [ct, nt]}, "repetitions": [len(base), len(tuned)],
                 "min_explainable": support, "source": source.to_dict(),
                 "table5": [r.__dict__ | {"diff": r.diff} for r in rows]})


def explainable_by_layer(reps: Sequence[Sequence[Annotation]]) -> dict[int, float]:
    """% explainable components per layer, pooled over repetitions."""
    tot: dict[int, list[int]] = {}
    for anns in reps:
        for a in anns:
            tot.setdefault(a.layer, []).append(int(a.explainable))
    return {l: 100.0 * float(np.mean(v)) for l, v in sorted(tot.items())}


def levels_by_layer_group(reps: Sequence[Sequence[Annotation]], group: int = 4) -> dict[int, list[float]]:
    """Figure 3: per ``layer // group``, % of explainable components at each level."""
    out: dict[int, list[float]] = {}
    by: dict[int, list[Annotation]] = {}
    for anns in reps:
        for a in anns:
            if a.explainable:
                by.setdefault(a.layer // group, []).append(a)
    for g, anns in sorted(by.items()):
        out[g] = percentages([anns], "level", LEVELS)[0].tolist()
    return out


def components_of(result, shown: int = 15, max_rank: int = 300) -> list:
    """What the annotator sees for an :class:`~shiftcheck.probes.ffn.FfnResult`: every stored
    component (Rank <= ``max_rank``) with its first ``shown`` words (§3.2)."""
    from shiftcheck.probes.ffn.annotators import Component

    out = []
    for pos, lc in enumerate(result.layers):
        for r in range(min(lc.top_idx.shape[0], max_rank)):
            out.append(Component(lc.layer, r + 1, tuple(result.component_words(pos, r + 1, shown))))
    return out
