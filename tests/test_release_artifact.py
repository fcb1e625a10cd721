"""The release artifact checks (probes/release/artifact.py) and the gate's rules (fixtures/release.py)
on planted inputs."""

from __future__ import annotations

import json

import numpy as np

from shiftcheck.fixtures.release import gate_verdict, update_baseline
from shiftcheck.probes.release.artifact import density_equivalence, tokenizer_differences
from tests.builders import DEFAULT_WORDS, word_tokenizer


def test_tokenizer_and_template_differences_are_named():
    source = word_tokenizer()
    assert tokenizer_differences(source, word_tokenizer()) == []
    other = word_tokenizer(DEFAULT_WORDS[:-1] + ("banana",))
    (diff,) = tokenizer_differences(source, other)
    assert "1 only in the source (e.g. ['?'])" in diff and "'banana'" in diff
    templated = word_tokenizer()
    templated.chat_template = "{{ messages[0]['content'] }}"
    source.chat_template = "{{ 'User: ' + messages[0]['content'] }}"
    (diff,) = tokenizer_differences(source, templated)
    assert diff.startswith("chat template differs from character 3: source \"'User: '")


def test_density_equivalence_passes_a_cast_and_fails_another_model():
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(100)]
    src = {i: float(x) for i, x in zip(ids, rng.uniform(0, 0.5, 100))}
    same = {i: True for i in ids}
    cast = {i: v + float(rng.normal(0, 0.003)) for i, v in src.items()}
    ok = density_equivalence(src, cast, same, margin=0.02)
    assert ok.outcome(0.05) == "pass" and ok.greedy_agreement == 1.0
    moved = {i: v + 0.08 + float(rng.normal(0, 0.02)) for i, v in src.items()}
    bad = density_equivalence(src, moved, dict(same, p0=False), margin=0.02)
    assert bad.outcome(0.05) == "fail" and bad.greedy_agreement == 0.99
    assert density_equivalence(src, src, same).outcome(0.05) == "pass"  # identical: constant 0 difference
    assert density_equivalence(src, cast, None, margin=0.02).greedy_agreement is None  # unknown, not 0 %


def _results(outcomes):
    return {"findings": [{"finding": f"f{k}", "group": "pooled", "outcome": o} for k, o in enumerate(outcomes)],
            "context": {"release_identity": {"base_fingerprint": "x"}}}


def test_gate_rule():
    assert gate_verdict(_results(["pass", "pass", "skipped"]))["verdict"] == "pass"
    assert gate_verdict(_results(["pass", "inconclusive"]))["verdict"] == "fail"
    assert gate_verdict(_results(["skipped"]))["not_passing"] == ["no finding was judged"]


def test_baseline_update_refuses_a_failing_run(tmp_path):
    run = tmp_path / "results.json"
    run.write_text(json.dumps(_results(["pass", "fail"])))
    line = update_baseline(run, tmp_path / "vetted", 1)
    assert line.startswith("--baseline-update refused: this run did not pass (f1 [pooled]: fail)")
    assert not (tmp_path / "vetted").exists()
    run.write_text(json.dumps(_results(["pass"])))
    assert "wrote this run" in update_baseline(run, tmp_path / "vetted", 0)
    assert json.loads((tmp_path / "vetted" / "results.json").read_text())["findings"][0]["outcome"] == "pass"
