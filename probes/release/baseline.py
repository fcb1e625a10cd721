"""No regression against a vetted baseline run (issue 21 §1): non-inferiority of each shift finding.

A baseline is an earlier run's ``results.json``. Each asserted shift finding of the current run must
not fall below the baseline's effect by more than a *relative* margin m: the null hypothesis is
``current <= (1 - m) * baseline`` and the gate passes only when it is rejected at alpha (one-sided),
so a weaker tune fails and too little evidence is inconclusive, never green.

* Finding 1 (``tuned_density_on_instructions_exceeds_base``): paired over the prompts both runs
  share. Per prompt the effect is d = density_tuned - density_base; x = d_now - (1 - m) d_baseline
  is tested with a one-sided one-sample t-test (mean x > 0).
* Finding 2 and the user-task rise: their group statistic (instruction - control share of changed
  heads; user-task share in pp) with its standard error, as a one-sided z-test of
  ``now - (1 - m) baseline > 0`` (standard errors combined).

A baseline must describe the same experiment: the same base checkpoint (fingerprint), prompt set,
probe code versions and number-changing settings (:func:`differences`). Pure functions; no pytest.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

F1 = "tuned_density_on_instructions_exceeds_base"
F2 = "instruction_verbs_gain_pairs_in_the_low_layers"
F3_RISE = "user_task_concepts_rise_after_tuning"
REGRESSION_FINDINGS = (F1, F2, F3_RISE)
FINDING = "no_regression_against_baseline"
# Relative non-inferiority margins: the current effect may be at most this share of the baseline's
# lower. 0.25 lets run-to-run noise of a re-run pass (it is 0 for a deterministic re-run) while a
# tune at half the baseline's strength (issue 21's planted case) lies 0.25 below the bound.
MARGINS: Mapping[str, float] = {F1: 0.25, F2: 0.25, F3_RISE: 0.25}
IDENTITY_KEY = "release_identity"
# Settings that change a finding's numbers; the rest (output paths, device, the tuned checkpoint
# itself, the release options) may differ between a baseline and a candidate.
SETTINGS_THAT_MATTER = ("max_new_tokens", "chat_template", "attribution_mode", "dtype", "glove", "candidate_words",
                        "instruction_verbs", "control_verbs", "pair_top_k", "verb_share_threshold",
                        "min_verb_support", "min_head_support", "annotator", "annotator_repetitions",
                        "ffn_components", "ffn_top_words", "ffn_tolerance", "alpha", "sample", "sample_seed",
                        "max_prompts")


class BaselineError(ValueError):
    """A baseline that cannot be read, or that describes another experiment; the message says what."""


@dataclass(frozen=True)
class Baseline:
    path: str
    sha256: str  # of the results.json bytes
    created: str  # the baseline run's created_utc
    results: dict

    @property
    def identity(self) -> dict | None:
        return self.results.get("context", {}).get(IDENTITY_KEY)

    def finding_entry(self, finding: str) -> dict | None:
        """The baseline's pooled (or only) entry of ``finding``."""
        rows = [e for e in self.results.get("findings", []) if e.get("finding") == finding]
        pooled = [e for e in rows if str(e.get("group")) in ("pooled", "-")]
        return (pooled or rows or [None])[0]

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "created_utc": self.created}


