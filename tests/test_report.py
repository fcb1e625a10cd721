"""The report on its own: report.md renders as Markdown whose every table row has its header's
columns, the counts are pytest's, information verdicts stand apart, and a run replaces only what
shiftcheck wrote in its folder. Built from constructed records (no model, no pytest run)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from shiftcheck.fixtures.report import (SELF_COMPARISON_FAILS, SELF_COMPARISON_PASSES, cell, clear_report,
                                        power_remedy, summary_lines, write_report, write_stopped_report)
from shiftcheck.probes.findings import Verdict

MULTI_LINE = "level | base | tuned\nphonology | 0.8 ± 0.0 | 0.9 ± 0.1\nsyntax | 1 | 2"
SETTINGS = {"alpha": 0.05, "base": "b", "tuned": "t", "dtype": "float32", "sample": None, "max_prompts": None}


def record(test: str, group: str, outcome: str, enforced: bool = True, **text: str) -> dict:
    v = Verdict("old_name", group, "the claim", "Welch", "greater", 0.05, outcome,
                text.get("obtained", "tuned 0.2 vs base 0.1"), text.get("expected", "tuned higher"),
                reason=text.get("reason", "" if outcome == "pass" else "not higher"),
                hint="" if outcome == "pass" else "try more prompts", numbers={"p_value": 0.01, "effect": 0.5})
    return dict(v.to_dict(), finding="old_name", test=test, test_name=test.split("::")[-1],
                verdict=outcome == "pass", enforced=enforced)


def outcome(test: str, result: str, reason: str = "") -> tuple[str, dict]:
    return test, {"test": test, "outcome": result, "when": "call" if result != "error" else "setup", "reason": reason}


def tables(md: str) -> list[tuple[int, list[int], list[str]]]:
    """Per rendered table: header columns, each body row's cell count, and the body rows' first cells."""
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    out, cols, row, cells, firsts, in_head = [], 0, 0, [], [], False
    for tok in tokens:
        if tok.type == "table_open":
            cols, cells, firsts = 0, [], []
        elif tok.type == "thead_open":
            in_head = True
        elif tok.type == "thead_close":
            in_head = False
        elif tok.type == "tr_open":
            row = 0
        elif tok.type in ("th_open", "td_open"):
            row += 1
        elif tok.type == "inline" and not in_head and row == 1:
            firsts.append(tok.content)
        elif tok.type == "tr_close":
            if in_head:
                cols = row
            else:
                cells.append(row)
        elif tok.type == "table_close":
            out.append((cols, cells, firsts))
    return out


DENSITY = "behaviour_tests/test_importance_density.py::test_tuned_density_on_instructions_exceeds_base"
FOLLOWED = "behaviour_tests/test_importance_density.py::test_followed_responses_carry_more_instruction_density[pooled]"
VERBS = "behaviour_tests/test_attention_verbs.py::test_instruction_verbs_gain_pairs_in_the_low_layers"
LEVELS = "behaviour_tests/test_ffn_concepts.py::test_linguistic_level_mix_unchanged_after_tuning"


def a_run() -> tuple[list[dict], dict]:
    """Two density groups (one pass, one fail with multi-line text from older code), a verb test whose
    g0 is asserted and g1-g3 are information, a skip and an error."""
    records = [
        record(f"{DENSITY}[pooled]", "pooled", "pass"),
        record(f"{DENSITY}[lima]", "lima", "fail", obtained=MULTI_LINE, reason="a | pipe\nand a second line"),
        record(f"{VERBS}[g0]", "g0", "fail"),
        *[record(f"{VERBS}[g0]", f"g{g}", "fail", enforced=False, obtained=MULTI_LINE) for g in (1, 2, 3)],
    ]
    outcomes = dict([outcome(f"{DENSITY}[pooled]", "passed"), outcome(f"{DENSITY}[lima]", "failed"),
                     outcome(f"{VERBS}[g0]", "failed"), outcome(FOLLOWED, "skipped", "no ratings: pass --ratings"),
                     outcome(LEVELS, "error", "shiftcheck could not resolve the checkpoints: boom")])
    return records, outcomes


def test_every_table_row_of_the_report_has_the_headers_columns_and_no_text_leaks(tmp_path):
    records, outcomes = a_run()
    md_path = write_report(tmp_path, records, outcomes, {}, SETTINGS, 1)
    md = md_path.read_text()
    found = tables(md)
    assert len(found) >= 3  # compared, findings, information
    for cols, rows, firsts in found:
        assert rows and all(n == cols for n in rows), (cols, rows)
        assert not any(first.startswith(("phonology", "syntax", "and a second")) for first in firsts), firsts
    findings = next(firsts for cols, rows, firsts in found if "tuned_density_on_instructions_exceeds_base" in firsts)
    assert len(findings) == 5 and "old_name" not in md  # one row per test, named after the test
    # the multi-line text is under the table, whole
    assert "phonology | 0.8 ± 0.0 | 0.9 ± 0.1" in md.split("### Details", 1)[1]
    assert "a second line" in md.split("### Details", 1)[1]


def test_counts_are_pytests_and_information_is_counted_apart(tmp_path):
    records, outcomes = a_run()
    md = write_report(tmp_path, records, outcomes, {}, SETTINGS, 1).read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["outcome_counts"] == {"failed": 2, "passed": 1, "skipped": 1, "error": 1}
    assert "**This run:** 2 failed, 1 passed, 1 skipped, 1 error; 3 information verdict(s)" in md
    assert [(e["group"], e["outcome"]) for e in results["information"]] == [("g1", "fail"), ("g2", "fail"),
                                                                            ("g3", "fail")]
    assert {e["finding"] for e in results["findings"]} == {
        "tuned_density_on_instructions_exceeds_base", "followed_responses_carry_more_instruction_density",
        "instruction_verbs_gain_pairs_in_the_low_layers", "linguistic_level_mix_unchanged_after_tuning"}
    assert len(results["findings"]) == len(outcomes)  # one row per test: the information is not a row
    assert "## Information (not asserted)" in md


def test_a_test_that_only_records_information_passes_as_pytest_says_and_says_so(tmp_path):
    records = [record(f"{VERBS}[g2]", "g2", "fail", enforced=False)]
    results_md = write_report(tmp_path, records, dict([outcome(f"{VERBS}[g2]", "passed")]), {}, SETTINGS, 0)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["outcome_counts"] == {"passed": 1}
    (entry,) = results["findings"]
    assert entry["information_only"] is True and entry["pytest_outcome"] == "passed"
    assert "information only" in results_md.read_text()


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_a_cell_is_one_line_and_its_pipes_cannot_split_the_row(text):
    md = f"| a | b |\n|---|---|\n| {cell(text)} | x |\n"
    ((cols, rows, _),) = tables(md)
    assert "\n" not in cell(text) and rows == [cols] == [2]


def test_the_same_checkpoint_note_names_what_must_fail_and_what_must_pass(tmp_path):
    ctx = {"checkpoints": {r: {"spec": "x", "fingerprint": "sha256:1"} for r in ("base", "tuned")}}
    md = write_report(tmp_path, [], {}, ctx, SETTINGS, 0).read_text()
    note = next(line for line in md.splitlines() if line.startswith("**Same checkpoint:**"))
    fail_part, pass_part = note.split("must fail")
    assert all(name in fail_part for name in SELF_COMPARISON_FAILS)
    assert all(name in pass_part for name in SELF_COMPARISON_PASSES) and "must pass" in pass_part
    assert "every finding is expected to fail" not in md


def test_a_cause_shared_by_several_tests_is_printed_once_in_the_summary():
    cause = "shiftcheck could not resolve the checkpoints: checkpoint 'README.md' exists but is not a directory"
    outcomes = dict(outcome(f"{DENSITY}[{g}]", "error", cause) for g in ("a", "b", "c", "pooled"))
    text = "\n".join(summary_lines([], outcomes, {}, SETTINGS))
    assert text.count(cause) == 1 and text.count("the same cause as") == 3
    assert "counts: 4 errors" in text


@pytest.mark.parametrize("sample,max_prompts,expected,absent", [
    (None, None, "--prompts FILE", "--sample"),
    (20, None, "raise --sample (now 20)", "--max-prompts"),
    (None, 8, "raise --max-prompts (now 8)", "--sample"),
])
def test_the_power_warning_names_the_remedy_that_applies_in_the_summary_and_the_report(
        tmp_path, sample, max_prompts, expected, absent):
    assert expected in power_remedy(sample, max_prompts) and absent not in power_remedy(sample, max_prompts)
    ctx = {"power_warnings": {"warnings": ["the observed effect g = 0.10 is below the detectable g = 0.30"]}}
    s = dict(SETTINGS, sample=sample, max_prompts=max_prompts)
    md = write_report(tmp_path, [], {}, ctx, s, 0).read_text()
    line = next(x for x in md.splitlines() if x.startswith("- power warning:"))
    assert "g = 0.10" in line and expected in line and absent not in line
    assert any(expected in x for x in summary_lines([], {}, ctx, s) if x.startswith("power warning:"))


def test_a_run_replaces_only_what_shiftcheck_wrote(tmp_path):
    report = tmp_path / "rep"
    (report / "figures").mkdir(parents=True)
    (report / "figures" / "saliency_base_old_model.png").write_bytes(b"old")
    (report / "notes.md").write_text("mine")
    (report / "baseline.json").write_text("{}")
    records, outcomes = a_run()
    write_report(report, records, outcomes, {}, SETTINGS, 1)
    assert not (report / "figures" / "saliency_base_old_model.png").exists()
    assert (report / "notes.md").read_text() == "mine" and (report / "baseline.json").read_text() == "{}"
    assert sorted(p.name for p in report.iterdir()) == ["baseline.json", "notes.md", "report.md", "results.json"]


def test_a_stopped_run_removes_the_earlier_figures_too(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "importance_density.png").write_bytes(b"old")
    (tmp_path / "report.md").write_text("| x | pooled | PASS |")
    (tmp_path / "keep.txt").write_text("k")
    write_stopped_report(tmp_path, "--alpha must be a number with 0 < alpha < 1")
    assert not (tmp_path / "figures").exists() and (tmp_path / "keep.txt").read_text() == "k"
    assert "stopped before any test ran" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["findings"] == []


def test_clearing_an_empty_folder_is_harmless(tmp_path):
    clear_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_records_nothing_says_so(tmp_path):
    md = write_report(tmp_path, [], {}, {}, SETTINGS, 5).read_text()
    assert "no shiftcheck test ran" in md and "nothing was recorded" in md


def test_figure_token_labels_are_text():
    from shiftcheck.probes.figures import layer_bin_label, token_text

    assert [token_text(t) for t in ("Ċ", "Ġthe", "▁the", "<0x0A>", "âĢĻ", "Ġ", "cat")] == [
        "\\n", " the", " the", "\\n", "\u2019", "␣", "cat"]
    assert [layer_bin_label(g, 4, 30) for g in (0, 7)] == ["0-3", "28-29"]
    assert layer_bin_label(7, 4, 29) == "28"


def test_the_density_figure_draws_constant_zero_scores(tmp_path):
    from shiftcheck.probes.figures import mean_ci, score_distributions

    path = score_distributions({"pooled": {"base": [0.0] * 20, "tuned": [0.0] * 19 + [0.4]}}, tmp_path / "d.png")
    assert path.stat().st_size > 5000
    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 2.4841, abs=1e-3) and high == pytest.approx(2 + 2.4841, abs=1e-3)


def test_the_message_for_a_file_that_is_no_checkpoint_lists_what_is_accepted(tmp_path):
    from shiftcheck.probes.models.fingerprint import FingerprintError, fingerprint_checkpoint

    readme = tmp_path / "README.md"
    readme.write_text("x")
    with pytest.raises(FingerprintError) as info:
        fingerprint_checkpoint(str(readme))
    assert all(s in str(info.value) for s in (".gguf file", "checkpoint folder", "hub id", "world:NAME"))


def test_the_models_depth_comes_from_the_context():
    from shiftcheck.fixtures.report import context_n_layers

    assert context_n_layers({"attention": {"pair_list_change": [0.1] * 30}}) == 30
    assert context_n_layers({"ffn": {"cumulative_variance": {"base": {str(k): [1.0] for k in range(30)}}}}) == 30
    assert context_n_layers({}) is None
