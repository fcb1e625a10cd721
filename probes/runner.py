"""Glue between checkpoint specs, the result cache and the probes (no pytest here).

A :class:`PairRunner` resolves the two checkpoint specs to content fingerprints, serves probe
results from the cache when it can, and loads and validates the models only on a miss. The
cache key is (fingerprint, probe, probe config incl. prompt-set digest, code version), so one
checkpoint's results are never returned for another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shiftcheck.probes import __version__
from shiftcheck.probes import importance as imp
from shiftcheck.probes.cache import CacheEntry, CacheKey, ResultCache
from shiftcheck.probes.models.loading import Checkpoint, LoadOptions, PairInfo, load_checkpoint, validate_pair
from shiftcheck.probes.models.fingerprint import fingerprint_checkpoint
from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.world.build import ensure_world, parse_world_spec

Progress = Callable[[str, str, int, int], None]  # (label, stage, done, total)
SHARD_SIZE = 16  # prompts per cache entry: the unit of work a crash can lose


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint as named by the user, where it resolved to, and its content fingerprint."""

    label: str  # "base" or "tuned"
    spec: str  # as given: path, hub id or world:NAME
    location: str  # local directory or hub id actually loaded
    fingerprint: str
    revision: str | None = None
    adapter: str | None = None


def resolve_ref(
    label: str,
    spec: str,
    cache_dir: Path,
    revision: str | None = None,
    adapter: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> CheckpointRef:
    """Resolve ``world:NAME[@seed=N]`` (building the world on first use) and fingerprint the checkpoint."""
    world = parse_world_spec(spec)
    if world is not None:
        name, seed = world
        location = str(ensure_world(cache_dir, seed, progress=progress).model_dir(name))
    else:
        location = spec
    memo = cache_dir / "fingerprints"
    fingerprint = fingerprint_checkpoint(location, revision=revision, memo_dir=memo)
    if adapter is not None:
        fingerprint += "+adapter:" + fingerprint_checkpoint(adapter, memo_dir=memo)
    return CheckpointRef(label, spec, location, fingerprint, revision, adapter)


def prompts_digest(prompts: Sequence[Prompt]) -> str:
    """Content digest of a prompt set: any change to text, spans, ids or order changes it."""
    canon = [[p.id, p.source, p.prompt, [list(s) for s in p.instruction_char_spans]] for p in prompts]
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()[:16]


def importance_key(ref: CheckpointRef, config: imp.ImportanceConfig, prompts: Sequence[Prompt]) -> CacheKey:
    cfg = dict(config.cache_config(), prompts=prompts_digest(prompts))
    return CacheKey(
        fingerprint=ref.fingerprint,
        probe="importance",
        config=cfg,
        code_version=f"{__version__}/{imp.CODE_VERSION}",
    )


@dataclass
class PairRunner:
    """Lazily loads and validates a base/tuned pair; serves probe results through the cache."""

    base: CheckpointRef
    tuned: CheckpointRef
    options: LoadOptions
    cache: ResultCache
    progress: Progress | None = None
    _loaded: tuple[Checkpoint, Checkpoint, PairInfo] | None = field(default=None, repr=False)

    def pair(self) -> tuple[Checkpoint, Checkpoint, PairInfo]:
        """Both checkpoints, loaded once and validated (architecture, sizes, vocabulary)."""
        if self._loaded is None:
            base = load_checkpoint(self.base.location, self._options(self.base))
            tuned = load_checkpoint(self.tuned.location, self._options(self.tuned))
            info = validate_pair(base, tuned)
            self._loaded = (base, tuned, info)
        return self._loaded

    def _options(self, ref: CheckpointRef) -> LoadOptions:
        return LoadOptions(
            revision=ref.revision,
            dtype=self.options.dtype,
            device=self.options.device,
            adapter=ref.adapter,
            trust_remote_code=self.options.trust_remote_code,
        )

    def importance(
        self, prompts: Sequence[Prompt], config: imp.ImportanceConfig, shard_size: int = SHARD_SIZE
    ) -> tuple[imp.ImportanceResult, imp.ImportanceResult, dict[str, bool]]:
        """Probe 1 on both models, each on its own greedy responses; returns (base, tuned, cache hits).

        Work is cached per shard of ``shard_size`` prompts, so a crash (OOM, NaN, a killed job)
        keeps every finished shard and a rerun resumes where it stopped.
        """
        results, hits = {}, {}
        parts = [list(prompts[i : i + shard_size]) for i in range(0, len(prompts), shard_size)]
        for ref, index in ((self.base, 0), (self.tuned, 1)):
            metas, arrays, all_hit = [], {}, True
            for k, part in enumerate(parts):
                entry, hit = self.cache.get_or_compute(
                    importance_key(ref, config, part), lambda part=part, index=index, k=k: self._compute_shard(
                        index, ref.label, part, config, k * shard_size, len(prompts))
                )
                metas.append(entry.meta)
                arrays.update(entry.arrays)
                all_hit &= hit
            meta = {"label": ref.label, "instances": [inst for m in metas for inst in m["instances"]]}
            results[ref.label] = imp.from_storage(meta, arrays, config)
            hits[ref.label] = all_hit
        return results["base"], results["tuned"], hits

    def _compute_shard(
        self, index: int, label: str, part: list[Prompt], config: imp.ImportanceConfig, offset: int, total: int
    ) -> CacheEntry:
        checkpoint = self.pair()[index]
        stage = self._stage(label)
        progress = None if stage is None else (lambda st, done, _n: stage(st, offset + done, total))
        result = imp.run_importance(checkpoint.model, checkpoint.tokenizer, part, config, label=label, progress=progress)
        meta, arrays = imp.to_storage(result)
        return CacheEntry(meta=meta, arrays=arrays)

    def _stage(self, label: str) -> Callable[[str, int, int], None] | None:
        if self.progress is None:
            return None
        return lambda stage, done, total: self.progress(label, stage, done, total)
