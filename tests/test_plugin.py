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
DENSITY = "tuned_density_on_instructions_exceeds_base"  # the finding's one name: its test's, without test_


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
    pytester.makepyprojecttoml('[tool.shiftcheck]\nalpha = 0.01\ndevice = "cpu"\nreport-dir = "out"\n'
                               'chat-template = true\n')
    pytester.makepyfile(
        f"""
        def test_settings(shiftcheck_settings):
            assert shiftcheck_settings.device == "cpu"
            assert shiftcheck_settings.report_dir == {str(pytester.path / "out")!r}  # pyproject: rootdir-relative
            assert shiftcheck_settings.alpha == 0.2
            assert shiftcheck_settings.chat_template is False  # --no-chat-template undid the pyproject true
        """
    )
    pytester.runpytest("--alpha", "0.2", "--no-chat-template").assert_outcomes(passed=1)
    pytester.makepyprojecttoml('[tool.shiftcheck]\nalfa = 0.01\n')
    result = pytester.runpytest()
    assert "unknown key(s) ['alfa']" in result.stderr.str()


@pytest.mark.parametrize(
    "toml,message",
    [
        ('trust-remote-code = "false"', "[tool.shiftcheck] trust-remote-code must be true or false (a TOML boolean)"),
        ("max-new-tokens = 1.9", "[tool.shiftcheck] max-new-tokens must be a TOML integer, got 1.9"),
        ("max-prompts = true", "[tool.shiftcheck] max-prompts must be a TOML integer"),
        ('alpha = "0.05"', "[tool.shiftcheck] alpha must be a number with 0 < alpha < 1"),
    ],
)
def test_pyproject_values_must_have_their_real_toml_type(pytester: pytest.Pytester, toml, message):
    pytester.makepyprojecttoml(f"[tool.shiftcheck]\n{toml}\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_relative_paths_resolve_against_rootdir_from_pyproject_and_cwd_from_the_command_line(pytester):
    pytester.makepyprojecttoml('[tool.shiftcheck]\nprompts = "data/p.jsonl"\n')
    sub = pytester.mkdir("sub")
    pytester.makepyfile(
        f"""
        def test_paths(shiftcheck_settings):
            assert shiftcheck_settings.prompts == {str(pytester.path / "data" / "p.jsonl")!r}
            assert shiftcheck_settings.ratings == {str(sub / "r.tsv")!r}
        """
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        result = pytester.runpytest(str(pytester.path), "--rootdir", str(pytester.path), "--ratings", "r.tsv")
    result.assert_outcomes(passed=1)


def test_shiftcheck_gpu_marker_skips_only_shiftcheck_tests(pytester: pytest.Pytester, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible, whatever the machine has
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpu
        def test_users_own_gpu_test():
            pass

        @pytest.mark.shiftcheck_gpu
        def test_shiftcheck_gpu_test(shiftcheck_settings):
            pass
        """
    )
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*shiftcheck_gpu_test*SKIP*", "*why: marked shiftcheck_gpu: no CUDA device is available*"])


def test_an_unrelated_run_is_untouched_by_the_plugin(pytester: pytest.Pytester):
    """The user's own gpu-marked test runs, -n auto keeps xdist's default, and no report is written."""
    pytester.makepyfile("import pytest\n@pytest.mark.gpu\ndef test_a():\n    assert 1\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "shiftcheck-report").exists()
    assert "shiftcheck summary" not in result.stdout.str()

    def workers(*args: str) -> str:
        out = pytester.runpytest("-n", "auto", "-p", "no:cacheprovider", *args).stdout.str()
        return next(line for line in out.splitlines() if "workers" in line and "created" in line)

    assert workers() == workers("-p", "no:shiftcheck")  # xdist's own default, not shiftcheck's GPU count


def test_importing_the_plugin_imports_no_torch_or_transformers():
    import subprocess
    import sys

    code = ("import sys, time; t = time.perf_counter(); import shiftcheck.fixtures.plugin; "
            "print(time.perf_counter() - t); print(' '.join(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == "", f"importing the plugin pulled in: {out[1]}"
    assert float(out[0]) < 1.0, f"plugin import took {out[0]} s"


@needs_paper_data
def test_replay_of_llama_vs_vicuna_passes_every_group_and_writes_the_report(suite: pytest.Pytester):
    result = suite.runpytest("--replay-base", str(LLAMA), "--replay-tuned", str(VICUNA), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, skipped=4)  # the followed test skips: no --ratings
    result.stdout.fnmatch_lines(["*shiftcheck summary*", "*tuned_density_on_instructions_exceeds_base ?pooled?: PASS*",
                                 "*report: *report.md*"])
    report = suite.path / "shiftcheck-report"
    results = json.loads((report / "results.json").read_text())
    density = [r for r in results["findings"] if r["finding"] == DENSITY]
    assert sorted(r["group"] for r in density) == sorted(GROUPS)
    skipped = [r for r in results["findings"] if r["outcome"] == "skipped"]
    assert len(skipped) == 4 and all("--ratings" in r["reason"] for r in skipped)  # every outcome is reported
    pooled = next(r for r in density if r["group"] == "pooled")
    assert pooled["numbers"]["a_n"] == 632 and pooled["numbers"]["p_value"] < 1e-10
    assert results["context"]["checkpoints"]["base"]["fingerprint"].startswith("sha256:")
    assert results["package_versions"]["torch"]
    md = (report / "report.md").read_text()
    assert f"| {DENSITY} | pooled | PASS |" in md
    pngs = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert "importance_density.png" in pngs and sum(n.startswith("saliency_") for n in pngs) == 6
    assert all((report / "figures" / n).stat().st_size > 1000 for n in pngs)


@needs_paper_data
def test_swapped_replay_fails_with_the_numbers_and_a_hint(suite: pytest.Pytester):
    result = suite.runpytest("--replay-base", str(VICUNA), "--replay-tuned", str(LLAMA), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=4, skipped=4)
    out = result.stdout.str()
    assert "the tuned model puts more importance density on instruction words than the base" in out
    assert "Welch one-sided p =" in out and "Hedges' g" in out and "expected: tuned higher than base" in out
    assert "why: tuned is not higher than base" in out
    assert "try: check that --tuned really is the instruction-tuned checkpoint" in out
    md = (suite.path / "shiftcheck-report" / "report.md").read_text()
    assert f"| {DENSITY} | pooled | **FAIL** |" in md
    assert "is NOT shown" in md and "Try: check that --tuned" in md  # a failed finding reads as failed


@needs_paper_data
def test_ratings_drive_the_followed_responses_finding(suite: pytest.Pytester):
    result = suite.runpytest(
        "--replay-base", str(LLAMA), "--replay-tuned", str(VICUNA), "-p", "no:cacheprovider",
        "--ratings", str(PAPER_DATA / "ratings.tsv"), "--ratings-model", "vicuna_7B",
        "-k", "carry",
    )
    result.assert_outcomes(passed=4)


def write_replay(prefix: Path, shift: float, n: int = 10, sources: tuple[str, ...] = ("a", "b")) -> Path:
    """A constructed replay dump: per source ``n`` instances of random attributions, the first two
    prompt tokens the instruction, raised by ``shift`` (a planted effect with a known truth)."""
    import numpy as np

    rng = np.random.default_rng(7)
    matrices, lines = {}, []
    for source in sources:
        for i in range(n):
            key = f"{source}_{i}"
            S = rng.normal(size=(6, 8))
            S[:2] += shift
            matrices[key] = S
            lines.append(json.dumps({"id": key, "source": source, "prompt_tokens": [f"t{j}" for j in range(6)],
                                     "response_tokens": [f"r{j}" for j in range(8)],
                                     "instruction_token_mask": [1, 1, 0, 0, 0, 0]}))
    np.savez(prefix.with_suffix(".npz"), **matrices)
    prefix.with_suffix(".jsonl").write_text("\n".join(lines) + "\n")
    return prefix


def test_xdist_run_merges_one_report_with_the_same_numbers(suite: pytest.Pytester):
    base, tuned = write_replay(suite.path / "base", 0.0), write_replay(suite.path / "tuned", 3.0)
    args = ["--replay-base", str(base), "--replay-tuned", str(tuned), "-p", "no:cacheprovider"]
    suite.runpytest(*args, "--report-dir", "single").assert_outcomes(passed=3, skipped=3)
    result = suite.runpytest(*args, "--report-dir", "parallel", "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=3, skipped=3)
    single = json.loads((suite.path / "single" / "results.json").read_text())
    parallel = json.loads((suite.path / "parallel" / "results.json").read_text())
    assert [r.get("numbers") for r in single["findings"]] == [r.get("numbers") for r in parallel["findings"]]
    assert len(parallel["findings"]) == 6  # three verdicts (a, b, pooled) and three skips (no --ratings)
    assert parallel["outcome_counts"] == {"passed": 3, "skipped": 3}


def test_pytest_cache_clear_leaves_the_result_cache_and_our_own_switch_empties_it(pytester: pytest.Pytester, tmp_path):
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
    assert cache.load(key) is not None  # hours of attributions survive pytest's own switch
    pytester.runpytest("--shiftcheck-clear-cache").assert_outcomes(passed=1)
    assert cache.load(key) is None


def test_a_bad_option_replaces_the_previous_report(pytester: pytest.Pytester):
    report = pytester.path / "shiftcheck-report"
    report.mkdir()
    (report / "report.md").write_text(f"| {DENSITY} | pooled | PASS |")
    (report / "results.json").write_text("{}")
    (report / "figures").mkdir()
    (report / "figures" / "saliency_base_x.png").write_bytes(b"an earlier run's figure")
    (report / "notes.txt").write_text("the user's own file")
    result = pytester.runpytest("--alpha", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    md = (report / "report.md").read_text()
    assert "PASS" not in md and "stopped before any test ran" in md and "--alpha" in md
    assert not (report / "figures").exists() and (report / "notes.txt").read_text() == "the user's own file"


def test_the_plugins_attribution_modes_are_the_probes():
    from shiftcheck.fixtures.options import ATTRIBUTION_MODES
    from shiftcheck.probes.importance import MODES

    assert ATTRIBUTION_MODES == MODES


@pytest.mark.parametrize("visible,worker,expected", [
    (["0", "1"], 0, "0"), (["0", "1"], 3, "1"),
    (["4", "7", "2"], 1, "7"),  # the caller's own ids, not 0..n-1
    (["GPU-aa11", "GPU-bb22"], 2, "GPU-aa11"),  # UUIDs pass through
])
def test_each_worker_gets_one_entry_of_the_callers_visible_devices(visible, worker, expected):
    from shiftcheck.fixtures.plugin import worker_visible_devices

    assert worker_visible_devices(visible, worker) == expected


def test_auto_workers_follow_the_visible_gpu_list(pytester: pytest.Pytester, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    (pytester.path / "pyproject.toml").write_text('[project]\nname = "shiftcheck"\n')  # the suite's own folder
    (pytester.path / "behaviour_tests").mkdir()
    (pytester.path / "behaviour_tests" / "test_x.py").write_text("def test_x():\n    pass\n")
    out = pytester.runpytest_subprocess("behaviour_tests", "-n", "auto", "-p", "no:cacheprovider").stdout.str()
    assert "created: 3/3 workers" in out


def test_junit_xml_carries_the_verdict_properties(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        from shiftcheck.probes.findings import Verdict

        def test_claim(shiftcheck_expect):
            shiftcheck_expect(Verdict("f", "pooled", "c", "t", "greater", 0.05, "pass", "o", "e",
                                      numbers={"p_value": 0.01, "effect": 0.7, "a_n": 9, "b_n": 9}))
        """
    )
    pytester.runpytest("--junitxml=out.xml", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    xml = (pytester.path / "out.xml").read_text()
    for prop in ('name="shiftcheck_finding" value="claim"',  # the test's name, not the verdict's "f"
                 'name="shiftcheck_p_value" value="0.01"', 'name="shiftcheck_effect" value="0.7"',
                 'name="shiftcheck_verdict" value="pass"', 'name="shiftcheck_a_n" value="9"'):
        assert prop in xml, prop
