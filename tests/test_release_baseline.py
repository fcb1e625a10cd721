"""Non-inferiority against a baseline (probes/release/baseline.py) on planted effects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.probes.release import baseline as bl


def _effects(rng, n, strength, noise=0.05):
    ids = [f"p{i}" for i in range(n)]
    truth = rng.uniform(0.05, 0.3, size=n)  # each prompt's effect of the vetted tune
    return ids, truth, {i: float(strength * t + rng.normal(0, noise)) for i, t in zip(ids, truth)}


def test_same_run_passes_and_half_strength_fails():
    rng = np.random.default_rng(0)
    ids, truth, ref = _effects(rng, 120, 1.0)
    same = bl.paired_density(ref, ref, 0.25)
    assert same.outcome(0.05) == "pass"
    half = {i: float(0.5 * t + rng.normal(0, 0.05)) for i, t in zip(ids, truth)}
    res = bl.paired_density(half, ref, 0.25)
    assert res.current_effect < res.bound
    assert res.outcome(0.05) == "fail"


def test_too_few_shared_prompts_is_inconclusive():
    assert bl.paired_density({"a": 1.0}, {"a": 1.0, "b": 2.0}, 0.25).outcome(0.05) == "inconclusive"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), strength=st.floats(1.0, 2.0))
def test_a_tune_at_least_as_strong_never_fails(seed, strength):
    rng = np.random.default_rng(seed)
    ids, truth, ref = _effects(rng, 200, 1.0, noise=0.02)
    now = {i: float(strength * t + rng.normal(0, 0.02)) for i, t in zip(ids, truth)}
    assert bl.paired_density(now, ref, 0.25).outcome(0.05) == "pass"


def test_group_statistic_margin_and_direction():
    ok = bl.group_statistic(bl.F2, (0.30, 0.02), (0.30, 0.02), 0.25, "share")
    assert ok.outcome(0.05) == "pass"
    weak = bl.group_statistic(bl.F2, (0.12, 0.02), (0.30, 0.02), 0.25, "share")
    assert weak.outcome(0.05) == "fail"
    noisy = bl.group_statistic(bl.F2, (0.22, 0.2), (0.30, 0.2), 0.25, "share")
    assert noisy.outcome(0.05) == "inconclusive"  # below the bound, but not shown to be


def test_effect_extractors():
    eff, se = bl.attention_effect({"bootstrap_instruction_share": 0.7, "bootstrap_control_share": 0.4,
                                   "bootstrap_lcb_difference": 0.3 - 1.6448536 * 0.05}, 0.05)
    assert (eff, se) == (pytest.approx(0.3), pytest.approx(0.05, rel=1e-5))
    eff, se = bl.user_task_effect({"effect": 10.0, "counts": {"base": [20, 100], "tuned": [30, 100]}})
    assert eff == 10.0 and se == pytest.approx(100 * np.sqrt(0.2 * 0.8 / 100 + 0.3 * 0.7 / 100))
    assert bl.user_task_effect({"effect": None}) is None
    scores = {"base": {"ids": ["a", "b"], "scores": [0.1, 0.2]}, "tuned": {"ids": ["b", "a"], "scores": [0.5, 0.4]}}
    assert bl.density_effects(scores) == {"a": pytest.approx(0.3), "b": pytest.approx(0.3)}


def _identity(**over):
    ident = bl.run_identity("sha256:base", ["a", "b"], "d1", {"importance": "importance-2"},
                            {"max_new_tokens": 300, "alpha": 0.05, "report_dir": "x"})
    ident.update(over)
    return ident


def _write(tmp_path, identity):
    results = {"created_utc": "2026-12-01T00:00:00+00:00", "findings": [],
               "context": {bl.IDENTITY_KEY: identity}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_baseline_of_another_experiment_is_refused_naming_what_differs(tmp_path):
    base = bl.read_baseline(_write(tmp_path, _identity()))  # a report folder or its results.json
    assert bl.check_compatible(base, _identity(), False) == []
    assert bl.read_baseline(tmp_path).sha256 == base.sha256
    with pytest.raises(bl.BaselineError, match="base checkpoint fingerprint"):
        bl.check_compatible(base, _identity(base_fingerprint="sha256:other"), False)
    other_prompts = _identity(prompts_digest="d2", prompt_ids=["a", "c"])
    with pytest.raises(bl.BaselineError, match="prompt set d1 .*1 prompt ids shared.*allow-different-prompts"):
        bl.check_compatible(base, other_prompts, False)
    assert "prompt set" in bl.check_compatible(base, other_prompts, True)[0]
    with pytest.raises(bl.BaselineError, match="importance importance-2 -> importance-3"):
        bl.check_compatible(base, _identity(code_versions={"importance": "importance-3"}), False)
    with pytest.raises(bl.BaselineError, match="max_new_tokens 300 -> 64"):
        bl.check_compatible(base, _identity(settings=dict(_identity()["settings"], max_new_tokens=64)), False)


def test_unreadable_or_foreign_baselines(tmp_path):
    with pytest.raises(bl.BaselineError, match="cannot read"):
        bl.read_baseline(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(bl.BaselineError, match="not a shiftcheck results.json"):
        bl.read_baseline(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"findings": []}))
    with pytest.raises(bl.BaselineError, match="carries no 'release_identity'"):
        bl.check_compatible(bl.read_baseline(tmp_path / "y.json"), _identity(), False)
