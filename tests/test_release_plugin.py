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
