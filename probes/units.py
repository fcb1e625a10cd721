"""The probe protocol: what the runner needs to know about a probe, and the cache key of one unit.

This module sits below the finding packages (``importance``, ``attention``, ``ffn``), which import
it to describe themselves, and below :mod:`~shiftcheck.probes.runner`, which drives them; it imports
only the cache's key and entry types, so no import runs back up.

A probe names itself and its code version, gives the config that changes its numbers, a list of
independent *units* of work per model (prompt shards for attribution, layer ranges for the weight
probes), runs one unit on a loaded checkpoint and combines the stored units into its result. A
unit's cache key is (fingerprint, probe, config + unit, code version), so one checkpoint's results
are never returned for another, and a crash keeps every finished unit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from shiftcheck.probes import __version__
from shiftcheck.probes.cache_key import CacheEntry, CacheKey

R = TypeVar("R")
Unit = dict[str, Any]  # a JSON-able description of one unit of work, part of its cache key
Progress = Callable[[str, str, int, int], None]  # (label, stage, done, total)
StageProgress = Callable[[str, int, int], None]  # (stage, done, total) within one unit


class Probe(Protocol[R]):
    """What the runner needs to know about a probe."""

    name: str  # cache namespace, e.g. "importance", "attention", "ffn"
    code_version: str  # bump when any number the probe produces changes

    def cache_config(self) -> dict[str, Any]:
        """Every input besides the checkpoint that changes the numbers (JSON-able)."""
        ...

    def units(self) -> Sequence[Unit]:
        """The independent units of work for one model, in a fixed order."""
        ...

    def run_unit(self, checkpoint: Any, unit: Unit, progress: StageProgress | None) -> CacheEntry:
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
