"""The release gate inside a real pytest run on tiny checkpoints: an fp16 copy given as the tuned
model is caught by the KL preflight ("base and tuned behave identically"), results.json carries the
KL and a failing gate, and --baseline-update refuses to record the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from builders import tiny_llama

from shiftcheck.probes.release.casts import cast_checkpoint

pytest_plugins = ["pytester"]
BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour_tests"
PROMPTS = [("p0", "write a short poem about the sea .", (0, 5)), ("p1", "list the red house", (0, 4)),
           ("p2", "explain the question : the cat is happy", (0, 7))]


@pytest.mark.slow  # one plugin run in a subprocess: ~18 s CPU, a minute on the shared 2-core box
def test_a_cast_of_the_base_fails_the_shift_tests_fast_and_is_not_recorded(pytester: pytest.Pytester, tmp_path):
    base = tiny_llama(tmp_path, seed=0, name="base")
    copy = cast_checkpoint(base, tmp_path / "base-fp16", "fp16")  # another file, the same model
    for name in ("test_importance_density.py", "test_release.py"):
        shutil.copy(BEHAVIOUR / name, pytester.path / name)
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "cache"))
    with (pytester.path / "prompts.jsonl").open("w") as fh:
        for pid, text, span in PROMPTS:
            fh.write(json.dumps({"id": pid, "source": "toy", "prompt": text, "instruction_char_spans": [span]}) + "\n")
    result = pytester.runpytest("--base", str(base), "--tuned", str(copy), "--prompts", "prompts.jsonl",
                                "--max-new-tokens", "5", "--device", "cpu", "-p", "no:cacheprovider",
                                "--baseline-update", str(tmp_path / "vetted"), "-k", "tuned_density or no_regression")
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors") == 1 and "passed" not in outcomes, out  # failed at setup, before its fixtures
    assert "base and tuned behave identically: mean per-token KL(tuned || base)" in out
    assert "--baseline-update refused: this run did not pass" in out
    assert not (tmp_path / "vetted").exists()
    results = json.loads((pytester.path / "shiftcheck-report" / "results.json").read_text())
    assert results["kl"]["identical"] is True and results["kl"]["pooled"]["mean_kl"] < 1e-3
    assert results["gate"]["verdict"] == "fail"
    assert results["loads"] == {"base": 1, "tuned": 1}
    assert results["context"]["release_identity"]["base_fingerprint"] == \
        results["context"]["checkpoints"]["base"]["fingerprint"]


WORLD = Path(__file__).resolve().parents[1] / "probes" / "world" / "shipped" / "seed0"


@pytest.mark.slow  # one plugin run in a subprocess on the shipped world, 4 prompts: ~15 s on the shared box
def test_release_checks_of_findings_2_and_3_in_a_run(pytester: pytest.Pytester, tmp_path):
    """world:bad-cpt given as the release of world:good: the FFN subspace check fails and names its
    layer, finding 2's check skips as toy scale (2 layers), both land in results.json and the report."""
    shutil.copy(BEHAVIOUR / "test_release.py", pytester.path / "test_release.py")
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "cache"))
    result = pytester.runpytest("--base", str(WORLD / "base"), "--tuned", str(WORLD / "good"), "--release",
                                str(WORLD / "bad-cpt"), "--prompts", str(WORLD / "prompts.jsonl"), "--max-prompts", "4",
                                "--max-new-tokens", "5", "--device", "cpu", "-p", "no:cacheprovider",
                                "-k", "release_matches and (instruction_verbs or user_task)")
    out = result.stdout.str()
    assert result.parseoutcomes() == {"failed": 1, "skipped": 1, "deselected": 6}, out
    assert "layer 0's top-48 FFN subspace lies only 0.89" in out
    results = json.loads((pytester.path / "shiftcheck-report" / "results.json").read_text())
    by_check = {e["group"]: e for e in results["findings"] if e["finding"] == "release_matches_its_source"}
    assert by_check["user_task_concepts_rise_after_tuning"]["outcome"] == "fail"
    assert by_check["instruction_verbs_gain_pairs_in_the_low_layers"]["outcome"] == "skipped"
    assert results["context"]["release_artifact"]["loads"] == {"artifact": 1, "tuned": 0}  # the source: the main run's load
    assert results["loads"] == {"base": 1, "tuned": 1}
    report = (pytester.path / "shiftcheck-report" / "report.md").read_text()
    assert "finding 3 FFN subspaces (top 48), min over layers of mean cos² 0.89" in report
    assert "instruction_verbs_gain_pairs_in_the_low_layers: skipped, toy scale" in report
