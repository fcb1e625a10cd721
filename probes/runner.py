"""The runner over the result cache: any probes, one model resident at a time (no pytest here).

A probe is described by :class:`~shiftcheck.probes.units.Probe` (its units of work, how to run one
on a loaded checkpoint, how to combine them). :func:`run` serves each unit of one probe from the
cache or computes it, loading the checkpoint only on the first miss; :func:`run_units` makes sure of
every unit of several probes with that one load. The cache key is (fingerprint, probe, config +
unit, code version), so one checkpoint's results are never returned for another, and a crash keeps
every finished unit.

:class:`PairRunner` resolves the two specs, checks that the pair is comparable without loading
weights, and runs probes on the base (then frees it) and then on the tuned model, so only one model
is resident at a time. Given a *plan* (every probe the run needs), its first :meth:`PairRunner.run`
computes every planned probe's missing units while each checkpoint is resident, so each checkpoint
is loaded at most once per process whatever the number of probes; later calls read the cache.

A :class:`Gate` takes a verdict at the start of the second model's pass: its probe's units run
there first, and when the verdict holds (the KL preflight finds that two different files behave
identically) the units of the probes it names are not computed on that model at all
(:attr:`PairRunner.skipped` says which and why; :meth:`PairRunner.run` then raises
:class:`GateSkipped` for them instead of loading the checkpoint again).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shiftcheck.probes import importance as imp  # noqa: F401 (kept: tests stand in for imp.run_importance)
from shiftcheck.probes.cache import ResultCache
from shiftcheck.probes.cache_key import CacheEntry
from shiftcheck.probes.importance.probe import SHARD_SIZE, ImportanceProbe, prompts_digest  # noqa: F401 (re-exported)
from shiftcheck.probes.models.fingerprint import fingerprint_checkpoint
from shiftcheck.probes.models.loading import (
    Checkpoint,
    CheckpointInfo,
    LoadOptions,
    PairInfo,
    inspect_checkpoint,
    load_checkpoint,
    validate_pair,
)
from shiftcheck.probes.units import (  # noqa: F401 (re-exported: the protocol's names as before)
    Probe,
    ProbeRun,
    Progress,
    R,
    StageProgress,
    Unit,
    unit_key,
)
from shiftcheck.probes.world.build import ensure_world
from shiftcheck.probes.world.spec import parse_world_spec

# ---------------------------------------------------------------------------------------------
# One model: every unit from the cache or computed


def run(probe: Probe[R], label: str, fingerprint: str, cache: ResultCache, load: Callable[[], Checkpoint],
        progress: Progress | None = None, share: tuple[int, int] | None = None) -> ProbeRun[R] | int:
    """Every unit of ``probe`` for one model, from the cache or computed (``load()`` on first miss).

    With ``share=(k, n)`` only units ``k, k+n, k+2n, ...`` are made sure of (computed or found) and
    the number computed is returned: how n workers split one probe's work.
    """
    if share is not None:
        return run_units([probe], label, fingerprint, cache, load, share=share)[probe.name]
    units = list(probe.units())
    entries: list[CacheEntry] = []
    computed = 0
    for k, unit in enumerate(units):
        def compute(unit: Unit = unit) -> CacheEntry:
            stage = None if progress is None else (
                lambda st, done, total: progress(label, st, done, total))
            return probe.run_unit(load(), unit, stage)

        entry, hit = cache.get_or_compute(unit_key(probe, fingerprint, unit), compute)
        entries.append(entry)
        computed += 0 if hit else 1
        if progress is not None:
            progress(label, f"{probe.name} units", k + 1, len(units))
    return ProbeRun(label, probe.combine(label, entries), computed, len(units) - computed)


def run_units(probes: Sequence[Probe], label: str, fingerprint: str, cache: ResultCache,
              load: Callable[[], Checkpoint], progress: Progress | None = None,
              share: tuple[int, int] | None = None,
              seconds: dict[str, float] | None = None) -> dict[str, int]:
    """Make sure every unit of every probe is in the cache for one model; returns units computed per
    probe. ``load()`` is called on the first missing unit only, so one load serves all the probes.

    With ``share=(k, n)`` only items ``k, k+n, ...`` of the probes' concatenated unit list are made
    sure of: n workers split the work and each loads the model at most once. ``seconds`` collects
    the compute time per probe name (the load excluded).
    """
    work = [(probe, unit) for probe in probes for unit in probe.units()]
    if share is not None:
        k, n = share
        work = work[k::n]
    totals = {probe.name: sum(1 for p, _ in work if p is probe) for probe in probes}
    done = dict.fromkeys(totals, 0)
    computed = dict.fromkeys(totals, 0)
    for probe, unit in work:
        key = unit_key(probe, fingerprint, unit)
        if progress is not None and done[probe.name] == 0:  # the clock of this probe's ETA starts here
            progress(label, f"{probe.name} units", 0, totals[probe.name])
        if not cache.has(key):
            def compute(probe: Probe = probe, unit: Unit = unit) -> CacheEntry:
                checkpoint = load()
                stage = None if progress is None else (
                    lambda st, d, total: progress(label, st, d, total))
                start = time.perf_counter()
                entry = probe.run_unit(checkpoint, unit, stage)
                if seconds is not None:
                    seconds[probe.name] = seconds.get(probe.name, 0.0) + time.perf_counter() - start
                return entry

            _, hit = cache.get_or_compute(key, compute)
            computed[probe.name] += 0 if hit else 1
        done[probe.name] += 1
        if progress is not None:
            progress(label, f"{probe.name} units", done[probe.name], totals[probe.name])
    return computed


# ---------------------------------------------------------------------------------------------
# Checkpoint specs and the pair


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint as named by the user, where it resolved to, and its content fingerprint."""

    label: str  # "base" or "tuned"
    spec: str  # as given: path, hub id or world:NAME
    location: str  # local directory, .gguf file or hub id actually loaded
    fingerprint: str
    revision: str | None = None  # for a hub id: the commit sha the fingerprint names
    adapter: str | None = None
    gguf_file: str | None = None  # a .gguf file's name inside ``location`` (a directory or hub repo)


