"""Black-box tests of the pytest plugin with ``pytester``: options, settings precedence, replay
verdicts, readable failures, the report, xdist merging and the cache switch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_replay import PAPER_DATA, needs_paper_data

pytest_plugins = ["pytester"]
BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour_tests" / "test_importance_density.py"
LLAMA = PAPER_DATA / "attribution" / "llama_7b"
VICUNA = PAPER_DATA / "attribution" / "vicuna_7b"
GROUPS = ["lima", "mt-bench", "self-instruct", "pooled"]


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path_factory) -> pytest.Pytester:
    """A pytester dir holding the real behaviour tests and its own result cache."""
    shutil.copy(BEHAVIOUR, pytester.path / BEHAVIOUR.name)
    pytester.makeini("[pytest]\n")  # keep our repo's pyproject out of rootdir discovery
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path_factory.mktemp("cache")))
    return pytester


def test_help_documents_every_option(pytester: pytest.Pytester):
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    for flag in ("--base", "--tuned", "--device", "--dtype", "--prompts", "--alpha", "--report-dir",
                 "--replay-base", "--replay-tuned", "--ratings", "--max-new-tokens", "--chat-template"):
        assert flag in out, flag
    assert "shiftcheck" in out and "world:good" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--alpha", "1.5"], "--alpha must be a number with 0 < alpha < 1"),
        (["--device", "gpu"], "--device must be one of auto, cpu, cuda, cuda:N"),
        (["--dtype", "int8"], "--dtype must be one of float32"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be a positive integer"),
        (["--replay-base", "x"], "--replay-base and --replay-tuned must be given together"),
    ],
)
def test_bad_options_are_usage_errors_that_state_the_format(pytester: pytest.Pytester, args, message):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_pyproject_settings_are_read_and_the_command_line_wins(pytester: pytest.Pytester):
    pytester.makepyprojecttoml('[tool.shiftcheck]\nalpha = 0.01\ndevice = "cpu"\nreport-dir = "out"\n')
    pytester.makepyfile(
        """
        def test_settings(shiftcheck_settings):
            assert shiftcheck_settings.device == "cpu"
            assert shiftcheck_settings.report_dir == "out"
            assert shiftcheck_settings.alpha == 0.2
        """
    )
    pytester.runpytest("--alpha", "0.2").assert_outcomes(passed=1)
    pytester.makepyprojecttoml('[tool.shiftcheck]\nalfa = 0.01\n')
    result = pytester.runpytest()
    assert "unknown key(s) ['alfa']" in result.stderr.str()


def test_gpu_marker_skips_with_a_reason_without_cuda(pytester: pytest.Pytester):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the skip path cannot be observed")
    pytester.makepyfile("import pytest\n@pytest.mark.gpu\ndef test_x():\n    pass\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no CUDA device is available*"])


@needs_paper_data
def test_replay_of_llama_vs_vicuna_passes_every_group_and_writes_the_report(suite: pytest.Pytester):
    result = suite.runpytest("--replay-base", str(LLAMA), "--replay-tuned", str(VICUNA), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, skipped=4)  # the followed test skips: no --ratings
    result.stdout.fnmatch_lines(["*shiftcheck summary*", "*importance_density ?pooled?*-> PASS*", "*report: *report.md*"])
    report = suite.path / "shiftcheck-report"
    results = json.loads((report / "results.json").read_text())
    groups = sorted(r["group"] for r in results["findings"])
    assert groups == sorted(GROUPS)
    pooled = next(r for r in results["findings"] if r["group"] == "pooled")
    assert pooled["numbers"]["a_n"] == 632 and pooled["numbers"]["p_value"] < 1e-10
    assert results["context"]["checkpoints"]["base"]["fingerprint"].startswith("sha256:")
    assert results["package_versions"]["torch"]
    md = (report / "report.md").read_text()
    assert "| importance_density | pooled | PASS |" in md
    pngs = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert "importance_density.png" in pngs and sum(n.startswith("saliency_") for n in pngs) == 6
    assert all((report / "figures" / n).stat().st_size > 1000 for n in pngs)


@needs_paper_data
def test_swapped_replay_fails_with_the_numbers_and_a_hint(suite: pytest.Pytester):
    result = suite.runpytest("--replay-base", str(VICUNA), "--replay-tuned", str(LLAMA), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=4, skipped=4)
    out = result.stdout.str()
    assert "the tuned model puts more importance density on instruction words than the base" in out
    assert "Welch one-sided p =" in out and "Hedges' g" in out and "expected: difference > 0" in out
    assert "try: check that --tuned really is the instruction-tuned checkpoint" in out


@needs_paper_data
def test_ratings_drive_the_followed_vs_unfollowed_finding(suite: pytest.Pytester):
    result = suite.runpytest(
        "--replay-base", str(LLAMA), "--replay-tuned", str(VICUNA), "-p", "no:cacheprovider",
        "--ratings", str(PAPER_DATA / "ratings.tsv"), "--ratings-model", "vicuna_7B",
        "-k", "carry",
    )
    result.assert_outcomes(passed=4)


@needs_paper_data
def test_xdist_run_merges_one_report_with_the_same_numbers(suite: pytest.Pytester):
    args = ["--replay-base", str(LLAMA), "--replay-tuned", str(VICUNA), "-p", "no:cacheprovider"]
    suite.runpytest(*args, "--report-dir", "single").assert_outcomes(passed=4, skipped=4)
    result = suite.runpytest(*args, "--report-dir", "parallel", "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=4, skipped=4)
    single = json.loads((suite.path / "single" / "results.json").read_text())
    parallel = json.loads((suite.path / "parallel" / "results.json").read_text())
    assert [r["numbers"] for r in single["findings"]] == [r["numbers"] for r in parallel["findings"]]
    assert len(parallel["findings"]) == 4


def test_cache_clear_also_empties_the_result_cache(pytester: pytest.Pytester, tmp_path):
    from shiftcheck.probes.cache import CacheEntry, CacheKey, ResultCache

    cache_dir = tmp_path / "cache"
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(cache_dir))
    cache = ResultCache(cache_dir)
    key = CacheKey("sha256:x", "importance", {"L": 10}, "t")
    cache.save(key, CacheEntry(meta={"a": 1}, arrays={}))
    pytester.makepyfile("def test_x():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert cache.load(key) is not None
    pytester.runpytest("--cache-clear").assert_outcomes(passed=1)
    assert cache.load(key) is None
