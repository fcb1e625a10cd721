"""The plugin decides what is shiftcheck's by its own options and fixtures, never by a folder's
name, and the report it writes agrees with pytest: counts, one name per finding, one printed cause.
pytester runs with small constructed tests (no model is loaded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_report import tables

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[1]

PLAIN = """
def test_plain():
    assert 1

def test_other():
    assert 2 > 1
"""

# passed, failed, skipped, error (a fixture raising in setup), and a passed test that only records information
MIXED = '''
import pytest
from shiftcheck.probes.findings import Verdict


def verdict(outcome, group="pooled", obtained="tuned 0.2 vs base 0.1"):
    return Verdict("an_old_name", group, "the claim", "Welch", "greater", 0.05, outcome, obtained, "tuned higher",
                   reason="" if outcome == "pass" else "not higher", numbers={"p_value": 0.01})


def test_holds(shiftcheck_expect):
    shiftcheck_expect(verdict("pass"))


def test_not_shown(shiftcheck_expect):
    shiftcheck_expect(verdict("fail", obtained="level | base\\nphonology | 0.8 ± 0.0"))


def test_skipped(shiftcheck_expect):
    pytest.skip("no ratings: pass --ratings")


@pytest.fixture
def broken(shiftcheck_settings):
    raise RuntimeError("a broken fixture")


def test_errored(broken, shiftcheck_expect):
    pass


@pytest.mark.parametrize("group", ["g0"])
def test_with_information(group, shiftcheck_expect):
    shiftcheck_expect(verdict("pass", group))
    for g in ("g1", "g2"):
        shiftcheck_expect(verdict("fail", g), enforce=False)
'''


def _pytest_counts(result: pytest.RunResult) -> dict[str, int]:
    counts = result.parseoutcomes()
    return {{"errors": "error"}.get(k, k): v for k, v in counts.items() if k not in ("seconds",)}


def test_a_plain_project_in_a_folder_named_shiftcheck_is_left_alone(pytester: pytest.Pytester, monkeypatch):
    project = pytester.mkdir("shiftcheck")  # the default name of a clone
    (project / "test_own.py").write_text(PLAIN)
    (project / "behaviour_tests").mkdir()  # a folder name of ours, in someone else's project
    (project / "behaviour_tests" / "test_more.py").write_text(PLAIN)
    monkeypatch.chdir(project)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert "shiftcheck summary" not in out and "shiftcheck plan" not in out and "SKIP" not in out
    assert not (project / "shiftcheck-report").exists()


def test_the_projects_own_tests_in_a_clone_never_write_the_main_jobs_report(pytester: pytest.Pytester, monkeypatch):
    clone = pytester.mkdir("shiftcheck")
    (clone / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())  # testpaths = behaviour_tests
    (clone / "tests").mkdir()
    (clone / "tests" / "test_unit.py").write_text(PLAIN)
    report = clone / "shiftcheck-report"
    report.mkdir()
    (report / "report.md").write_text("the main job's report")
    monkeypatch.chdir(clone)
    result = pytester.runpytest("tests", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "shiftcheck summary" not in result.stdout.str()
    assert (report / "report.md").read_text() == "the main job's report"


def test_this_sessions_own_tests_are_not_shiftcheck_tests(request: pytest.FixtureRequest):
    """The project's tests use the plugin only inside pytester runs, so a run of tests/ marks no test
    as shiftcheck's and writes no report at the repository root."""
    own = [item.nodeid for item in request.session.items if item.get_closest_marker("shiftcheck")]
    assert own == []


def test_the_reports_counts_are_pytests_and_its_tables_render(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_mixed=MIXED)
    result = pytester.runpytest("-p", "no:cacheprovider", "--junitxml=out.xml")
    counts = _pytest_counts(result)
    assert counts == {"passed": 2, "failed": 1, "skipped": 1, "error": 1}
    results = json.loads((pytester.path / "shiftcheck-report" / "results.json").read_text())
    assert results["outcome_counts"] == counts
    assert [(e["finding"], e["group"], e["outcome"]) for e in results["information"]] == [
        ("with_information", "g1", "fail"), ("with_information", "g2", "fail")]
    assert {e["finding"] for e in results["findings"]} == {"holds", "not_shown", "skipped", "errored",
                                                           "with_information"}
    md = (pytester.path / "shiftcheck-report" / "report.md").read_text()
    assert "2 failed" not in md and "1 failed, 2 passed, 1 skipped, 1 error; 2 information verdict(s)" in md
    for cols, rows, firsts in tables(md):
        assert all(n == cols for n in rows) and not any(f.startswith("phonology") for f in firsts)
    summary = result.stdout.str().split("shiftcheck summary", 1)[1]
    assert "counts: 1 failed, 2 passed, 1 skipped, 1 error; 2 information verdict(s)" in summary
    assert "an_old_name" not in md + summary  # one name: the test's
    xml = (pytester.path / "out.xml").read_text()
    assert 'name="shiftcheck_finding" value="not_shown"' in xml


def test_a_bad_checkpoint_prints_its_cause_once(pytester: pytest.Pytester, tmp_path):
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "cache"))
    (pytester.path / "README.md").write_text("not a model")
    pytester.makepyfile("\n".join(
        f"def test_needs_models_{i}(checkpoint_refs):\n    pass\n" for i in range(4)))
    result = pytester.runpytest("--base", "README.md", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=4)
    out = result.stdout.str()
    cause = "exists but is not a directory or a .gguf file"
    # pytest's own one-line recap repeats each error's first line, cut to the terminal width unless
    # $CI is set; it is not ours, so the count leaves it out.
    ours = out.split("short test summary info", 1)[0]
    assert ours.count(cause) == 2, out  # once where pytest shows the error, once in the shiftcheck summary
    assert ours.split("shiftcheck summary", 1)[1].count(cause) == 1
    assert len(re.findall(r"the same cause as", ours)) >= 6  # three in pytest's errors, three in the summary
    assert all(s in out for s in ("world:NAME", "hub id", ".gguf file"))


def test_a_shiftcheck_run_that_records_nothing_still_replaces_the_report(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_mixed=MIXED)
    report = pytester.path / "shiftcheck-report"
    (report / "figures").mkdir(parents=True)
    (report / "figures" / "old.png").write_bytes(b"old")
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "nothing_matches")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert not (report / "figures").exists()
    assert "nothing was recorded" in (report / "report.md").read_text()


@pytest.mark.parametrize("baseline", ["shiftcheck-report", "shiftcheck-report/results.json"])
def test_a_baseline_that_this_run_would_replace_is_refused_untouched(pytester: pytest.Pytester, baseline):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_mixed=MIXED)
    report = pytester.path / "shiftcheck-report"
    report.mkdir()
    (report / "results.json").write_text('{"vetted": true}')
    result = pytester.runpytest("-p", "no:cacheprovider", "--baseline", baseline)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is what this run replaces in --report-dir" in result.stderr.str()
    assert (report / "results.json").read_text() == '{"vetted": true}'
