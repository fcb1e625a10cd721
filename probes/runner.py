"""A generic runner over the result cache: any probe, one model at a time (no pytest here).

A probe is described by the small :class:`Probe` protocol: a name and code version, the config
that changes its numbers, a list of independent *units* of work per model (prompt shards for
attribution, layer ranges for the weight probes), how to run one unit on a loaded checkpoint, and
how to combine the stored units into its result. :func:`run` serves each unit from the cache or
computes it, loading the checkpoint only on the first miss. The cache key is (fingerprint, probe,
config + unit, code version), so one checkpoint's results are never returned for another, and a
crash keeps every finished unit.

:class:`PairRunner` resolves the two specs, checks that the pair is comparable without loading
weights, and runs a probe on the base (then frees it) and then on the tuned model, so only one
model is resident at a time.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from shiftcheck.probes import __version__
from shiftcheck.probes import importance as imp
from shiftcheck.probes.cache import CacheEntry, CacheKey, ResultCache
from shiftcheck.probes.models.fingerprint import fingerprint_checkpoint
from shiftcheck.probes.models.loading import (
    Checkpoint,
    LoadOptions,
    PairInfo,
    inspect_checkpoint,
    load_checkpoint,
    validate_pair,
)
from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.world.build import ensure_world
from shiftcheck.probes.world.spec import parse_world_spec

R = TypeVar("R")
Unit = dict[str, Any]  # a JSON-able description of one unit of work, part of its cache key
Progress = Callable[[str, str, int, int], None]  # (label, stage, done, total)
StageProgress = Callable[[str, int, int], None]  # (stage, done, total) within one unit
SHARD_SIZE = 16  # prompts per attribution unit: the work a crash can lose


# ---------------------------------------------------------------------------------------------
# The protocol and the generic run


class Probe(Protocol[R]):
    """What :func:`run` needs to know about a probe."""

    name: str  # cache namespace, e.g. "importance", "attention", "ffn"
    code_version: str  # bump when any number the probe produces changes

    def cache_config(self) -> dict[str, Any]:
        """Every input besides the checkpoint that changes the numbers (JSON-able)."""
        ...

    def units(self) -> Sequence[Unit]:
        """The independent units of work for one model, in a fixed order."""
        ...

    def run_unit(self, checkpoint: Checkpoint, unit: Unit, progress: StageProgress | None) -> CacheEntry:
        """Compute one unit on a loaded checkpoint; the entry holds JSON meta and numeric arrays."""
        ...

    def combine(self, label: str, entries: Sequence[CacheEntry]) -> R:
        """The probe's result from its stored units (in :meth:`units` order)."""
        ...


@dataclass(frozen=True)
class ProbeRun(Generic[R]):
    """A probe's result for one model and where its units came from."""

    label: str
    result: R
    computed: int  # units computed in this run
    cached: int  # units served from the cache

    @property
    def all_cached(self) -> bool:
        return self.computed == 0


def unit_key(probe: Probe, fingerprint: str, unit: Unit) -> CacheKey:
    return CacheKey(
        fingerprint=fingerprint,
        probe=probe.name,
        config=dict(probe.cache_config(), unit=unit),
        code_version=f"{__version__}/{probe.code_version}",
    )


def run(probe: Probe[R], label: str, fingerprint: str, cache: ResultCache, load: Callable[[], Checkpoint],
        progress: Progress | None = None, share: tuple[int, int] | None = None) -> ProbeRun[R] | int:
    """Every unit of ``probe`` for one model, from the cache or computed (``load()`` on first miss).

    With ``share=(k, n)`` only units ``k, k+n, k+2n, ...`` are made sure of (computed or found) and
    the number computed is returned: how n workers split one probe's work.
    """
    units = list(probe.units())
    if share is not None:
        k, n = share
        computed = 0
        for unit in units[k::n]:
            _, hit = cache.get_or_compute(unit_key(probe, fingerprint, unit),
                                          lambda unit=unit: probe.run_unit(load(), unit, None))
            computed += 0 if hit else 1
        return computed
    entries: list[CacheEntry] = []
    computed = 0
    for k, unit in enumerate(units):
        def compute(unit: Unit = unit, k: int = k) -> CacheEntry:
            stage = None if progress is None else (
                lambda st, done, total: progress(label, st, done, total))
            return probe.run_unit(load(), unit, stage)

        entry, hit = cache.get_or_compute(unit_key(probe, fingerprint, unit), compute)
        entries.append(entry)
        computed += 0 if hit else 1
        if progress is not None:
            progress(label, f"{probe.name} units", k + 1, len(units))
    return ProbeRun(label, probe.combine(label, entries), computed, len(units) - computed)


