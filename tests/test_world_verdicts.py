"""The shipped world's verdict table (issues 5 and 12), run through the real behaviour tests:

| pair | density test |
|---|---|
| good vs base | passes, p < 0.01 |
| bad-copy vs base | fails |
| bad-cpt vs base | fails |
| null vs base | fails |

The seed-0 world is shipped as package data (probes/world/shipped/seed0), so nothing is built here:
the four runs attribute 140 prompts with tiny models and take seconds. World bytes depend on the
machine, which is why the world is shipped rather than rebuilt: these are the verdicts of the exact
checkpoints every user gets (VERDICTS.md has the table over seeds and thread counts).
All tests share one result cache, so the base model's attributions are computed once per run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shiftcheck.probes.world.build import load_manifest, shipped_root, shipped_world

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.xdist_group("world")]
BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour_tests" / "test_importance_density.py"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Attribute on one thread: with two OpenMP threads on cores that other jobs share, the runs
    were several times slower (measured: 8.5 min for this file on a busy 2-core machine)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory) -> Path:
    # A cache of its own: the verdicts are recomputed from the shipped checkpoints on every run.
    return tmp_path_factory.getbasetemp().parent / "shiftcheck-world-verdicts-cache"


def run_pair(pytester: pytest.Pytester, cache: Path, tuned: str) -> tuple[pytest.RunResult, dict]:
    shutil.copy(BEHAVIOUR, pytester.path / BEHAVIOUR.name)
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(cache))
    result = pytester.runpytest("--tuned", tuned, "-p", "no:cacheprovider", "-k", "density_on_instructions")
    results = json.loads((pytester.path / "shiftcheck-report" / "results.json").read_text())
    assert "shiftcheck world build" not in result.stderr.str(), "the shipped world must not be built"
    return result, {f["group"]: f for f in results["findings"]}


def test_the_default_pair_is_the_shipped_world():
    manifest = shipped_world(0)
    assert manifest is not None and manifest.root == shipped_root(0)
    assert load_manifest(shipped_root(0)).accuracy["good"] >= 0.9


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
