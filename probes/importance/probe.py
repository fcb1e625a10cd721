"""Finding 1's attribution as a cached probe (:class:`~shiftcheck.probes.units.Probe`): one unit per
shard of ``shard_size`` prompts, so a crash loses at most one shard's work."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shiftcheck.probes import importance as imp
from shiftcheck.probes.cache_key import CacheEntry
from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.units import StageProgress, Unit

SHARD_SIZE = 16  # prompts per attribution unit: the work a crash can lose


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

    def part(self, unit: Unit) -> tuple[Prompt, ...]:
        """The prompts of one unit."""
        return next(p for p in self._shards() if prompts_digest(p) == unit["prompts"])

    def run_unit(self, checkpoint: Any, unit: Unit, progress: StageProgress | None) -> CacheEntry:
        part = self.part(unit)
        # through the package attribute, so a test can stand in for run_importance
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


def stored_responses(entry: CacheEntry, part: Sequence[Prompt]) -> list[tuple[int, ...]] | None:
    """The greedy response ids a finding-1 unit stored for ``part``, in its order (None when a
    prompt is missing): what the KL preflight and the release check teacher-force."""
    by_id = {inst["id"]: tuple(inst.get("response_ids", ())) for inst in entry.meta["instances"]}
    return [by_id[p.id] for p in part] if all(p.id in by_id for p in part) else None
