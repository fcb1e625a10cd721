"""The generic runner: spec resolution, unit caching that keeps finished work after a crash, one
model resident at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import tiny_llama
from shiftcheck.probes import runner as session
from shiftcheck.probes.cache import ResultCache
from shiftcheck.probes.models.loading import LoadOptions
from shiftcheck.probes.importance import AttributionError, ImportanceConfig
from shiftcheck.probes.prompts import Prompt

PROMPTS = [Prompt(f"p{i}", "toy", text, ((0, 5),)) for i, text in enumerate(
    ["write a short poem", "list the red house", "explain the question", "describe a long river", "write the sea"])]


@pytest.fixture
def runner(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    refs = [session.resolve_ref(label, str(tiny_llama(tmp_path, seed=s, name=label)), cache.root)
            for label, s in (("base", 0), ("tuned", 1))]
    return session.PairRunner(refs[0], refs[1], LoadOptions(device="cpu"), cache)


def test_a_crash_keeps_finished_shards_and_a_rerun_resumes(runner, monkeypatch):
    calls: list[list[str]] = []
    real = session.imp.run_importance

    def flaky(model, tokenizer, prompts, config, label, progress=None):
        calls.append([p.id for p in prompts])
        if fail and "p3" in calls[-1]:
            raise AttributionError("instance 'p3': simulated NaN")
        return real(model, tokenizer, prompts, config, label=label, progress=progress)

    monkeypatch.setattr(session.imp, "run_importance", flaky)
    config = ImportanceConfig(max_new_tokens=4)
    probe = session.ImportanceProbe(tuple(PROMPTS), config, shard_size=2)
    fail = True
    with pytest.raises(AttributionError, match="p3"):
        runner.run(probe)
    assert calls == [["p0", "p1"], ["p2", "p3"]]

    calls.clear()
    fail = False
    base, tuned = runner.run(probe)
    # base's first shard came from the cache; everything else was computed once
    assert calls == [["p2", "p3"], ["p4"], ["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert base.result.ids == tuned.result.ids == [p.id for p in PROMPTS]
    assert (base.computed, base.cached, tuned.computed, tuned.cached) == (2, 1, 3, 0)

    calls.clear()
    again = runner.run(probe)
    assert calls == [] and again[0].all_cached and again[1].all_cached
    assert again[0].result.scores.tolist() == base.result.scores.tolist()


def test_only_one_model_is_resident_at_a_time(runner, monkeypatch):
    alive: list[str] = []
    real = session.load_checkpoint

    def tracking(location, options, **kwargs):
        checkpoint = real(location, options, **kwargs)
        alive.append(location)
        import weakref
        weakref.finalize(checkpoint.model, alive.remove, location)
        return checkpoint

    peak = []
    real_run = session.imp.run_importance

    def spy(model, tokenizer, prompts, config, label, progress=None):
        peak.append(len(alive))
        return real_run(model, tokenizer, prompts, config, label=label, progress=progress)

    runner._info = object()  # skip the pair check: this test is about the probe runs
    monkeypatch.setattr(session, "load_checkpoint", tracking)
    monkeypatch.setattr(session.imp, "run_importance", spy)
    runner.run(session.ImportanceProbe(tuple(PROMPTS), ImportanceConfig(max_new_tokens=2), shard_size=2))
    assert peak and max(peak) == 1, peak


def test_prompt_digest_changes_with_spans_text_and_order():
    d = session.prompts_digest(PROMPTS)
    assert session.prompts_digest(PROMPTS[::-1]) != d
    moved = [Prompt("p0", "toy", PROMPTS[0].prompt, ((0, 4),)), *PROMPTS[1:]]
    assert session.prompts_digest(moved) != d
    assert session.prompts_digest(list(PROMPTS)) == d


def test_unknown_world_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="good"):
        session.resolve_ref("tuned", "world:excellent", tmp_path)


def test_stratified_sample_is_seeded_proportional_and_keeps_every_source():
    from shiftcheck.probes.prompts import stratified_sample

    prompts = [Prompt(f"a{i}", "a", "x", ()) for i in range(60)] + [Prompt(f"b{i}", "b", "x", ()) for i in range(30)] \
        + [Prompt(f"c{i}", "c", "x", ()) for i in range(3)]
    s = stratified_sample(prompts, 20, seed=1)
    counts = {src: sum(p.source == src for p in s) for src in "abc"}
    assert sum(counts.values()) == 20 and counts["c"] >= 2 and counts["a"] > counts["b"] > counts["c"]
    assert [p.id for p in s] == [p.id for p in stratified_sample(prompts, 20, seed=1)]
    assert [p.id for p in s] != [p.id for p in stratified_sample(prompts, 20, seed=2)]
    order = [p.id for p in prompts]
    assert [order.index(p.id) for p in s] == sorted(order.index(p.id) for p in s)  # file order kept


def test_max_prompts_takes_round_robin_per_source_in_file_order():
    from shiftcheck.probes.prompts import sample_per_source

    prompts = [Prompt(f"a{i}", "a", "x", ()) for i in range(10)] + [Prompt("b0", "b", "x", ())]
    assert [p.id for p in sample_per_source(prompts, 3)] == ["a0", "a1", "b0"]  # b is never emptied


def test_a_missing_source_falls_back_to_the_id_prefix():
    from shiftcheck.probes.prompts import prompt_from_record

    rec = {"prompt": "write", "instruction_char_spans": [[0, 5]]}
    assert prompt_from_record(dict(rec, id="user_oriented_task_7"), "f").source == "self-instruct"
    assert prompt_from_record(dict(rec, id="mtbench_writing_81"), "f").source == "mt-bench"
    assert prompt_from_record(dict(rec, id="lima_author_3"), "f").source == "lima"
    assert prompt_from_record(dict(rec, id="world_0012"), "f").source == "world"


def test_a_killed_process_leaves_no_corrupt_entry_and_a_rerun_computes_only_the_missing_units(tmp_path):
    import os
    import subprocess
    import sys
    import textwrap

    base = tiny_llama(tmp_path, seed=0, name="base")
    cache_dir = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from shiftcheck.probes import runner as session
        from shiftcheck.probes.cache import ResultCache
        from shiftcheck.probes.importance import ImportanceConfig
        from shiftcheck.probes.models.loading import LoadOptions, load_checkpoint
        from test_session import PROMPTS
        real = session.imp.run_importance
        def dying(model, tokenizer, prompts, config, label, progress=None):
            if any(p.id == "p3" for p in prompts):
                os.kill(os.getpid(), signal.SIGKILL)  # mid-unit, after the first unit was stored
            return real(model, tokenizer, prompts, config, label=label, progress=progress)
        session.imp.run_importance = dying
        probe = session.ImportanceProbe(tuple(PROMPTS), ImportanceConfig(max_new_tokens=3), shard_size=2)
        cache = ResultCache({str(cache_dir)!r})
        session.run(probe, "base", "fp-base", cache, lambda: load_checkpoint({str(base)!r}, LoadOptions(device="cpu")))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    from shiftcheck.probes.models.loading import load_checkpoint

    probe = session.ImportanceProbe(tuple(PROMPTS), ImportanceConfig(max_new_tokens=3), shard_size=2)
    cache = ResultCache(cache_dir)
    again = session.run(probe, "base", "fp-base", cache, lambda: load_checkpoint(str(base), LoadOptions(device="cpu")))
    assert (again.computed, again.cached) == (2, 1)  # p2/p3 (killed) and p4 recomputed; p0/p1 kept
    assert again.result.ids == [p.id for p in PROMPTS]
    leftovers = [p.name for p in cache_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
