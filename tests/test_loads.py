"""One load per checkpoint per run: all three findings computed on a tiny lexical pair (4 layers,
3000+ GloVe words, so findings 2 and 3 are not toy scale) load each checkpoint exactly once, and
results.json records it with the time of each stage. A rerun finds everything cached and loads
nothing."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour_tests"


@pytest.fixture(scope="module")
def lexical_pair(tmp_path_factory):
    from lexical import add_noise, lexical_model, lexical_vocab, save_lexical

    from shiftcheck.probes import words

    root = tmp_path_factory.mktemp("lexical-loads")
    kv = words.load_glove()
    base, tok = lexical_model(kv, lexical_vocab(kv))
    tuned = copy.deepcopy(base)
    # large enough that the pair does not "behave identically" (KL ~0.06 nats/token, as bad-cpt vs base;
    # a norm of 1 gives ~1e-6): else the KL preflight skips the base's attribution and pair lists
    add_noise(tuned, 50.0, seed=3)
    return save_lexical(base, tok, root / "base"), save_lexical(tuned, tok, root / "tuned")


def _run(pytester: pytest.Pytester, base: Path, tuned: Path):
    result = pytester.runpytest_subprocess(
        "--base", str(base), "--tuned", str(tuned), "--device", "cpu", "--max-prompts", "1",
        "--max-new-tokens", "2", "--ffn-components", "4", "--allow-inconclusive", "-p", "no:cacheprovider", "-rs")
    return result, json.loads((pytester.path / "shiftcheck-report" / "results.json").read_text())


@pytest.mark.slow  # two suite runs on a 4-layer, 3000-word pair: about 2 minutes on a shared 2-core box
def test_three_findings_load_each_checkpoint_once_then_none_when_cached(pytester, tmp_path_factory, lexical_pair):
    for path in sorted(BEHAVIOUR.glob("test_*.py")):
        shutil.copy(path, pytester.path / path.name)
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path_factory.mktemp("loads-cache")))
    result, first = _run(pytester, *lexical_pair)
    out = result.stdout.str()
    plan = next(line for line in out.splitlines() if line.startswith("shiftcheck plan:"))
    for probe in ("importance", "attention", "ffn"):  # all three planned, none skipped as toy scale
        assert f"{probe}: " in plan, plan
    assert "toy scale" not in out
    assert first["kl"]["identical"] is False and not first["kl"]["skipped"], first["kl"]["pooled"]
    assert first["loads"] == {"base": 1, "tuned": 1}
    stages = first["stages"]
    for stage in ("resolve", "inspect", "load base", "load tuned", "importance base", "attention tuned", "ffn base"):
        assert stages[stage] > 0, stages
    _, second = _run(pytester, *lexical_pair)
    assert second["loads"] == {"base": 0, "tuned": 0}
    assert "load base" not in second["stages"]
