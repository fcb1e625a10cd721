"""The result cache on any fsspec filesystem (``s3://``, ``gs://``, ``file://`` ...), for CI-matrix
shards that share one cache.

Same keys (:mod:`shiftcheck.probes.cache_key`) and verification as :mod:`shiftcheck.probes.cache`,
but each entry is ONE object,
``<root>/<digest>.entry.npz``: the arrays plus the stored meta as a ``uint8`` array named
``__meta__``. A write goes to a temporary object beside it and is then published with a move, so a
reader sees a whole entry or none. There are no cross-machine locks: units are content-addressed,
so two shards computing the same unit write the same bytes and either copy is right.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftcheck.probes.cache_key import (
    SCHEMA_VERSION,
    CacheEntry,
    CacheInfo,
    CacheKey,
    default_local_dir,
    validate_entry,
)

META_ARRAY = "__meta__"
SUFFIX = ".entry.npz"


def is_url(spec: str) -> bool:
    return "://" in spec


def encode(key: CacheKey, entry: CacheEntry) -> bytes:
    """One self-describing npz: the arrays and the stored meta (key, names, meta) as bytes."""
    validate_entry(entry)
    names = list(entry.arrays)
    stored = {"schema_version": SCHEMA_VERSION, "key": key.to_json(), "digest": key.digest,
              "array_names": names, "meta": entry.meta}
    meta = np.frombuffer(json.dumps(stored, sort_keys=True, allow_nan=False).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, *(entry.arrays[n] for n in names), **{META_ARRAY: meta})
    return buf.getvalue()


def decode(data: bytes, key: CacheKey) -> tuple[CacheEntry | None, str]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            stored = json.loads(npz[META_ARRAY].tobytes().decode())
            if stored.get("schema_version") != SCHEMA_VERSION or stored.get("key") != key.to_json():
                return None, "entry belongs to another key or schema"
            names = stored["array_names"]
            arrays = {name: npz[f"arr_{i}"] for i, name in enumerate(names)}
    except Exception as exc:  # noqa: BLE001 - truncated or foreign object: a miss
        return None, f"unreadable entry ({type(exc).__name__}: {exc})"
    return CacheEntry(meta=stored["meta"], arrays=arrays), ""


@dataclass(frozen=True)
class FsspecResultCache:
    """:class:`~shiftcheck.probes.cache.ResultCache`'s interface over an fsspec URL."""

    url: str
    local: Path = field(default_factory=default_local_dir)  # fingerprint memos and worlds stay local

    @property
    def root(self) -> str:
        return self.url

    def _fs(self) -> tuple[Any, str]:
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.url)
        return fs, path.rstrip("/")

    def _path(self, key: CacheKey) -> str:
        return f"{self._fs()[1]}/{key.digest}{SUFFIX}"

    def has(self, key: CacheKey) -> bool:
        fs, _ = self._fs()
        return bool(fs.exists(self._path(key)))

    def load(self, key: CacheKey) -> CacheEntry | None:
        fs, _ = self._fs()
        path = self._path(key)
        if not fs.exists(path):
            return None
        entry, _ = decode(fs.cat_file(path), key)
        return entry

    def save(self, key: CacheKey, entry: CacheEntry, *, overwrite: bool = False) -> None:
        fs, root = self._fs()
        fs.makedirs(root, exist_ok=True)
        final = self._path(key)
        if fs.exists(final) and not overwrite:
            return  # content-addressed: the same unit's bytes are already published
        tmp = f"{root}/.{key.digest}.{uuid.uuid4().hex}.tmp"
        fs.pipe_file(tmp, encode(key, entry))
        fs.mv(tmp, final)

    def get_or_compute(self, key: CacheKey, compute: Callable[[], CacheEntry]) -> tuple[CacheEntry, bool]:
        entry = self.load(key)
        if entry is not None:
            return entry, True
        entry = compute()
        self.save(key, entry, overwrite=True)
        return entry, False

    def info(self) -> CacheInfo:
        fs, root = self._fs()
        per_probe: dict[str, int] = {}
        total = 0
        if fs.exists(root):
            for path in fs.ls(root, detail=False):
                if not str(path).endswith(SUFFIX):
                    continue
                total += int(fs.size(path))
                with np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False) as npz:
                    probe = json.loads(npz[META_ARRAY].tobytes().decode())["key"]["probe"]
                per_probe[probe] = per_probe.get(probe, 0) + 1
        return CacheInfo(Path(self.url), dict(sorted(per_probe.items())), total)

    def clear(self) -> int:
        fs, root = self._fs()
        if not fs.exists(root):
            return 0
        removed = 0
        for path in fs.ls(root, detail=False):
            if str(path).endswith(SUFFIX) or str(path).endswith(".tmp"):
                fs.rm(path)
                removed += str(path).endswith(SUFFIX)
        return removed
