"""The runner's gate (issue 21): the KL preflight's base units run first in the base's pass, and a
pair of two different files that behave identically skips the base's units of finding 1's
attribution there (FFN still runs), with one load per checkpoint; a pair that differs computes all."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from builders import DEFAULT_WORDS, tiny_llama
from shiftcheck.probes import importance as imp
from shiftcheck.probes import runner as session
from shiftcheck.probes.cache import ResultCache
from shiftcheck.probes.ffn import FfnConfig, FfnProbe
from shiftcheck.probes.importance import ImportanceConfig
from shiftcheck.probes.importance import tokens
from shiftcheck.probes.importance.probe import ImportanceProbe
from shiftcheck.probes.models.loading import LoadOptions
from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.release.preflight import identical_gate, kl_probe
from shiftcheck.probes.units import unit_key

PROMPTS = tuple(Prompt(f"p{i}", "toy", text, ((0, 5),)) for i, text in enumerate(
    ["write a short poem", "list the red house", "explain the question"]))


def _pair(tmp_path, identical: bool):
    """base, and as tuned either the same weights in another folder with one more file (another
    fingerprint, the same model) or another seed's model."""
    cache = ResultCache(tmp_path / "cache")
    base = tiny_llama(tmp_path, seed=0, name="base")
    if identical:
        tuned = tmp_path / "tuned"
        shutil.copytree(base, tuned)
        (tuned / "NOTES.txt").write_text("the same weights, shipped again\n")
    else:
        tuned = tiny_llama(tmp_path, seed=1, name="tuned")
    refs = [session.resolve_ref(label, str(path), cache.root) for label, path in (("base", base), ("tuned", tuned))]
    assert refs[0].fingerprint != refs[1].fingerprint
    return refs, cache


def _runner(refs, cache):
    runner = session.PairRunner(refs[0], refs[1], LoadOptions(device="cpu"), cache)
    importance = ImportanceProbe(PROMPTS, ImportanceConfig(max_new_tokens=3), shard_size=2)  # 2 units
    ffn = FfnProbe(DEFAULT_WORDS, 2, FfnConfig(n_components=4, top_k=3, words_digest="toy"), layers_per_unit=1)
    # the attribution's shards, so that the KL reads the responses the attribution generated
    kl = dataclasses.replace(kl_probe(runner, PROMPTS, max_new_tokens=3, responses_from=importance), shard_size=2)
    runner.plan = (importance, ffn, kl)
    runner.gate = identical_gate()
    return runner, importance, ffn, kl


def _stored(cache, probe, ref) -> int:
    return sum(cache.has(unit_key(probe, ref.fingerprint, unit)) for unit in probe.units())


def _record_order(monkeypatch, calls: list[tuple[str, str]]):
    """(probe, model) of every unit computed, in order."""
    real = session.run_units

    def spy(probes, label, *args, **kwargs):
        wrapped = [_Recorder(p, label, calls) for p in probes]
        return real(wrapped, label, *args, **kwargs)

    monkeypatch.setattr(session, "run_units", spy)


class _Recorder:
    def __init__(self, probe, label, calls):
        self._probe, self._label, self._calls = probe, label, calls

    def __getattr__(self, name):
        return getattr(self._probe, name)

    def run_unit(self, checkpoint, unit, progress):
        self._calls.append((self._probe.name, self._label))
        return self._probe.run_unit(checkpoint, unit, progress)


def test_an_identical_pair_skips_the_base_attribution_after_the_kl_and_loads_each_file_once(tmp_path, monkeypatch):
    refs, cache = _pair(tmp_path, identical=True)
    runner, importance, ffn, kl = _runner(refs, cache)
    generated: list[int] = []  # prompts given to greedy generation, by the attribution or the KL
    real_generate = tokens.generate_responses
    counting = lambda m, t, enc, *a, **k: generated.append(len(enc)) or real_generate(m, t, enc, *a, **k)  # noqa: E731
    monkeypatch.setattr(tokens, "generate_responses", counting)
    monkeypatch.setattr(imp, "generate_responses", counting)
    calls: list[tuple[str, str]] = []
    _record_order(monkeypatch, calls)
    runner.run_plan()
    base, tuned = runner.base, runner.tuned
    assert runner.loads == {"base": 1, "tuned": 1}
    # tuned first, all its work; then the base's KL before anything else on the base
    base_calls = [name for name, model in calls if model == "base"]
    assert [model for _, model in calls] == ["tuned"] * 6 + ["base"] * 4
    assert base_calls == ["kl", "kl", "ffn", "ffn"]
    assert sum(generated) == len(PROMPTS)  # responses generated once (by the attribution), not again for the KL
    assert _stored(cache, importance, tuned) == 2 and _stored(cache, importance, base) == 0
    assert _stored(cache, ffn, base) == 2 and _stored(cache, kl, base) == 2
    assert set(runner.skipped) == {"importance"}
    skip = runner.skipped["importance"]
    assert skip["model"] == "base" and skip["units"] == 2
    assert skip["reason"].startswith("base and tuned behave identically: mean per-token KL(tuned || base)")
    with pytest.raises(session.GateSkipped, match="importance was skipped on the base model .*behave identically"):
        runner.run(importance)
    base_ffn, tuned_ffn = runner.run(ffn)  # FFN is still served, from the cache
    assert runner.loads == {"base": 1, "tuned": 1}
    assert base_ffn.label == "base" and tuned_ffn.label == "tuned"
    # a later process finds the verdict again from the cache: nothing loads, nothing is computed
    again, *_ = _runner(refs, cache)
    again.run_plan()
    assert again.loads == {"base": 0, "tuned": 0} and set(again.skipped) == {"importance"}
    assert _stored(cache, importance, base) == 0
    skipped_keys = {unit_key(importance, base.fingerprint, unit) for unit in importance.units()}
    assert not skipped_keys & set(again.planned_keys())  # nobody waits for them


def test_a_pair_that_differs_computes_every_unit_of_both_models(tmp_path):
    refs, cache = _pair(tmp_path, identical=False)
    runner, importance, ffn, kl = _runner(refs, cache)
    runner.run_plan()
    assert runner.skipped == {}
    assert runner.loads == {"base": 1, "tuned": 1}
    for probe in (importance, ffn, kl):
        assert _stored(cache, probe, runner.base) == _stored(cache, probe, runner.tuned) == 2
    base_run, tuned_run = runner.run(importance)
    assert len(base_run.result.instances) == len(tuned_run.result.instances) == len(PROMPTS)


@pytest.mark.parametrize("n_workers", [2, 3])
def test_split_work_reaches_the_same_verdict_in_every_worker(tmp_path, n_workers):
    """Every worker makes sure of all the base's KL units (the verdict needs them all), so all skip
    the same units; each loads each checkpoint at most once; await_plan waits for no skipped unit."""
    refs, cache = _pair(tmp_path, identical=True)
    workers = [_runner(refs, cache) for _ in range(n_workers)]
    for k, (worker, *_) in enumerate(workers):
        worker.run_plan(share=(k, n_workers))
    assert all(set(w.skipped) == {"importance"} for w, *_ in workers)
    assert all(n <= 1 for w, *_ in workers for n in w.loads.values())
    importance = workers[0][1]
    assert _stored(cache, importance, refs[0]) == 0 and _stored(cache, importance, refs[1]) == 2
    last = workers[-1][0]
    last.await_plan(idle_s=0.1)
    assert last._plan_done  # every planned unit it still needs is stored
