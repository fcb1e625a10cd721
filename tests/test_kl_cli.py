"""``shiftcheck kl A B`` on tiny checkpoints: the per-source table, cached reruns, exit status 3 for
a pair that behaves identically, and one line for a bad checkpoint."""

from __future__ import annotations

import json

from builders import tiny_llama

from shiftcheck.cli import main
from shiftcheck.probes.release.casts import cast_checkpoint

PROMPTS = [("a0", "alpha", "write a short poem about the sea ."), ("a1", "alpha", "list the red house"),
           ("b0", "beta", "explain why the cat is happy ?")]


def _prompts(path):
    path.write_text("".join(json.dumps({"id": i, "source": s, "prompt": t, "instruction_char_spans": [[0, 4]]}) + "\n"
                            for i, s, t in PROMPTS))
    return path


def test_kl_table_per_source_then_identical_copy_exits_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "cache"))
    a, b = tiny_llama(tmp_path, seed=0, name="a"), tiny_llama(tmp_path, seed=1, name="b")
    prompts = str(_prompts(tmp_path / "p.jsonl"))
    args = ["kl", str(a), str(b), "--prompts", prompts, "--max-new-tokens", "4", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.split()[:1] in (["alpha"], ["beta"],
                                                                                                  ["pooled"])}
    assert [rows[g][1] for g in ("alpha", "beta", "pooled")] == ["2", "1", "3"]  # prompts per group
    assert float(rows["pooled"][3]) > 1e-3
    assert main(args) == 0  # a rerun reads the cache: no stage computes
    assert "kl tuned" not in capsys.readouterr().out
    copy = cast_checkpoint(a, tmp_path / "a-fp16", "fp16")
    assert main(["kl", str(a), str(copy), "--prompts", prompts, "--max-new-tokens", "4", "--device", "cpu"]) == 3
    assert "behave identically" in capsys.readouterr().out
    assert main(["kl", str(a), str(a), "--prompts", prompts, "--device", "cpu"]) == 3
    assert "same checkpoint" in capsys.readouterr().out
    assert main(["kl", str(a), str(tmp_path / "missing"), "--prompts", prompts]) == 2
    assert capsys.readouterr().err.startswith("shiftcheck kl: ")
