"""On-disk cache of probe results, shared safely between processes and xdist workers.

One entry per :class:`CacheKey` lives in ``<root>/<key.digest>/``::

    meta.json    {"schema_version": 1, "key": {...the four key fields...}, "digest": ...,
                  "array_names": [...], "arrays_sha256": <hex of arrays.npz>, "meta": {...}}
    arrays.npz   np.savez(arr_0, arr_1, ...), arr_i holding the array named array_names[i]

with ``digest = sha256(canonical_json({fingerprint, probe, config, code_version}))`` and canonical JSON
meaning ``sort_keys=True, separators=(",", ":")``, no NaN. Array names live in the JSON, so any string
(``"user_oriented_task_0/S"``) is a valid name. Only JSON and numeric NPZ are stored: no pickle, no
Python class paths. Files are written to temp files in the entry directory and moved into place with
``os.replace``.

A stored entry is used only if its ``meta.json`` parses, has this schema version, repeats exactly the
requested key (so one checkpoint's result is never returned for another) and the SHA-256 of
``arrays.npz`` matches; anything else is a miss that is logged and recomputed.
:meth:`ResultCache.get_or_compute` holds a ``filelock.FileLock`` on ``<root>/<digest>.lock`` so that
concurrent processes compute each entry once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from shiftcheck.probes.cache_key import (  # noqa: F401 (re-exported: the cache's public names)
    CACHE_ENV_VAR,
    DEFAULT_DIRNAME,
    NUMERIC_KINDS,
    SCHEMA_VERSION,
    CacheEntry,
    CacheError,
    CacheInfo,
    CacheKey,
    canonical_json,
    check_json_roundtrip,
    default_local_dir,
    validate_entry,
)

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"
DEFAULT_LOCK_TIMEOUT_S = 3600.0
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class CacheLockTimeout(CacheError):
    """Waiting for another process to finish computing an entry took longer than the lock timeout."""


def default_cache_dir() -> Path:
    """``$SHIFTCHECK_CACHE`` if set to a local path, else ``./.shiftcheck_cache`` (absolute, from the cwd).

    An fsspec URL in ``$SHIFTCHECK_CACHE`` is served by :func:`open_cache`; local state (fingerprint
    memos, built worlds) then stays here.
    """
    env = os.environ.get(CACHE_ENV_VAR, "").strip()
    if env and "://" not in env:
        return Path(env).expanduser().absolute()
    return default_local_dir()


def open_cache(spec: str | Path | None = None):
    """The result cache for ``spec`` (default ``$SHIFTCHECK_CACHE``): a local :class:`ResultCache`, or
    an :class:`~shiftcheck.probes.remote_cache.FsspecResultCache` for a URL (``s3://``, ``file://`` ...)."""
    text = str(spec) if spec is not None else os.environ.get(CACHE_ENV_VAR, "").strip()
    if "://" in text:
        from shiftcheck.probes.remote_cache import FsspecResultCache

        return FsspecResultCache(text)
    return ResultCache(Path(text).expanduser().absolute() if text else default_local_dir())


def sha256_of_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(directory: Path, final_name: str, write: Callable[[Any], None], mode: str) -> Path:
    """Write through ``write(fh)`` to a temp file in ``directory``, fsync, return its path (not yet moved)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{final_name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def read_entry(entry_dir: Path, key: CacheKey) -> tuple[CacheEntry | None, str]:
    """Load and verify one entry directory; ``(None, reason)`` on any miss, ``(entry, "")`` on a hit."""
    meta_path, arrays_path = entry_dir / META_FILE, entry_dir / ARRAYS_FILE
    try:
        stored = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "" if not entry_dir.exists() else f"{meta_path} is missing (interrupted write?)"
    except (OSError, ValueError) as exc:
        return None, f"{meta_path} is unreadable ({exc})"
    if not isinstance(stored, dict):
        return None, f"{meta_path} is not a JSON object"
    if stored.get("schema_version") != SCHEMA_VERSION:
        return None, f"{meta_path} has schema_version {stored.get('schema_version')!r}, expected {SCHEMA_VERSION}"
    if stored.get("key") != key.to_json():
        return None, f"{meta_path} belongs to key {stored.get('key')!r}, not the requested {key.to_json()!r}"
    names, expected_sha, meta = stored.get("array_names"), stored.get("arrays_sha256"), stored.get("meta")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and isinstance(meta, dict)):
        return None, f"{meta_path} lacks a valid 'array_names' list or 'meta' object"
    try:
        with arrays_path.open("rb") as fh:  # one handle: hash and parse the same bytes
            digest = hashlib.sha256()
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            if digest.hexdigest() != expected_sha:
                return None, f"{arrays_path} has sha256 {digest.hexdigest()}, meta.json expects {expected_sha}"
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
                if sorted(npz.files) != sorted(f"arr_{i}" for i in range(len(names))):
                    return None, f"{arrays_path} holds {len(npz.files)} arrays, meta.json names {len(names)}"
                arrays = {name: npz[f"arr_{i}"] for i, name in enumerate(names)}
    except FileNotFoundError:
        return None, f"{arrays_path} is missing"
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad header, zlib error, pickled arrays: all a miss
        return None, f"{arrays_path} is unreadable ({type(exc).__name__}: {exc})"
    return CacheEntry(meta=meta, arrays=arrays), ""


# ---------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------



@dataclass(frozen=True)
class ResultCache:
    """Result cache rooted at ``root`` (created on first write). See the module docstring for the layout."""

    root: Path
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S

    @property
    def local(self) -> Path:
        """Where local state (fingerprint memos, built worlds) lives: the cache itself."""
        return self.root

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())
        if not (isinstance(self.lock_timeout_s, (int, float)) and math.isfinite(self.lock_timeout_s) and self.lock_timeout_s > 0):
            raise CacheError(f"lock_timeout_s must be a finite number of seconds > 0, got {self.lock_timeout_s!r}")

    def entry_dir(self, key: CacheKey) -> Path:
        """``<root>/<key.digest>``."""
        return self.root / key.digest

    def lock_path(self, key: CacheKey) -> Path:
        """``<root>/<key.digest>.lock``."""
        return self.root / f"{key.digest}.lock"

    def has(self, key: CacheKey) -> bool:
        """Cheap presence check (the entry is verified only when loaded)."""
        return (self.entry_dir(key) / META_FILE).is_file()

    def load(self, key: CacheKey) -> CacheEntry | None:
        """The verified entry for ``key``, or ``None`` (a damaged entry is logged as a warning)."""
        entry, reason = read_entry(self.entry_dir(key), key)
        if reason:
            logger.warning("cache miss for %s/%s: %s; it will be recomputed", key.probe, key.digest[:12], reason)
        return entry

    def save(self, key: CacheKey, entry: CacheEntry, *, overwrite: bool = False) -> None:
        """Store ``entry`` under ``key``: ``arrays.npz`` then ``meta.json``, each via temp file + ``os.replace``.

        Refuses to replace an existing entry unless ``overwrite=True``. A reader that races a
        concurrent overwrite sees either a valid entry or a sha mismatch (a miss), never mixed data.
        """
        validate_entry(entry)
        directory = self.entry_dir(key)
        if (directory / META_FILE).exists() and not overwrite:
            raise CacheError(f"cache entry {directory} already exists; pass overwrite=True to replace it")
        directory.mkdir(parents=True, exist_ok=True)
        names = list(entry.arrays)
        arrays_tmp = write_atomic(directory, ARRAYS_FILE, lambda fh: np.savez(fh, *(entry.arrays[n] for n in names)), "wb")
        try:
            stored = {
                "schema_version": SCHEMA_VERSION,
                "key": key.to_json(),
                "digest": key.digest,
                "array_names": names,
                "arrays_sha256": sha256_of_file(arrays_tmp),
                "meta": entry.meta,
            }
            text = json.dumps(stored, sort_keys=True, indent=1, allow_nan=False)
            meta_tmp = write_atomic(directory, META_FILE, lambda fh: fh.write(text), "w")
        except BaseException:
            arrays_tmp.unlink(missing_ok=True)
            raise
        os.replace(arrays_tmp, directory / ARRAYS_FILE)
        os.replace(meta_tmp, directory / META_FILE)

    def get_or_compute(self, key: CacheKey, compute: Callable[[], CacheEntry]) -> tuple[CacheEntry, bool]:
        """``(entry, hit)``: the cached entry, or ``compute()`` run once across processes and stored.

        Check without the lock, take ``<root>/<digest>.lock`` (waiting up to ``lock_timeout_s``), check
        again, then compute, save (overwriting a damaged entry) and release.
        """
        entry, _ = read_entry(self.entry_dir(key), key)
        if entry is not None:
            return entry, True
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path(key)), timeout=self.lock_timeout_s)
        try:
            lock.acquire()
        except Timeout as exc:
            raise CacheLockTimeout(
                f"waited {self.lock_timeout_s:g} s for {self.lock_path(key)} while another process computes "
                f"probe {key.probe!r} for {key.fingerprint!r}. If no other shiftcheck run is alive, delete the "
                "lock file; otherwise raise lock_timeout_s"
            ) from exc
        try:
            entry = self.load(key)
            if entry is not None:
                return entry, True
            entry = compute()
            self.save(key, entry, overwrite=True)
            return entry, False
        finally:
            lock.release()

    def info(self) -> "CacheInfo":
        """Entries per probe and total bytes on disk under ``root`` (locks and temp files included)."""
        per_probe: dict[str, int] = {}
        total = 0
        if self.root.is_dir():
            for path in self.root.rglob("*"):
                if path.is_file():
                    total += path.stat().st_size
            for child in self.root.iterdir():
                meta = child / META_FILE
                if child.is_dir() and DIGEST_RE.match(child.name) and meta.is_file():
                    try:
                        probe = json.loads(meta.read_text())["key"]["probe"]
                    except (ValueError, KeyError, TypeError):
                        probe = "(unreadable)"
                    per_probe[probe] = per_probe.get(probe, 0) + 1
        return CacheInfo(self.root, dict(sorted(per_probe.items())), total)

    def clear(self) -> int:
        """Remove every entry directory and stray temp file under ``root``; return the number of entries removed.

        Lock files are left in place (another process may hold one); ``root`` itself stays.
        """
        if not self.root.is_dir():
            return 0
        removed = 0
        for child in self.root.iterdir():
            if child.is_dir() and DIGEST_RE.match(child.name):
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
            elif child.is_file() and child.name.endswith(".tmp"):
                child.unlink(missing_ok=True)
        return removed
