"""Finding 2 through the replay path (``--replay-pairs-base/--replay-pairs-tuned``), with constructed
files in the authors' format: the one-head case of issue 19 must not pass, a directed change over many
heads passes, and the authors' multi-model, byte-split file is read by model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from attention_cases import directed_case, one_head_case, write_tsv

from shiftcheck.probes import words
from shiftcheck.probes.attention.io import (PairsFormatError, models_in, pair_parts, read_pairs_tsv, read_replay,
                                            split_by_model)

pytest_plugins = ["pytester"]

INS = list(words.instruction_verbs().words)
CTL = list(words.control_verbs().words[:40])


@pytest.fixture
def suite(pytester, tmp_path_factory):
    from builders import tiny_llama

    src = Path(__file__).resolve().parents[1] / "behaviour_tests" / "test_attention_verbs.py"
    shutil.copy(src, pytester.path / src.name)
    pytester.makeini("[pytest]\n")
    # the run's plan resolves --base/--tuned even when finding 2 replays: give it a tiny checkpoint rather
    # than the embedded world, which it would build (minutes); replay never loads it
    root = tmp_path_factory.getbasetemp() / "attention-replay-models"
    if not (root / "m").is_dir():
        tiny_llama(root, name="m")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path_factory.getbasetemp() / "attention-replay-cache"))
    return pytester, str(root / "m")


def _run(suite, base: str, tuned: str, *extra: str):
    suite, model = suite
    result = suite.runpytest_subprocess("--replay-pairs-base", base, "--replay-pairs-tuned", tuned, "--base", model,
                                        "--tuned", model, "--device", "cpu", "-p", "no:cacheprovider", "-rs", *extra)
    return result, json.loads((suite.path / "shiftcheck-report" / "results.json").read_text())


def test_one_head_gaining_five_instruction_verbs_does_not_pass_through_the_real_behaviour_test(suite):
    b, t = one_head_case(INS, CTL)
    write_tsv(suite[0].path / "base.tsv", {"llama": b})
    write_tsv(suite[0].path / "tuned.tsv", {"vicuna": t})
    result, report = _run(suite, "base.tsv", "tuned.tsv")
    result.assert_outcomes(failed=1)
    (f,) = report["findings"]
    assert f["finding"] == "instruction_verbs_gain_pairs_in_the_low_layers" and f["outcome"] == "inconclusive"
    assert "1 distinct head cluster(s) (need 10)" in f["reason"]
    assert f["numbers"]["instruction_mean"] == 1.0  # the paper's numbers are kept, as information
    # with the cluster minimum lowered to one, the statistic itself fails it
    result, report = _run(suite, "base.tsv", "tuned.tsv", "--min-head-support", "1")
    result.assert_outcomes(failed=1)
    (f,) = report["findings"]
    assert f["outcome"] == "fail" and "lower bound" in f["reason"]


def test_a_multi_model_file_replays_by_model_and_a_directed_change_passes(suite):
    b, t = directed_case(INS[:20], CTL, p_up=0.85)
    write_tsv(suite[0].path / "both.tsv", {"llama": b, "vicuna": t})
    result, report = _run(suite, "both.tsv::llama", "both.tsv::vicuna")
    result.assert_outcomes(passed=1)
    (f,) = report["findings"]
    assert f["outcome"] == "pass" and f["numbers"]["bootstrap_lcb_share"] > 0.5
    ctx = json.dumps(report)
    assert "table3" in ctx and "cluster_test" in ctx  # groups 1-3 as information in the report context


def test_a_multi_model_file_without_a_model_is_refused_with_the_syntax(tmp_path):
    b, t = directed_case(INS[:5], CTL[:5], n_layers=4, n_heads=2)
    path = write_tsv(tmp_path / "both.tsv", {"llama": b, "vicuna": t})
    with pytest.raises(PairsFormatError, match=r"holds models \['llama', 'vicuna'\].*::MODEL"):
        read_pairs_tsv(path, "x")
    with pytest.raises(PairsFormatError, match="no rows with Model 'alpaca'"):
        read_replay(f"{path}::alpaca", "x")


def _split_bytes(path: Path, n_parts: int) -> list[Path]:
    """``split -n``-style byte parts (aa, ab, ...): boundaries fall inside rows and inside UTF-8 characters."""
    data = path.read_bytes()
    size = -(-len(data) // n_parts)
    parts = []
    for i in range(n_parts):
        part = path.with_name(path.name.replace("words.tsv", "words_split.tsv") + "a" + "abcdefghijklmnopqrstuvwxyz"[i])
        part.write_bytes(data[i * size : (i + 1) * size])
        parts.append(part)
    return parts


def test_byte_split_parts_of_the_authors_file_split_by_model_equal_the_whole(tmp_path):
    b, t = directed_case(INS[:8], CTL[:8], n_layers=4, n_heads=4)
    b[(0, 0)] = b[(0, 0)] + [("write", "café"), ("write", "naïve")]  # multi-byte characters to cut through
    t[(0, 0)] = t[(0, 0)] + [("write", "café")]
    whole = write_tsv(tmp_path / "bilinear_words.tsv", {"llama": b, "vicuna": t})
    parts = _split_bytes(whole, 7)
    assert any(not p.read_bytes().endswith(b"\n") for p in parts[:-1])  # a part ends mid-row
    assert pair_parts(tmp_path / "bilinear_words_split.tsv") == parts  # the prefix finds the parts, in order
    assert models_in(tmp_path / "bilinear_words_split.tsv") == ["llama", "vicuna"]
    out = split_by_model(parts, tmp_path / "by_model")
    assert sorted(out) == ["llama", "vicuna"]
    for model in ("llama", "vicuna"):
        from_parts = read_replay(f"{tmp_path / 'bilinear_words_split.tsv'}::{model}", model)
        from_split = read_pairs_tsv(out[model], model)
        from_whole = read_pairs_tsv(whole, model, model=model)
        for key in from_whole.pairs:
            assert from_parts.pair_set(*key) == from_split.pair_set(*key) == from_whole.pair_set(*key)
    assert ("café", "write") in from_whole.pair_set(0, 0)  # vicuna keeps café, loses naïve


def test_rows_the_authors_reader_skips_are_skipped_and_a_bad_header_is_refused(tmp_path):
    good = write_tsv(tmp_path / "a.tsv", {"llama": {(0, 0): [("write", "poem")]}})
    text = good.read_text() + "llama\t7B\t0\tQK\tbroken row\n" + good.read_text()  # a short row, a repeated header
    good.write_text(text)
    r = read_pairs_tsv(good, "x")
    assert r.pair_set(0, 0) == {("poem", "write")}
    (tmp_path / "b.tsv").write_text("Word\tScore\nx\t1\n")
    with pytest.raises(PairsFormatError, match="header"):
        read_pairs_tsv(tmp_path / "b.tsv", "x")
