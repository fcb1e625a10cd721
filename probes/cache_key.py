"""The result cache's key and entry types, shared by the local and the remote cache.

:mod:`~shiftcheck.probes.cache` (a directory with file locks) and
:mod:`~shiftcheck.probes.remote_cache` (one object per entry on any fsspec filesystem) both build on
this module, and :func:`~shiftcheck.probes.cache.open_cache` picks one of them; neither imports the
other's module back, so the three form no import circle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
CACHE_ENV_VAR = "SHIFTCHECK_CACHE"
DEFAULT_DIRNAME = ".shiftcheck_cache"
NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex (np.dtype.kind)


class CacheError(RuntimeError):
    """A cache key or entry is invalid, or the cache cannot be used; the message names the cause."""



def default_local_dir() -> Path:
    """``./.shiftcheck_cache`` from the cwd: where local state lives when the cache is remote."""
    return Path.cwd() / DEFAULT_DIRNAME



def canonical_json(obj: Any) -> str:
    """``json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)``; errors name the cause."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CacheError(f"value is not canonical JSON ({exc}); use str/int/float/bool/None, lists and str-keyed dicts, no NaN/inf") from exc


def check_json_roundtrip(obj: Any, what: str) -> None:
    """Require ``json.loads(canonical_json(obj)) == obj`` so that load is the exact inverse of save."""
    text = canonical_json(obj)
    if json.loads(text) != obj:
        raise CacheError(
            f"{what} does not survive a JSON round trip unchanged (tuples become lists, non-str keys become str); "
            "convert it to plain lists and str-keyed dicts first"
        )


# ---------------------------------------------------------------------------------------------
# key and entry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=True)
class CacheKey:
    """Identity of one cached result.

    ``fingerprint``: checkpoint content id (``probes.fingerprint``); ``probe``: probe name; ``config``: the
    probe's JSON-able settings; ``code_version``: bumped when the probe's computation changes.
    ``digest = sha256(canonical_json(to_json()))`` is the entry's directory name.
    """

    fingerprint: str
    probe: str
    config: Mapping[str, Any]
    code_version: str

    def __post_init__(self) -> None:
        for name in ("fingerprint", "probe", "code_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise CacheError(f"CacheKey.{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.config, Mapping):
            raise CacheError(f"CacheKey.config must be a mapping, got {type(self.config).__name__}")
        # Store a deep, canonical copy so that later edits to the caller's dict cannot change the key.
        object.__setattr__(self, "config", json.loads(canonical_json(dict(self.config))))

    def __hash__(self) -> int:
        return hash(self.digest)

    def to_json(self) -> dict[str, Any]:
        """The four fields as a JSON-able dict (what ``meta.json`` repeats under ``"key"``)."""
        return {
            "fingerprint": self.fingerprint,
            "probe": self.probe,
            "config": self.config,
            "code_version": self.code_version,
        }

    @property
    def digest(self) -> str:
        """Hex ``sha256(canonical_json(to_json()))``."""
        return hashlib.sha256(canonical_json(self.to_json()).encode("ascii")).hexdigest()


@dataclass
class CacheEntry:
    """A probe result: JSON-able ``meta`` (no NaN: use ``None``) and named numeric ``arrays``."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def validate_entry(entry: CacheEntry) -> None:
    """Reject what could not be stored and loaded back exactly: non-JSON meta, non-numeric arrays."""
    if not isinstance(entry, CacheEntry):
        raise CacheError(f"compute() must return a CacheEntry, got {type(entry).__name__}")
    if not isinstance(entry.meta, dict):
        raise CacheError(f"CacheEntry.meta must be a dict, got {type(entry.meta).__name__}")
    check_json_roundtrip(entry.meta, "CacheEntry.meta")
    if not isinstance(entry.arrays, dict):
        raise CacheError(f"CacheEntry.arrays must be a dict of name -> ndarray, got {type(entry.arrays).__name__}")
    for name, array in entry.arrays.items():
        if not isinstance(name, str):
            raise CacheError(f"array names must be strings, got {name!r}")
        if not isinstance(array, np.ndarray) or array.dtype.kind not in NUMERIC_KINDS:
            kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise CacheError(f"array {name!r} has type {kind}; only numeric/bool ndarrays are cached, put strings in meta")



@dataclass(frozen=True)
class CacheInfo:
    root: Path
    entries: dict[str, int]  # probe name -> number of entries
    bytes: int

    @property
    def n_entries(self) -> int:
        return sum(self.entries.values())

