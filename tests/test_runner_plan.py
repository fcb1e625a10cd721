"""The runner's plan: every planned probe runs while its checkpoint is resident, so each checkpoint
is loaded once per process whatever the number of probes, and split work (xdist workers, shards)
loads each checkpoint at most once per process."""

from __future__ import annotations

import pytest

from builders import DEFAULT_WORDS, tiny_llama
from shiftcheck.probes import runner as session
from shiftcheck.probes.cache import ResultCache
from shiftcheck.probes.ffn import FfnConfig, FfnProbe
from shiftcheck.probes.importance import ImportanceConfig
from shiftcheck.probes.importance.probe import ImportanceProbe
from shiftcheck.probes.models.loading import LoadOptions
from shiftcheck.probes.prompts import Prompt

PROMPTS = tuple(Prompt(f"p{i}", "toy", text, ((0, 5),)) for i, text in enumerate(
    ["write a short poem", "list the red house", "explain the question"]))


@pytest.fixture
def pair(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    refs = [session.resolve_ref(label, str(tiny_llama(tmp_path, seed=s, name=label)), cache.root)
            for label, s in (("base", 0), ("tuned", 1))]
    return refs, cache


def _probes():
    importance = ImportanceProbe(PROMPTS, ImportanceConfig(max_new_tokens=2), shard_size=1)  # 3 units
    ffn = FfnProbe(DEFAULT_WORDS, 2, FfnConfig(n_components=4, top_k=3, words_digest="toy"), layers_per_unit=1)
    return importance, ffn  # 3 + 2 units per model


def _runner(pair, plan=()):
    refs, cache = pair
    return session.PairRunner(refs[0], refs[1], LoadOptions(device="cpu"), cache, plan=tuple(plan))


def test_two_planned_probes_load_each_checkpoint_once(pair, monkeypatch):
    loaded: list[str] = []
    real = session.load_checkpoint
    monkeypatch.setattr(session, "load_checkpoint", lambda loc, opt, **kw: loaded.append(loc) or real(loc, opt, **kw))
    importance, ffn = _probes()
    runner = _runner(pair, (importance, ffn))
    ffn_runs = runner.run(ffn)  # the first call computes the whole plan
    importance_runs = runner.run(importance)
    assert runner.loads == {"base": 1, "tuned": 1} and len(loaded) == 2
    # computed by the plan in this process: counted as computed, not as found in the cache
    assert [(r.computed, r.cached) for r in ffn_runs + importance_runs] == [(2, 0), (2, 0), (3, 0), (3, 0)]
    again = _runner(pair, (importance, ffn)).run(ffn)
    assert [(r.computed, r.cached) for r in again] == [(0, 2), (0, 2)]
    assert {"inspect", "load base", "load tuned", "importance base", "ffn tuned"} <= set(runner.stages)
    assert all(seconds >= 0 for seconds in runner.stages.values())


def test_without_a_plan_each_probe_loads_again(pair):
    """The regression the plan removes: probe by probe, a checkpoint is loaded once per probe."""
    importance, ffn = _probes()
    runner = _runner(pair)
    runner.run(ffn)
    runner.run(importance)
    assert runner.loads == {"base": 2, "tuned": 2}


@pytest.mark.parametrize("n_workers", [2, 3])
def test_shared_work_loads_each_checkpoint_at_most_once_per_worker(pair, n_workers):
    importance, ffn = _probes()
    workers = [_runner(pair, (importance, ffn)) for _ in range(n_workers)]
    computed = [w.run_plan(share=(k, n_workers)) for k, w in enumerate(workers)]
    assert all(n <= 1 for w in workers for n in w.loads.values())
    assert sum(c[p][role] for c in computed for p in ("importance", "ffn") for role in ("base", "tuned")) == 10
    final = _runner(pair, (importance, ffn))
    final.await_plan(idle_s=0.1)
    final.run(importance)
    final.run(ffn)
    assert final.loads == {"base": 0, "tuned": 0}


def test_inspect_reads_each_checkpoint_once(pair, monkeypatch):
    calls: list[str] = []
    real = session.inspect_checkpoint
    monkeypatch.setattr(session, "inspect_checkpoint", lambda loc, opt: calls.append(loc) or real(loc, opt))
    runner = _runner(pair)
    runner.check()
    runner.info(runner.base)
    runner.check()
    assert sorted(calls) == sorted([runner.base.location, runner.tuned.location])
