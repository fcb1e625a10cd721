"""Finding 1's release check attributes the artifact on its source's greedy responses (teacher-forced).

Attributing each model's own greedy response compared densities of different texts: a KL of a few
1e-3 nats/token flips a near-tied top-1 token somewhere in 32, and SmolLM2's int8 and Q8_0 casts
then answered 5 of 8 prompts differently, moving single prompts' density by up to 0.7 on a 0-1
scale (docs/RELEASE.md). On the source's own text the check asks what it means to ask: does the
artifact attribute the same response the same way? Whether the artifact would have *written* that
response is reported apart, as the greedy agreement of the KL preflight (:func:`greedy_agreement`).

The probe runs source first (``reference_first``): on the source a unit is finding 1's own unit
(the main run's cache entry, copied by :func:`seed_source_entries` so the source is not loaded
again); on the artifact it reads the source's responses from that entry and attributes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftcheck.probes import importance as imp
from shiftcheck.probes.cache_key import CacheEntry
from shiftcheck.probes.importance.probe import stored_responses
from shiftcheck.probes.units import StageProgress, Unit, unit_key

CODE_VERSION = "forced-1"


class ForcedResponsesMissing(RuntimeError):
    """The source's responses for a shard are not in the cache when the artifact needs them."""


@dataclass(frozen=True)
class ForcedImportanceProbe:
    """Finding 1's attribution with the source's responses: the units and config of ``importance``
    (an :class:`~shiftcheck.probes.importance.probe.ImportanceProbe`), keyed by the source's
    fingerprint as well, so an artifact's entry is never taken for its own-response attribution."""

    importance: Any  # ImportanceProbe
    source_location: str
    source_fingerprint: str
    cache: Any  # the run's ResultCache (the artifact's units read the source's)
    name: str = "importance-forced"
    code_version: str = CODE_VERSION
    reference_first: bool = True

    def cache_config(self) -> dict[str, Any]:
        return dict(self.importance.cache_config(), responses_of=self.source_fingerprint)

    def units(self) -> list[Unit]:
        return self.importance.units()

    def source_responses(self, part: Sequence[Any], unit: Unit) -> list[tuple[int, ...]]:
        entry = self.cache.load(unit_key(self, self.source_fingerprint, unit))
        responses = None if entry is None else stored_responses(entry, part)
        if responses is None:
            raise ForcedResponsesMissing(
                "the release check of finding 1 needs the source's responses for this shard, and the source "
                "has not stored them (the source runs first: PairRunner plans a reference_first probe so)")
        return responses

    def run_unit(self, checkpoint: Any, unit: Unit, progress: StageProgress | None) -> CacheEntry:
        if str(checkpoint.spec) == self.source_location:
            return self.importance.run_unit(checkpoint, unit, progress)
        part = self.importance.part(unit)
        result = imp.run_importance(checkpoint.model, checkpoint.tokenizer, list(part), self.importance.config,
                                    label=checkpoint.spec, progress=progress,
                                    responses=self.source_responses(part, unit))
        meta, arrays = imp.to_storage(result)
        return CacheEntry(meta=meta, arrays=arrays)

    def combine(self, label: str, entries: Sequence[CacheEntry]) -> imp.ImportanceResult:
        return self.importance.combine(label, entries)


def seed_source_entries(probe: ForcedImportanceProbe) -> int:
    """Copy finding 1's cached units of the source into the forced probe's keys (they are the same
    computation: the source attributes its own responses), so the artifact's runner need not load
    the source for them. Returns the number copied; a unit not cached is left to the runner."""
    copied = 0
    for unit in probe.units():
        target = unit_key(probe, probe.source_fingerprint, unit)
        if probe.cache.has(target):
            continue
        entry = probe.cache.load(unit_key(probe.importance, probe.source_fingerprint, unit))
        if entry is not None:  # through the cache's lock: xdist workers seed the same units at once
            _, hit = probe.cache.get_or_compute(target, lambda entry=entry: entry)
            copied += 0 if hit else 1
    return copied


def greedy_agreement(agree: Mapping[str, np.ndarray]) -> dict[str, bool]:
    """Per prompt: the artifact's top-1 token equals the source's at every token of the source's
    greedy response (teacher-forced, from the KL preflight's per-token agreement). By induction over
    the tokens, that is the artifact's greedy decode reproducing the response up to its last token."""
    return {pid: bool(np.all(a)) for pid, a in agree.items()}