# ---------------------------------------------------------------------------------------------
# Probe 1 as a Probe


def prompts_digest(prompts: Sequence[Prompt]) -> str:
    """Content digest of a prompt set: any change to text, spans, ids or order changes it."""
    canon = [[p.id, p.source, p.prompt, [list(s) for s in p.instruction_char_spans]] for p in prompts]
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ImportanceProbe:
    """Finding 1's attribution (METHODS §1), one unit per shard of ``shard_size`` prompts."""

    prompts: tuple[Prompt, ...]
    config: imp.ImportanceConfig = imp.ImportanceConfig()
    shard_size: int = SHARD_SIZE
    name: str = "importance"
    code_version: str = imp.CODE_VERSION

    def _shards(self) -> list[tuple[Prompt, ...]]:
        return [self.prompts[i : i + self.shard_size] for i in range(0, len(self.prompts), self.shard_size)]

    def cache_config(self) -> dict[str, Any]:
        return self.config.cache_config()

    def units(self) -> list[Unit]:
        return [{"prompts": prompts_digest(part)} for part in self._shards()]

    def run_unit(self, checkpoint: Checkpoint, unit: Unit, progress: StageProgress | None) -> CacheEntry:
        part = next(p for p in self._shards() if prompts_digest(p) == unit["prompts"])
        result = imp.run_importance(checkpoint.model, checkpoint.tokenizer, list(part), self.config,
                                    label=checkpoint.spec, progress=progress)
        meta, arrays = imp.to_storage(result)
        return CacheEntry(meta=meta, arrays=arrays)

    def combine(self, label: str, entries: Sequence[CacheEntry]) -> imp.ImportanceResult:
        arrays: dict = {}
        for entry in entries:
            arrays.update(entry.arrays)
        meta = {"label": label, "instances": [inst for e in entries for inst in e.meta["instances"]]}
        return imp.from_storage(meta, arrays, self.config)


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


@dataclass
class PairRunner:
    """Runs probes on a base/tuned pair through the cache, one model resident at a time."""

    base: CheckpointRef
    tuned: CheckpointRef
    options: LoadOptions
    cache: ResultCache
    progress: Progress | None = None
    _info: PairInfo | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        quiet_loading()

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

    def check(self) -> PairInfo:
        """Architecture, sizes and tokenizers agree: checked on every run, even when all is cached,
        from configs and tokenizers only (no weight is loaded)."""
        if self._info is None:
            base = inspect_checkpoint(self.base.location, self.options_for(self.base))
            tuned = inspect_checkpoint(self.tuned.location, self.options_for(self.tuned))
            self._info = validate_pair(base, tuned)
        return self._info

    def run(self, probe: Probe[R], share: tuple[int, int] | None = None) -> tuple[ProbeRun[R], ProbeRun[R]]:
        """``probe`` on the base, then on the tuned model; each model is loaded at most once and
        freed before the other loads. With ``share=(k, n)`` only that share of the units is computed,
        and the pair holds the counts of units computed (see :func:`run`)."""
        self.check()
        runs = []
        for ref in (self.base, self.tuned):
            loaded: list[Checkpoint] = []

            def load(ref: CheckpointRef = ref) -> Checkpoint:
                if not loaded:
                    loaded.append(load_checkpoint(ref.location, self.options_for(ref)))
                return loaded[0]


            runs.append(run(probe, ref.label, ref.fingerprint, self.cache, load, self.progress, share))
            _free(loaded.pop() if loaded else None)
        return runs[0], runs[1]
