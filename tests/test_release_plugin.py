"""The release gate inside a real pytest run on tiny checkpoints: an fp16 copy given as the tuned
model is caught by the KL preflight ("base and tuned behave identically"), results.json carries the
KL and a failing gate, and --baseline-update refuses to record the run."""

from __future__ import annotations

import json
import re
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


@pytest.fixture(scope="module")
def lexical_copy(tmp_path_factory):
    """A 4-layer lexical model (findings 2 and 3 not toy scale) and the same weights in another
    folder with one more file: two different files (fingerprints) that behave identically."""
    from lexical import lexical_model, lexical_vocab, save_lexical

    from shiftcheck.probes import words

    root = tmp_path_factory.mktemp("lexical-copy")
    kv = words.load_glove()
    base = save_lexical(*lexical_model(kv, lexical_vocab(kv)), root / "base")
    copy = root / "copy"
    shutil.copytree(base, copy)
    (copy / "NOTES.txt").write_text("the base, shipped again under another name\n")
    return base, copy


@pytest.mark.slow  # one suite run on a 4-layer, 3000-word pair: about a minute on the shared 2-core box
def test_an_identical_pair_fails_the_shift_tests_before_the_base_attribution(pytester: pytest.Pytester, tmp_path,
                                                                             lexical_copy):
    """The KL runs first in the base's pass and says "identical": the base's attribution and pair
    lists are never computed (the cache holds the tuned model's only), the three shift findings fail
    at setup, finding 3's "unchanged" is still judged on the FFN, and each file is loaded once."""
    from shiftcheck.probes.cache import ResultCache

    for path in sorted(BEHAVIOUR.glob("test_*.py")):
        shutil.copy(path, pytester.path / path.name)
    pytester.makeini("[pytest]\n")
    cache = tmp_path / "cache"
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(cache))
    base, copy = lexical_copy
    result = pytester.runpytest_subprocess(
        "--base", str(base), "--tuned", str(copy), "--device", "cpu", "--max-prompts", "1", "--max-new-tokens", "2",
        "--ffn-components", "4", "--allow-inconclusive", "-p", "no:cacheprovider", "-rA")
    out = result.stdout.str()
    plan = next(line for line in out.splitlines() if line.startswith("shiftcheck plan:"))
    units = {name: int(n) for name, n in re.findall(r"(\w+): (\d+) units per model", plan)}
    assert {"importance", "attention", "ffn", "kl"} <= set(units), plan  # all planned, none toy scale
    results = json.loads((pytester.path / "shiftcheck-report" / "results.json").read_text())
    by_finding: dict[str, list[dict]] = {}
    for entry in results["findings"]:
        by_finding.setdefault(entry["finding"], []).append(entry)
    shift = [e for f in ("tuned_density_on_instructions_exceeds_base", "instruction_verbs_gain_pairs_in_the_low_layers",
                         "user_task_concepts_rise_after_tuning") for e in by_finding[f]]
    assert len(shift) == len(by_finding["tuned_density_on_instructions_exceeds_base"]) + 2, out
    assert {e["pytest_outcome"] for e in shift} == {"error"}, shift  # all failed at setup ...
    reasons = {e["reason"] for e in shift}  # ... with one message, whichever fixture came first
    assert len(reasons) == 1 and reasons.pop().startswith("base and tuned behave identically: mean per-token KL"), shift
    unchanged = by_finding["linguistic_level_mix_unchanged_after_tuning"]
    assert unchanged and all(e["pytest_outcome"] != "error" and e.get("obtained") for e in unchanged), unchanged
    per_probe = ResultCache(cache).info().entries
    assert per_probe["importance"] == units["importance"]  # the tuned model's only
    assert per_probe["attention"] == units["attention"]
    assert per_probe["ffn"] == 2 * units["ffn"] and per_probe["kl"] == 2 * units["kl"]
    assert results["loads"] == {"base": 1, "tuned": 1}
    stages = results["stages"]
    assert "importance base" not in stages and "attention base" not in stages, stages
    assert stages["importance tuned"] > 0 and stages["ffn base"] > 0 and stages["kl base"] > 0
    skipped = results["kl"]["skipped"]
    assert sorted(skipped) == ["attention", "importance"]
    assert {s["model"] for s in skipped.values()} == {"base"}
    assert skipped["importance"]["units"] == units["importance"]
    report = (pytester.path / "shiftcheck-report" / "report.md").read_text()
    assert f"- importance: skipped on base, {units['importance']} unit" in report
    assert f"- attention: skipped on base, {units['attention']} unit" in report


def _release_density_run(pytester: pytest.Pytester, tmp_path: Path, release: Path) -> tuple[str, dict]:
    for name in ("test_importance_density.py", "test_release.py"):
        shutil.copy(BEHAVIOUR / name, pytester.path / name)
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "cache"))
    result = pytester.runpytest("--base", str(WORLD / "base"), "--tuned", str(WORLD / "good"), "--release",
                                str(release), "--prompts", str(WORLD / "prompts.jsonl"), "--max-prompts", "12",
                                "--max-new-tokens", "5", "--device", "cpu", "-p", "no:cacheprovider",
                                "-k", "tuned_density")
    results = json.loads((pytester.path / "shiftcheck-report" / "results.json").read_text())
    check = next(e for e in results["findings"] if e["finding"] == "release_matches_its_source"
                 and e["group"] == "tuned_density_on_instructions_exceeds_base")
    assert results["context"]["release_artifact"]["loads"] == {"artifact": 1, "tuned": 0}  # source: main run's load
    assert results["loads"] == {"base": 1, "tuned": 1}
    return result.stdout.str(), dict(check, **results["context"]["release_artifact"]["density"])


@pytest.mark.slow  # two plugin runs on the shipped world, 12 prompts: ~30 s each on the shared box
def test_the_density_check_attributes_the_sources_responses(pytester: pytest.Pytester, tmp_path):
    """Finding 1's release check on the world's proofs: a bf16 cast of good is equivalent and
    reproduces every greedy response; bad-cpt as the release of good is not equivalent."""
    cast = cast_checkpoint(WORLD / "good", tmp_path / "good-bf16", "bf16")
    out, check = _release_density_run(pytester, tmp_path, cast)
    assert check["outcome"] == "pass", out
    assert check["greedy_agreement"] == 1.0 and check["n"] == 12
    assert "the artifact's greedy decode reproduces the source's response on 100% of prompts" in out
    report = (pytester.path / "shiftcheck-report" / "report.md").read_text()
    assert "finding 1 density on the source's responses, artifact − source" in report


@pytest.mark.slow
def test_the_density_check_fails_another_model_given_as_the_release(pytester: pytest.Pytester, tmp_path):
    out, check = _release_density_run(pytester, tmp_path, WORLD / "bad-cpt")
    assert check["outcome"] == "fail", out
    assert check["greedy_agreement"] < 0.5
    assert "the artifact's greedy decode reproduces the source's response on" in out
