"""METHODS §2.6: the instruction-verb statistic of Table 3, and finding 2's verdict.

Two things live here, kept apart on purpose:

* **The paper's numbers** (Table 3, information): per verb, the share of changed heads of a layer
  group in which the tuned model has more pairs with the verb; instruction vs control verbs as
  mean ± std and a Welch two-sided p over verbs. Verbs share heads, so that p treats dependent
  values as independent; it is reported, never asserted.
* **The verdict**: the unit of evidence is the head cluster, (layer, key/value head), because
  query heads that share W_K (GQA) change together. A one-sided cluster bootstrap resamples the
  group's clusters with replacement, carrying each cluster's per-verb up/down counts, and
  recomputes the statistic on every resample. The claim holds only if both lower confidence bounds
  clear their nulls (an intersection-union test): instruction share > threshold, and instruction
  share − control share > 0. Its p-value is the larger of the two one-sided p-values.

The share on a resample is the paper's own statistic recomputed: the mean over verbs of each
verb's share ups / (ups + downs), pooled over the resampled clusters, over the verbs with at least
one changed head in that resample. A resample in which no instruction (or no control) verb
changes has no share and counts against the claim. The control verbs are weighted to the
instruction verbs' distribution of base counts (frequency strata): a verb absent from the base
lists can only gain pairs, so an unmatched comparison of rare with frequent verbs passes on noise
(docs/ATTENTION.md, "Frequency").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from shiftcheck.probes.attention.probe import AttentionResult

N_RESAMPLES = 1999  # (B + 1) * alpha is an integer for alpha = 0.05, 0.01: the bound and p agree exactly
MIN_HEAD_SUPPORT = 10  # clusters; below this a percentile cluster bootstrap is anti-conservative (docs)


def layer_group(layer: int, n_layers: int) -> int:
    """§2.6: ``layer // (n_layers / 4)``: four groups (the paper's groups of 8 on 32 layers)."""
    return int(layer // (n_layers / 4))


def group_layers(group: int, n_layers: int) -> list[int]:
    return [layer for layer in range(n_layers) if layer_group(layer, n_layers) == group]


# ---------------------------------------------------------------------------------------------
# the paper's Table 3 numbers (information)


@dataclass(frozen=True)
class VerbShares:
    """One verb list in one layer group: per-verb share of changed heads in which tuned > base."""

    shares: dict[str, float]  # verb -> share (only verbs with at least one changed head)
    changed_heads: dict[str, int]  # verb -> number of changed heads
    dropped: int  # verbs of the list with no changed head (or unknown to the candidates)

    @property
    def values(self) -> np.ndarray:
        return np.array(list(self.shares.values()), dtype=float)


def _head_counts(result: AttentionResult, layer: int, head: int) -> dict[str, int]:
    return result._word_counts.get((layer, head), {})


def _changes(base: AttentionResult, tuned: AttentionResult, layer: int, head: int,
             index: dict[str, int]) -> Iterator[tuple[int, int, int]]:
    """(verb index, count_B, count_T) of the verbs in ``index`` whose count differs in this head.
    Only words present on either side can differ, so the loop is over the head's words, not the list."""
    cb, ct = _head_counts(base, layer, head), _head_counts(tuned, layer, head)
    for word in cb.keys() | ct.keys():
        j = index.get(word)
        if j is not None:
            b, t = cb.get(word, 0), ct.get(word, 0)
            if b != t:
                yield j, b, t


def verb_shares(base: AttentionResult, tuned: AttentionResult, verbs: Sequence[str], layers: Sequence[int]) -> VerbShares:
    """§2.6: over heads of ``layers`` with count_T(v) != count_B(v), the fraction with count_T > count_B;
    heads with equal counts (both zero included) are skipped; a verb with no changed head is dropped."""
    index = {w: j for j, w in enumerate(dict.fromkeys(v.lower() for v in verbs))}
    up, down = np.zeros(len(index), np.int64), np.zeros(len(index), np.int64)
    for layer in layers:
        for h in range(base.n_heads):
            for j, b, t in _changes(base, tuned, layer, h, index):
                up[j] += t > b
                down[j] += t < b
    shares, changed, dropped = {}, {}, 0
    for v in verbs:
        j = index[v.lower()]
        if up[j] + down[j] == 0:
            dropped += 1
            continue
        shares[v], changed[v] = float(up[j] / (up[j] + down[j])), int(up[j] + down[j])
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


def table3_numbers(ins: VerbShares, ctl: VerbShares) -> dict:
    """Table 3's row for one group: mean ± population std of per-verb shares, Welch two-sided p."""
    from shiftcheck.probes import stats

    a, b = ins.values, ctl.values
    both = len(a) >= 2 and len(b) >= 2
    with warnings.catch_warnings():  # constant shares (e.g. all 1.0) are a legitimate Table 3 row
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.welch(a, b, "two-sided") if both else None
    p = None if test is None or np.isnan(test.pvalue) else float(test.pvalue)
    g = stats.hedges_g(a, b) if both else float("nan")
    return {"instruction_mean": float(a.mean()) if len(a) else None, "instruction_std": float(a.std()) if len(a) else None,
            "instruction_n": len(a), "control_mean": float(b.mean()) if len(b) else None,
            "control_std": float(b.std()) if len(b) else None, "control_n": len(b),
            "instruction_dropped": ins.dropped, "control_dropped": ctl.dropped, "welch_p_two_sided": p,
            "hedges_g": float(g) if np.isfinite(g) else None}


# ---------------------------------------------------------------------------------------------
# per-cluster counts and the cluster bootstrap (the verdict's test)


@dataclass(frozen=True)
class ClusterCounts:
    """One verb list in one layer group, per head cluster (layer, kv head): ``up[c, v]`` query heads
    of cluster c in which verb v gained pairs (count_T > count_B), ``down[c, v]`` lost them;
    ``base_count[v]`` the verb's base pairs summed over the group's heads (the matching key)."""

    verbs: tuple[str, ...]
    clusters: tuple[tuple[int, int], ...]
    up: np.ndarray  # (n_clusters, n_verbs) int
    down: np.ndarray  # (n_clusters, n_verbs) int
    base_count: np.ndarray  # (n_verbs,) int

    @property
    def supported(self) -> np.ndarray:
        """(n_verbs,) bool: the verb changed in at least one head of the group."""
        return (self.up + self.down).sum(0) > 0

    @property
    def changed_clusters(self) -> int:
        """Distinct clusters in which at least one verb of the list changed."""
        return int(((self.up + self.down).sum(1) > 0).sum())

    def only(self, keep: np.ndarray) -> ClusterCounts:
        return ClusterCounts(tuple(v for v, k in zip(self.verbs, keep) if k), self.clusters, self.up[:, keep],
                             self.down[:, keep], self.base_count[keep])


def cluster_counts(base: AttentionResult, tuned: AttentionResult, verbs: Sequence[str],
                   layers: Sequence[int]) -> ClusterCounts:
    """Per-cluster up/down counts of ``verbs`` (lower-cased, duplicates removed) over ``layers``."""
    verbs_ = tuple(dict.fromkeys(v.lower() for v in verbs))
    index = {v: j for j, v in enumerate(verbs_)}
    clusters = tuple(dict.fromkeys((layer, base.cluster(h)) for layer in layers for h in range(base.n_heads)))
    row = {c: i for i, c in enumerate(clusters)}
    up = np.zeros((len(clusters), len(verbs_)), np.int64)
    down = np.zeros_like(up)
    base_count = np.zeros(len(verbs_), np.int64)
    for layer in layers:
        for h in range(base.n_heads):
            c = row[(layer, base.cluster(h))]
            for word, b in _head_counts(base, layer, h).items():
                if word in index:
                    base_count[index[word]] += b
            for j, b, t in _changes(base, tuned, layer, h, index):
                up[c, j] += t > b
                down[c, j] += t < b
    return ClusterCounts(verbs_, clusters, up, down, base_count)


def frequency_stratum(count: np.ndarray) -> np.ndarray:
    """0 for a verb absent from the base lists, else 1 + floor(log2(count)): 1, 2-3, 4-7, ..."""
    count = np.asarray(count)
    return np.where(count > 0, 1 + np.floor(np.log2(np.maximum(count, 1))), 0).astype(np.int64)


def matching_weights(instruction: ClusterCounts, control: ClusterCounts) -> tuple[np.ndarray, int]:
    """Weights of the supported control verbs that give them the supported instruction verbs'
    distribution over base-count strata (a control verb in a stratum with no instruction verb gets
    0). Returns the weights and the number of instruction verbs in strata without a control verb."""
    si = frequency_stratum(instruction.base_count[instruction.supported])
    sc = frequency_stratum(control.base_count)
    w = np.zeros(len(sc))
    for s in np.unique(si):
        in_s = control.supported & (sc == s)
        if in_s.any():
            w[in_s] = (si == s).sum() / in_s.sum()
    unmatched = int(sum((si == s).sum() for s in np.unique(si) if not (control.supported & (sc == s)).any()))
    return w, unmatched


def mean_share(up: np.ndarray, down: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over verbs of ups / (ups + downs), over verbs that changed; rows of (B, n_verbs)
    arrays, ``weights`` (n_verbs,) or (B, n_verbs). A row with no changed verb (or zero total weight)
    gives -inf: no evidence for the claim."""
    weights = np.broadcast_to(weights, up.shape)
    n = up + down
    has = (n > 0) & (weights > 0)
    share = np.divide(up, n, out=np.zeros(up.shape, float), where=n > 0)
    wsum = (has * weights).sum(1)
    total = (share * has * weights).sum(1)
    return np.divide(total, wsum, out=np.full(len(wsum), -np.inf), where=wsum > 0)


def resample_weights(n_units: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_units): how often each unit is drawn, n_units draws with replacement."""
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_resamples)


@dataclass(frozen=True)
class ClusterBootstrap:
    """The one-sided cluster bootstrap of one layer group (the verdict's test)."""

    instruction_share: float  # on the data (mean of per-verb shares, the paper's statistic)
    control_share: float  # on the data, frequency-matched weights unless matching is off
    lcb_share: float  # one-sided lower (1 - alpha) bound of the instruction share
    lcb_difference: float  # ... of instruction share - control share
    p_share: float  # one-sided, H0: instruction share <= threshold
    p_difference: float  # one-sided, H0: instruction share <= control share
    n_clusters: int  # clusters of the group (all resampled)
    n_resamples: int
    seed: int
    matched: bool
    unmatched_instruction_verbs: int
    verbs_resampled: bool  # two-way (pigeonhole) bootstrap: clusters and verbs

    @property
    def p(self) -> float:
        """The intersection-union p-value: the claim needs both nulls rejected."""
        return max(self.p_share, self.p_difference)

    def passes(self, threshold: float) -> bool:
        return self.lcb_share > threshold and self.lcb_difference > 0


def _lower_bound(values: np.ndarray, alpha: float) -> float:
    """The k-th smallest bootstrap value, k = floor(alpha (B + 1)): it exceeds a null value exactly
    when fewer than k resamples fall at or below it, i.e. when p = (1 + #{T* <= null}) / (B + 1)
    is at most k / (B + 1) <= alpha."""
    k = int(np.floor(alpha * (len(values) + 1)))
    return float(np.sort(values)[k - 1]) if k >= 1 else -np.inf


def cluster_bootstrap(instruction: ClusterCounts, control: ClusterCounts, threshold: float, alpha: float,
                      n_resamples: int = N_RESAMPLES, seed: int = 0, match: bool = True, resample_verbs: bool = False,
                      chunk: int = 250) -> ClusterBootstrap:
    """Resample the group's clusters (the same draw for both verb lists: they share the heads) and
    recompute both shares; one-sided percentile bounds and p-values, seeded and deterministic.

    The verb lists are fixed (the paper's 38 verbs and its control list are the claim's subject, not
    a sample of verbs), so by default only clusters are resampled. ``resample_verbs`` also resamples
    each list's verbs (Owen's pigeonhole bootstrap for a crossed heads x verbs design): it treats
    the verbs as a sample too, and is conservative (docs/ATTENTION.md: 70 % instead of 92 % power on
    the Table 3 simulation)."""
    ins = instruction.only(instruction.supported)
    ctl = control.only(control.supported)
    if match:
        w_ctl, unmatched = matching_weights(ins, ctl)
    else:
        w_ctl, unmatched = np.ones(len(ctl.verbs)), 0
    w_ins = np.ones(len(ins.verbs))
    one = np.ones((1, len(ins.clusters)), np.int64)
    point_i = float(mean_share(one @ ins.up, one @ ins.down, w_ins)[0])
    point_c = float(mean_share(one @ ctl.up, one @ ctl.down, w_ctl)[0])
    rng = np.random.default_rng(seed)
    W = resample_weights(len(ins.clusters), n_resamples, rng)
    if resample_verbs:
        V_ins = resample_weights(len(ins.verbs), n_resamples, rng) * w_ins
        V_ctl = resample_weights(len(ctl.verbs), n_resamples, rng) * w_ctl
    else:
        V_ins = np.broadcast_to(w_ins, (n_resamples, len(ins.verbs)))
        V_ctl = np.broadcast_to(w_ctl, (n_resamples, len(ctl.verbs)))
    t_share, t_diff = [], []
    for start in range(0, n_resamples, chunk):
        rows = slice(start, start + chunk)
        Wc = W[rows]
        si = mean_share(Wc @ ins.up, Wc @ ins.down, V_ins[rows])
        sc = mean_share(Wc @ ctl.up, Wc @ ctl.down, V_ctl[rows])
        t_share.append(si)
        diff = np.full(len(si), -np.inf)
        ok = np.isfinite(si) & np.isfinite(sc)
        diff[ok] = si[ok] - sc[ok]
        t_diff.append(diff)
    ts, td = np.concatenate(t_share), np.concatenate(t_diff)
    p = lambda t, null: float((1 + (t <= null).sum()) / (len(t) + 1))  # noqa: E731
    return ClusterBootstrap(point_i, point_c, _lower_bound(ts, alpha), _lower_bound(td, alpha), p(ts, threshold),
                            p(td, 0.0), len(ins.clusters), n_resamples, seed, match, unmatched, resample_verbs)


# ---------------------------------------------------------------------------------------------
# the verdict

FINDING = "instruction_verbs_gain_pairs_in_the_low_layers"
TEST_NAME = ("one-sided cluster bootstrap over head clusters (layer, kv head), intersection-union of "
             "instruction share > threshold and instruction share > frequency-matched control share (METHODS §2.6)")


def group_report(base: AttentionResult, tuned: AttentionResult, group: int, instruction: Sequence[str],
                 control: Sequence[str], threshold: float, alpha: float, n_resamples: int = N_RESAMPLES,
                 seed: int = 0, match: bool = True, resample_verbs: bool = False) -> dict:
    """Everything about one layer group as JSON-able numbers: Table 3's row and the cluster test."""
    layers = group_layers(group, base.n_layers)
    ins, ctl = cluster_counts(base, tuned, instruction, layers), cluster_counts(base, tuned, control, layers)
    out = {"layers": [layers[0], layers[-1]] if layers else [],
           "table3": table3_numbers(verb_shares(base, tuned, instruction, layers),
                                    verb_shares(base, tuned, control, layers)),
           "instruction_verbs_with_change": int(ins.supported.sum()),
           "instruction_changed_clusters": ins.changed_clusters, "clusters_in_group": len(ins.clusters),
           "heads_per_instruction_verb": {v: int(n) for v, n in zip(ins.verbs, (ins.up + ins.down).sum(0)) if n}}
    if ins.supported.any() and ctl.supported.any():
        bs = cluster_bootstrap(ins, ctl, threshold, alpha, n_resamples, seed, match, resample_verbs)
        finite = lambda x: x if np.isfinite(x) else None  # noqa: E731  (JSON: no bound when resamples lack support)
        out["bootstrap"] = {"instruction_share": finite(bs.instruction_share), "control_share": finite(bs.control_share),
                            "lcb_share": finite(bs.lcb_share), "lcb_difference": finite(bs.lcb_difference),
                            "p_share": bs.p_share,
                            "p_difference": bs.p_difference, "p_value": bs.p, "n_resamples": bs.n_resamples,
                            "seed": bs.seed, "frequency_matched": bs.matched,
                            "unmatched_instruction_verbs": bs.unmatched_instruction_verbs,
                            "verbs_resampled": bs.verbs_resampled,
                            "passes": bs.passes(threshold)}
    return out


def verb_verdict(base: AttentionResult, tuned: AttentionResult, group: int, instruction: Sequence[str],
                 control: Sequence[str], threshold: float, alpha: float, min_support: int,
                 min_head_support: int = MIN_HEAD_SUPPORT, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 match: bool = True, resample_verbs: bool = False):
    """Finding 2 in one layer group. No head changed anywhere: fail. Fewer than ``min_support``
    instruction verbs with a changed head, or fewer than ``min_head_support`` distinct clusters in
    which an instruction verb changed: inconclusive. Otherwise pass iff both one-sided lower bounds
    of the cluster bootstrap clear their nulls (instruction share > ``threshold``; instruction −
    matched control share > 0)."""
    from shiftcheck.probes.findings import Verdict

    r = group_report(base, tuned, group, instruction, control, threshold, alpha, n_resamples, seed, match,
                     resample_verbs)
    layers = r["layers"]
    span = f"layers {layers[0]}-{layers[-1]}" if layers else f"group {group}"
    t3, bs = r["table3"], r.get("bootstrap")
    changed = heads_changed(base, tuned)
    n_verbs, n_clusters = r["instruction_verbs_with_change"], r["instruction_changed_clusters"]
    numbers = {"layers": layers, **t3, "heads_changed_in_model": changed, "instruction_verbs_with_change": n_verbs,
               "instruction_changed_clusters": n_clusters, "clusters_in_group": r["clusters_in_group"],
               "heads_per_instruction_verb": r["heads_per_instruction_verb"], "min_verb_support": min_support,
               "min_head_support": min_head_support, "threshold": threshold,
               "p_value": bs["p_value"] if bs else None, "effect": bs["lcb_difference"] if bs else None,
               "effect_name": "lower bound of instruction - control share",
               **({f"bootstrap_{k}": v for k, v in bs.items()} if bs else {})}
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    support = f"{n_verbs} instruction verbs changed in {n_clusters} of {r['clusters_in_group']} head clusters"
    if bs:
        diff = (None if bs["instruction_share"] is None or bs["control_share"] is None
                else bs["instruction_share"] - bs["control_share"])
        obtained = (f"{span}: instruction share {fmt(bs['instruction_share'])} (lower bound {fmt(bs['lcb_share'])}), "
                    f"minus matched control {fmt(bs['control_share'])} = {fmt(diff)} "
                    f"(lower bound {fmt(bs['lcb_difference'])}), IUT p = {bs['p_value']:.4f}; {support}; Table 3: "
                    f"{fmt(t3['instruction_mean'])} vs {fmt(t3['control_mean'])}, Welch two-sided p = "
                    f"{fmt(t3['welch_p_two_sided'])}")
    else:
        obtained = f"{span}: {support}; no bootstrap (a verb list has no changed head)"
    expected = (f"one-sided {1 - alpha:.0%} lower bounds: instruction share > {threshold} and instruction - control "
                f"share > 0 (p < {alpha}), with at least {min_support} instruction verbs and {min_head_support} "
                "head clusters changed")
    if changed == 0:
        outcome, reason = "fail", "no head changed: base and tuned have identical pair lists in every head"
    elif n_verbs < min_support or n_clusters < min_head_support:
        outcome = "inconclusive"
        reason = (f"insufficient support in {span}: {n_verbs} instruction verb(s) with a changed head (need "
                  f"{min_support}) in {n_clusters} distinct head cluster(s) (need {min_head_support})")
    elif bs is not None and bs["passes"]:
        outcome, reason = "pass", ""
    else:
        outcome = "fail"
        why = []
        if bs is None:
            why.append("no control verb changed, so the instruction verbs cannot be compared")
        else:
            if bs["lcb_share"] is None or not bs["lcb_share"] > threshold:
                why.append(f"the instruction share's lower bound {fmt(bs['lcb_share'])} is not above {threshold} "
                           f"(p = {bs['p_share']:.4f})")
            if bs["control_share"] is None:
                why.append("no changed control verb has the instruction verbs' base counts (frequency strata), so the "
                           "comparison has no matched control")
            elif bs["lcb_difference"] is None or not bs["lcb_difference"] > 0:
                why.append(f"the lower bound of instruction - control share {fmt(bs['lcb_difference'])} is not above 0 "
                           f"(p = {bs['p_difference']:.4f})")
        reason = "; ".join(why)
    return Verdict(finding=FINDING, group=span,
                   claim="instruction verbs gain word pairs in more than half of the changed heads of the low layers, "
                         "more than control verbs",
                   test=TEST_NAME, alternative="greater", alpha=alpha, outcome=outcome, obtained=obtained,
                   expected=expected, reason=reason,
                   hint="" if outcome == "pass" else "check that --tuned is the instruction-tuned checkpoint; with "
                        "few changed heads, a larger model (more head clusters per group) gives the test support",
                   numbers=numbers)