def resolve_ref(
    label: str,
    spec: str,
    cache_dir: Path,
    revision: str | None = None,
    adapter: str | None = None,
    progress: Callable[[str], None] | None = None,
    gguf_file: str | None = None,
) -> CheckpointRef:
    """Resolve ``world:NAME[@seed=N]`` (the shipped world, or a build for other seeds) and fingerprint.

    A hub id's ``revision`` (a branch, a tag or None for the default branch) is replaced by the commit
    sha it resolved to, so that loading reads exactly the fingerprinted commit even when the branch
    moves. ``gguf_file`` names a .gguf file inside a directory (or hub repository) ``spec``.
    """
    world = parse_world_spec(spec)
    if world is not None:
        name, seed = world
        location = str(ensure_world(cache_dir, seed, progress=progress).model_dir(name))
    else:
        location = spec
    memo = cache_dir / "fingerprints"
    fingerprint = fingerprint_checkpoint(location, revision=revision, memo_dir=memo, gguf_file=gguf_file)
    if fingerprint.startswith("hub:"):
        revision = fingerprint.rsplit("@", 1)[1]  # "hub:<repo>@<sha>"
    if adapter is not None:
        fingerprint += "+adapter:" + fingerprint_checkpoint(adapter, memo_dir=memo)
    return CheckpointRef(label, spec, location, fingerprint, revision, adapter, gguf_file)


def _locked(cache: ResultCache, key) -> bool:
    """Whether another process holds ``key``'s compute lock (only a local cache has locks)."""
    lock_path = getattr(cache, "lock_path", None)
    if lock_path is None:
        return False
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path(key)), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def quiet_loading() -> None:
    """transformers' per-tensor "Loading weights" bars would interleave with the suite's own progress."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _free(checkpoint: Checkpoint | None) -> None:
    """Drop a checkpoint and give its memory back before the next model loads."""
    del checkpoint
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


@dataclass(frozen=True)
class Gate:
    """A verdict taken at the start of the second model's pass, before its other work.

    The units of the planned probe named ``probe`` run first on the second model; ``verdict`` gets
    that probe's combined result on it and returns a reason, or None. With a reason, the units of
    the planned probes named in ``skips`` are not computed on the second model (their work there
    would only serve claims the verdict already decides); every other probe runs as planned.
    """

    probe: str
    skips: frozenset[str]
    verdict: Callable[[object], str | None]


class GateSkipped(RuntimeError):
    """A probe's units on one model were skipped by the run's :class:`Gate`; ``reason`` is the
    gate's verdict as it gave it, and the message says which units were skipped."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


