"""The embedded world's verdict table (issue 5), run through the real behaviour tests:

| pair | density test |
|---|---|
| good vs base | passes, p < 0.01 |
| bad-copy vs base | fails |
| bad-cpt vs base | fails |
| null vs base | fails |

Slow (the first test builds the world, about two minutes on two cores); CI runs them. All tests
share one result cache, so the world and the base model's attributions are computed once per run
even under xdist (FileLock).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("world")]
BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour_tests" / "test_importance_density.py"


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory) -> Path:
    shared = os.environ.get("SHIFTCHECK_CACHE")
    return Path(shared) if shared else tmp_path_factory.getbasetemp().parent / "shiftcheck-world-cache"


def run_pair(pytester: pytest.Pytester, cache: Path, tuned: str) -> tuple[pytest.RunResult, dict]:
    shutil.copy(BEHAVIOUR, pytester.path / BEHAVIOUR.name)
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(cache))
    result = pytester.runpytest("--tuned", tuned, "-p", "no:cacheprovider", "-k", "density_on_instructions")
    results = json.loads((pytester.path / "shiftcheck-report" / "results.json").read_text())
    return result, {f["group"]: f for f in results["findings"]}


def test_good_tune_passes_with_p_below_001(pytester, world_cache):
    result, findings = run_pair(pytester, world_cache, "world:good")
    assert result.ret == 0, result.stdout.str()
    pooled = findings["pooled"]
    assert pooled["verdict"] is True
    assert pooled["numbers"]["p_value"] < 0.01
    assert pooled["numbers"]["hedges_g"] > 0.5


@pytest.mark.parametrize("tuned", ["world:bad-copy", "world:bad-cpt", "world:null"])
def test_bad_tunes_and_the_base_itself_fail(pytester, world_cache, tuned):
    result, findings = run_pair(pytester, world_cache, tuned)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert findings["pooled"]["verdict"] is False
    assert "the tuned model puts more importance density on instruction words than the base" in result.stdout.str()
