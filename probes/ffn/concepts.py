"""Finding 3's label statistics (METHODS §3.4, paper Table 5 and Figure 3) and its two verdicts.

Labels are substrings of the lower-cased answers (§3.4). Per model and repetition: the percentage
of explainable components (Rank <= 300, layers pooled) carrying each label. Across repetitions:
mean ± population std and Student's two-sided ``ttest_ind(base, tuned)`` per category. With a
single repetition (the deterministic heuristic) a per-category chi-square test of pooled counts
(2 x 2: label present/absent, base/tuned) takes its place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shiftcheck.probes.ffn.annotators import Annotation
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


def percentages(reps: Sequence[Sequence[Annotation]], field: str, categories: Sequence[str]) -> np.ndarray:
    """(n_reps, n_categories) percentages of explainable components with each label."""
    out = np.zeros((len(reps), len(categories)))
    for k, anns in enumerate(reps):
        expl = [a for a in anns if a.explainable]
        if expl:
            m = np.array([[labels(getattr(a, field), categories)[c] for c in categories] for a in expl])
            out[k] = 100.0 * m.mean(axis=0)
    return out


def counts(reps: Sequence[Sequence[Annotation]], field: str, categories: Sequence[str]) -> tuple[np.ndarray, int]:
    """Pooled label counts over repetitions and the number of explainable annotations."""
    expl = [a for anns in reps for a in anns if a.explainable]
    c = np.array([sum(labels(getattr(a, field), categories)[cat] for a in expl) for cat in categories])
    return c, len(expl)


def user_task_share(reps: Sequence[Sequence[Annotation]]) -> np.ndarray:
    """Per repetition: % of explainable components with any user-task scenario label."""
    out = []
    for anns in reps:
        expl = [a for a in anns if a.explainable]
        hit = [any(labels(a.scenario, USER_TASKS).values()) for a in expl]
        out.append(100.0 * float(np.mean(hit)) if hit else 0.0)
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


def linguistic_unchanged(base, tuned, tolerance_pp: float, alpha: float, annotator: str) -> Verdict:
    """Equivalence: every level's share moves by at most ``tolerance_pp`` AND no level differs at alpha."""
    rows = compare(base, tuned, "level", LEVELS)
    worst = max(rows, key=lambda r: abs(r.diff))
    sig = [r for r in rows if r.p_value is not None and r.p_value < alpha]
    support = min(_support(base), _support(tuned))
    numbers = {"rows": [r.__dict__ | {"diff": r.diff} for r in rows], "max_abs_diff_pp": abs(worst.diff),
               "tolerance_pp": tolerance_pp, "min_explainable": support, "annotator": annotator,
               "p_value": min((r.p_value for r in rows if r.p_value is not None), default=None),
               "effect": worst.diff, "effect_name": f"largest change (pp, {worst.category})",
               "repetitions": [len(base), len(tuned)]}
    ok = abs(worst.diff) <= tolerance_pp and not sig
    outcome = "pass" if ok else "fail"
    reason = ""
    if support < MIN_EXPLAINABLE:
        outcome, reason = "inconclusive", (f"only {support} explainable components in a repetition "
                                           f"(need {MIN_EXPLAINABLE}) — add layers or components")
    elif not ok:
        parts = []
        if abs(worst.diff) > tolerance_pp:
            parts.append(f"{worst.category} moved {worst.diff:+.1f} pp (> {tolerance_pp} pp)")
        if sig:
            parts.append("significant at alpha: " + ", ".join(f"{r.category} p={r.p_value:.3g}" for r in sig))
        reason = "; ".join(parts)
    return Verdict(
        finding="ffn_linguistic_unchanged", group="pooled",
        claim="the linguistic-level mix of FFN concepts is unchanged by instruction tuning",
        test=rows[0].test + f"; equivalence margin ±{tolerance_pp} pp", alternative="equivalence", alpha=alpha,
        outcome=outcome, obtained=f"annotator {annotator}; largest change {worst.category} {worst.diff:+.1f} pp\n"
        + table(rows), expected=f"every level within ±{tolerance_pp} pp and no p < {alpha}",
        reason=reason, hint="" if ok else "check the pair; with a live annotator add repetitions "
        "(--annotator-repetitions); --ffn-tolerance sets the margin", numbers=numbers)


def user_tasks_not_lower(base, tuned, tolerance_pp: float, alpha: float, annotator: str) -> Verdict:
    """Non-inferiority: the user-task share (writing, math, coding) does not drop by more than the margin."""
    from scipy import stats

    sb, st = user_task_share(base), user_task_share(tuned)
    diff = float(st.mean() - sb.mean())
    rows = compare(base, tuned, "scenario", SCENARIOS)
    p_rise = None
    if len(sb) > 1 and len(st) > 1:
        r = stats.ttest_ind(st, sb, alternative="greater")
        p_rise = None if math.isnan(r.pvalue) else float(r.pvalue)
    support = min(_support(base), _support(tuned))
    ok = diff >= -tolerance_pp
    outcome = "pass" if ok else "fail"
    reason = "" if ok else f"user-task share dropped {diff:+.1f} pp (margin -{tolerance_pp} pp)"
    if support < MIN_EXPLAINABLE:
        outcome, reason = "inconclusive", f"only {support} explainable components in a repetition"
    rises = "rises" if diff > 0 else "does not rise"
    return Verdict(
        finding="ffn_user_tasks_not_lower", group="pooled",
        claim="the share of FFN concepts for user tasks (writing, math, coding) does not drop after tuning",
        test=f"non-inferiority, margin {tolerance_pp} pp on the mean share", alternative="greater-or-equal",
        alpha=alpha, outcome=outcome,
        obtained=f"annotator {annotator}; user-task share base {sb.mean():.1f}% tuned {st.mean():.1f}% "
        f"({diff:+.1f} pp, {rises}" + (f", one-sided p = {p_rise:.3g}" if p_rise is not None else "") + ")\n"
        + table(rows), expected=f"tuned share >= base share - {tolerance_pp} pp", reason=reason,
        hint="" if ok else "check the pair and the annotator; see the scenario table",
        numbers={"base_share": float(sb.mean()), "tuned_share": float(st.mean()), "effect": diff,
                 "effect_name": "change in user-task share (pp)", "p_value": p_rise,
                 "rows": [r.__dict__ | {"diff": r.diff} for r in rows], "annotator": annotator})


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