@dataclass
class PairRunner:
    """Runs probes on a base/tuned pair through the cache, one model resident at a time.

    ``plan`` holds every probe the run will ask for: the first :meth:`run` computes all their missing
    units (base, free, tuned), so each checkpoint is loaded at most once in this process. ``loads``
    counts the loads per role and ``stages`` the seconds per stage (``inspect``, ``load base``,
    ``importance base`` ...), for the run's record. ``gate`` (optional) is checked at the start of
    the second model's pass; ``skipped`` maps each probe it skipped to ``{"model", "reason",
    "units"}``.
    """

    base: CheckpointRef
    tuned: CheckpointRef
    options: LoadOptions
    cache: ResultCache
    progress: Progress | None = None
    plan: tuple[Probe, ...] = ()
    loads: dict[str, int] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    gate: Gate | None = None
    skipped: dict[str, dict] = field(default_factory=dict)
    _info: PairInfo | None = field(default=None, repr=False)
    _inspected: dict = field(default_factory=dict, repr=False)
    _plan_done: bool = field(default=False, repr=False)
    _plan_computed: dict = field(default_factory=dict, repr=False)  # (probe, role) -> units the plan computed

    def __post_init__(self) -> None:
        quiet_loading()
        self.loads.update({self.base.label: 0, self.tuned.label: 0})

    def options_for(self, ref: CheckpointRef) -> LoadOptions:
        return LoadOptions(
            revision=ref.revision,
            dtype=self.options.dtype,
            device=self.options.device,
            adapter=ref.adapter,
            trust_remote_code=self.options.trust_remote_code,
            gguf_file=ref.gguf_file,
            device_map=self.options.device_map,
            low_cpu_mem_usage=self.options.low_cpu_mem_usage,
            attn_implementation=self.options.attn_implementation,
        )

    def _add_time(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def info(self, ref: CheckpointRef) -> CheckpointInfo:
        """Config, dimensions and checked tokenizer of ``ref`` without its weights, read once per
        process (a GGUF file's metadata takes tens of seconds to parse): every later caller, and the
        load, reuse it."""
        key = (ref.location, ref.fingerprint, self.options_for(ref))
        if key not in self._inspected:
            start = time.perf_counter()
            if self.progress is not None:
                self.progress(ref.label, "reading config and tokenizer (no weights)", 0, 1)
            self._inspected[key] = inspect_checkpoint(ref.location, self.options_for(ref))
            if self.progress is not None:
                self.progress(ref.label, "reading config and tokenizer (no weights)", 1, 1)
            self._add_time("inspect", time.perf_counter() - start)
        return self._inspected[key]

    def check(self) -> PairInfo:
        """Architecture, sizes and tokenizers agree: checked on every run, even when all is cached,
        from configs and tokenizers only (no weight is loaded)."""
        if self._info is None:
            self._info = validate_pair(self.info(self.base), self.info(self.tuned))
        return self._info

    def _loader(self, ref: CheckpointRef, loaded: list[Checkpoint]) -> Callable[[], Checkpoint]:
        def load() -> Checkpoint:
            if not loaded:
                start = time.perf_counter()
                stage = f"loading weights of {ref.label}"
                progress = None if self.progress is None else (
                    lambda done, total: self.progress(ref.label, stage, done, total))
                loaded.append(load_checkpoint(ref.location, self.options_for(ref), known=self.info(ref),
                                              progress=progress))
                self.loads[ref.label] = self.loads.get(ref.label, 0) + 1
                self._add_time(f"load {ref.label}", time.perf_counter() - start)
            return loaded[0]

        return load

    def run_plan(self, share: tuple[int, int] | None = None) -> dict[str, dict[str, int]]:
        """Every planned probe's missing units, base then tuned, each model loaded at most once and
        freed before the other loads. With ``share=(k, n)`` only that share of the units. Returns
        units computed per probe and role.

        With a :attr:`gate`, the second model's pass makes sure of the gate probe's units first and
        then leaves out the probes its verdict skips. Split work makes sure of *every* gate unit in
        every share, on both models (after its share of the rest on the first): the verdict needs
        them all, each share must reach the same one, and the second model's gate units read the
        first's. The local cache's lock has each computed once; a lock-free remote cache may compute
        one twice (the KL costs a forward per prompt)."""
        self.check()
        computed: dict[str, dict[str, int]] = {}
        gate = self._gate_probe()
        for position, ref in enumerate(self._order(self.plan)):
            loaded: list[Checkpoint] = []
            seconds: dict[str, float] = {}
            load = self._loader(ref, loaded)
            probes = list(self.plan)
            counts: dict[str, int] = {}
            if gate is not None and (position == 1 or share is not None):
                probes = [p for p in probes if p is not gate]
            if gate is not None and position == 1:
                counts.update(run_units([gate], ref.label, ref.fingerprint, self.cache, load, self.progress, None,
                                        seconds))
                skips = self._gate_skips(gate, ref)
                probes = [p for p in probes if p.name not in skips]
            counts.update(run_units(probes, ref.label, ref.fingerprint, self.cache, load, self.progress, share,
                                    seconds))
            if gate is not None and position == 0 and share is not None:
                counts.update(run_units([gate], ref.label, ref.fingerprint, self.cache, load, self.progress, None,
                                        seconds))
            for name, n in counts.items():
                computed.setdefault(name, {})[ref.label] = n
                if share is None:
                    self._plan_computed[(name, ref.label)] = n
            for name, t in seconds.items():
                self._add_time(f"{name} {ref.label}", t)
            _free(loaded.pop() if loaded else None)
        if share is None:
            self._plan_done = True
        return computed

    def _gate_probe(self) -> Probe | None:
        if self.gate is None:
            return None
        return next((p for p in self.plan if p.name == self.gate.probe), None)

    def _gate_skips(self, gate: Probe, ref: CheckpointRef) -> set[str]:
        """The probes the gate's verdict skips on ``ref`` (recorded in :attr:`skipped`), from its units
        just made sure of (read back from the cache)."""
        entries = [self.cache.load(unit_key(gate, ref.fingerprint, unit)) for unit in gate.units()]
        if any(e is None for e in entries):  # pragma: no cover - just stored; a cache that lost them
            return set()
        reason = self.gate.verdict(gate.combine(ref.label, entries))
        if reason is None:
            return set()
        names = {p.name for p in self.plan if p.name in self.gate.skips}
        for probe in self.plan:
            if probe.name in names:
                self.skipped[probe.name] = {"model": ref.label, "reason": reason, "units": len(list(probe.units()))}
        return names

    def ensure_plan(self) -> None:
        """The plan computed (once): a caller about to read planned units of one checkpoint from
        another runner (the release artifact's) gets them from the cache, not from a second load."""
        if self.plan and not self._plan_done:
            self.run_plan()

    def _order(self, probes: Sequence[Probe]) -> tuple[CheckpointRef, CheckpointRef]:
        """Base then tuned, unless a probe's base units read its tuned units (``reference_first``,
        the KL preflight of probes/release/kl.py): then tuned first."""
        if any(getattr(p, "reference_first", False) for p in probes):
            return self.tuned, self.base
        return self.base, self.tuned

    def planned_keys(self) -> list:
        """The cache key of every planned unit, less those the gate skipped."""
        return [unit_key(probe, ref.fingerprint, unit) for probe in self.plan for ref in (self.base, self.tuned)
                if self.skipped.get(probe.name, {}).get("model") != ref.label for unit in probe.units()]

    def await_plan(self, log: Callable[[str], None] | None = None, poll_s: float = 1.0, idle_s: float = 120.0) -> None:
        """After computing its share, wait while other processes compute theirs, so that this one
        need not load a checkpoint again for their units. Stops waiting when every planned unit is
        stored, or when for ``idle_s`` no missing unit is being computed (its lock is free) and none
        appeared: then the remaining units are computed here."""
        keys = self.planned_keys()
        start = last_change = time.perf_counter()
        missing = [k for k in keys if not self.cache.has(k)]
        logged = -1
        while missing and time.perf_counter() - last_change < idle_s:
            if log is not None and len(missing) != logged:
                log(f"waiting for other workers: {len(keys) - len(missing)}/{len(keys)} units done")
                logged = len(missing)
            time.sleep(poll_s)
            still = [k for k in missing if not self.cache.has(k)]
            if len(still) < len(missing) or any(_locked(self.cache, k) for k in still):
                last_change = time.perf_counter()
            missing = still
        self._add_time("waiting for other workers", time.perf_counter() - start)
        self._plan_done = not missing

    def run(self, probe: Probe[R], share: tuple[int, int] | None = None) -> tuple[ProbeRun[R], ProbeRun[R]]:
        """``probe`` on the base, then on the tuned model; each model is loaded at most once and
        freed before the other loads. The first call computes the whole plan first, so a planned
        probe is then served from the cache. With ``share=(k, n)`` only that share of the units is
        computed, and the pair holds the counts of units computed (see :func:`run`)."""
        self.check()
        if self.plan and not self._plan_done and share is None:
            self.run_plan()
        skip = self.skipped.get(probe.name)
        if skip is not None:
            raise GateSkipped(f"{probe.name} was skipped on the {skip['model']} model ({skip['units']} units not "
                              f"computed): {skip['reason']}", skip["reason"])
        runs = {}
        for ref in self._order([probe]):
            loaded: list[Checkpoint] = []
            start, load_before = time.perf_counter(), self.stages.get(f"load {ref.label}", 0.0)
            probe_run = run(probe, ref.label, ref.fingerprint, self.cache, self._loader(ref, loaded),
                            self.progress, share)
            planned = self._plan_computed.pop((probe.name, ref.label), 0)
            if isinstance(probe_run, ProbeRun) and planned:  # computed by the plan in this process, not found
                probe_run = ProbeRun(probe_run.label, probe_run.result, probe_run.computed + planned,
                                     probe_run.cached - planned)
            runs[ref.label] = probe_run
            if loaded:  # not planned (or not all of it cached): its compute time, the load excluded
                load_s = self.stages.get(f"load {ref.label}", 0.0) - load_before
                self._add_time(f"{probe.name} {ref.label}", time.perf_counter() - start - load_s)
            _free(loaded.pop() if loaded else None)
        return runs[self.base.label], runs[self.tuned.label]