def read_baseline(path: str | Path) -> Baseline:
    """``path`` is a results.json or the report folder holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise BaselineError(f"--baseline {path}: cannot read {p} ({exc.strerror or exc})") from None
    try:
        results = json.loads(raw)
    except ValueError as exc:
        raise BaselineError(f"--baseline {p} is not a shiftcheck results.json ({exc})") from None
    if not isinstance(results, dict) or "findings" not in results:
        raise BaselineError(f"--baseline {p} is not a shiftcheck results.json (no 'findings')")
    if results.get("stopped"):
        raise BaselineError(f"--baseline {p} is a run that stopped before any test: {results['stopped']}")
    return Baseline(str(p), hashlib.sha256(raw).hexdigest(), str(results.get("created_utc")), results)


def run_identity(base_fingerprint: str, prompt_ids: Sequence[str], prompts_digest: str,
                 code_versions: Mapping[str, str], settings: Mapping) -> dict:
    """What a baseline and a candidate must share (the tuned checkpoint is what may change)."""
    return {"base_fingerprint": base_fingerprint, "prompts_digest": prompts_digest,
            "prompt_ids": list(prompt_ids), "code_versions": dict(sorted(code_versions.items())),
            "settings": {k: settings.get(k) for k in SETTINGS_THAT_MATTER}}


def differences(baseline: Mapping, current: Mapping) -> dict[str, str]:
    """What differs between two identities, in words, keyed base / prompts / code / settings."""
    out: dict[str, str] = {}
    if baseline.get("base_fingerprint") != current.get("base_fingerprint"):
        out["base"] = (f"base checkpoint fingerprint {str(baseline.get('base_fingerprint'))[:24]}… (baseline) vs "
                       f"{str(current.get('base_fingerprint'))[:24]}… (now)")
    if baseline.get("prompts_digest") != current.get("prompts_digest"):
        old, new = set(baseline.get("prompt_ids", [])), set(current.get("prompt_ids", []))
        out["prompts"] = (f"prompt set {baseline.get('prompts_digest')} (baseline, {len(old)} prompts) vs "
                          f"{current.get('prompts_digest')} (now, {len(new)}); {len(old & new)} prompt ids shared")
    code_b, code_c = baseline.get("code_versions", {}), current.get("code_versions", {})
    moved = sorted(k for k in set(code_b) | set(code_c) if code_b.get(k) != code_c.get(k))
    if moved:
        out["code"] = "probe code versions differ: " + ", ".join(f"{k} {code_b.get(k)} -> {code_c.get(k)}" for k in moved)
    set_b, set_c = baseline.get("settings", {}), current.get("settings", {})
    changed = sorted(k for k in set(set_b) | set(set_c) if set_b.get(k) != set_c.get(k))
    if changed:
        out["settings"] = "settings differ: " + ", ".join(f"{k} {set_b.get(k)!r} -> {set_c.get(k)!r}" for k in changed)
    return out


def check_compatible(baseline: Baseline, current: Mapping, allow_different_prompts: bool) -> list[str]:
    """Raise :class:`BaselineError` naming every difference that forbids the comparison; returns
    the tolerated differences (a different prompt set with ``allow_different_prompts``)."""
    if baseline.identity is None:
        raise BaselineError(f"--baseline {baseline.path} carries no '{IDENTITY_KEY}' (a run without models, or made "
                            "before the release gate): rerun the vetted checkpoint to make a baseline")
    diff = differences(baseline.identity, current)
    tolerated = [diff.pop("prompts")] if allow_different_prompts and "prompts" in diff else []
    if diff:
        raise BaselineError(f"--baseline {baseline.path} describes another experiment: " + "; ".join(diff.values())
                            + ("" if "prompts" not in diff else " (--baseline-allow-different-prompts accepts "
                               "another prompt set)"))
    return tolerated


# ---------------------------------------------------------------------------------------------
# the non-inferiority tests


@dataclass(frozen=True)
class NonInferiority:
    """One finding's current effect against the baseline's, with a relative margin."""

    shift_finding: str
    test: str
    baseline_effect: float
    current_effect: float
    margin: float
    statistic: float | None  # t or z of (current - (1 - m) baseline)
    p_value: float | None
    n: int  # prompts paired (finding 1) or 0 for group statistics
    unit: str

    @property
    def bound(self) -> float:
        return (1.0 - self.margin) * self.baseline_effect

    def outcome(self, alpha: float) -> str:
        """pass: non-inferiority shown (p < alpha); fail: inferiority shown (the opposite one-sided
        test, p > 1 - alpha); otherwise inconclusive (which fails unless --allow-inconclusive)."""
        if self.p_value is None:
            return "inconclusive"
        if self.p_value < alpha:
            return "pass"
        return "fail" if self.p_value > 1.0 - alpha else "inconclusive"

    def to_dict(self) -> dict:
        return {"finding": self.shift_finding, "baseline_effect": self.baseline_effect,
                "current_effect": self.current_effect, "margin": self.margin, "bound": self.bound,
                "statistic": self.statistic, "p_value": self.p_value, "n": self.n, "unit": self.unit,
                "test": self.test, "effect": self.current_effect - self.bound,
                "effect_name": "current - (1 - margin) x baseline"}


def paired_density(current: Mapping[str, float], baseline: Mapping[str, float], margin: float) -> NonInferiority:
    """Finding 1, paired per prompt: ``current`` and ``baseline`` map prompt id -> d (tuned - base)."""
    from scipy import stats

    ids = sorted(set(current) & set(baseline))
    d_now = np.array([current[i] for i in ids], dtype=float)
    d_ref = np.array([baseline[i] for i in ids], dtype=float)
    test = "paired one-sided t-test of d_now - (1 - m) d_baseline > 0 over shared prompts"
    if len(ids) < 2:
        return NonInferiority(F1, test, float(d_ref.mean()) if ids else 0.0, float(d_now.mean()) if ids else 0.0,
                              margin, None, None, len(ids), "prompt")
    x = d_now - (1.0 - margin) * d_ref
    if np.ptp(x) == 0:  # a constant difference: the sign decides (a deterministic re-run lands here)
        stat, p = None, (0.0 if x[0] > 0 else 1.0)
    else:
        res = stats.ttest_1samp(x, 0.0, alternative="greater")
        stat, p = float(res.statistic), float(res.pvalue)
    return NonInferiority(F1, test, float(d_ref.mean()), float(d_now.mean()), margin, stat, p, len(ids), "prompt")


def group_statistic(finding: str, current: tuple[float, float], baseline: tuple[float, float],
                    margin: float, unit: str) -> NonInferiority:
    """Findings 2 and 3: (effect, standard error) now and in the baseline; one-sided z-test."""
    from scipy import stats

    (e_now, se_now), (e_ref, se_ref) = current, baseline
    se = math.sqrt(se_now ** 2 + ((1.0 - margin) * se_ref) ** 2)
    diff = e_now - (1.0 - margin) * e_ref
    test = "one-sided z-test of now - (1 - m) baseline > 0, standard errors combined"
    if se == 0:
        return NonInferiority(finding, test, e_ref, e_now, margin, None, 0.0 if diff > 0 else 1.0, 0, unit)
    z = diff / se
    return NonInferiority(finding, test, e_ref, e_now, margin, z, float(stats.norm.sf(z)), 0, unit)


def density_effects(scores: Mapping) -> dict[str, float]:
    """Per prompt d = tuned - base from a run's ``importance_scores`` context (ids and scores)."""
    base = dict(zip(scores["base"]["ids"], scores["base"]["scores"]))
    return {i: float(s) - float(base[i]) for i, s in zip(scores["tuned"]["ids"], scores["tuned"]["scores"])
            if i in base}


def attention_effect(numbers: Mapping, alpha: float) -> tuple[float, float] | None:
    """Finding 2's instruction - control share of changed heads and its standard error, from the
    verdict's cluster-bootstrap numbers (its one-sided lower bound at ``alpha`` gives the SE)."""
    from scipy import stats

    keys = ("bootstrap_instruction_share", "bootstrap_control_share", "bootstrap_lcb_difference")
    if any(numbers.get(k) is None for k in keys):
        return None
    effect = float(numbers[keys[0]]) - float(numbers[keys[1]])
    return effect, max(effect - float(numbers[keys[2]]), 0.0) / float(stats.norm.ppf(1 - alpha))


def user_task_effect(numbers: Mapping) -> tuple[float, float] | None:
    """The user-task rise in pp and its binomial standard error (components as the unit)."""
    counts = numbers.get("counts")
    if numbers.get("effect") is None or not counts:
        return None
    (cb, nb), (ct, nt) = counts["base"], counts["tuned"]
    if min(nb, nt) <= 0:
        return None
    pb, pt = cb / nb, ct / nt
    return float(numbers["effect"]), 100.0 * math.sqrt(pb * (1 - pb) / nb + pt * (1 - pt) / nt)
