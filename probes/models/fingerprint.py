"""Checkpoint fingerprints: a content identity for the result cache (``probes.cache``).

A fingerprint names *what* a checkpoint is, not *where* it lives, so that a cached probe result
is only ever reused for the same weights:

* local directory -> ``"sha256:<hex>"``, a SHA-256 over every regular file of the checkpoint
  (weights, configs, tokenizer files), see :func:`fingerprint_path`;
* Hugging Face Hub id -> ``"hub:<repo_id>@<commit sha>"``, the resolved commit, see
  :func:`fingerprint_hub`;
* GGUF file (a ``.gguf`` path, or a directory plus ``gguf_file``) -> ``"gguf:sha256:<hex>"``, the
  SHA-256 of that one file's content (other files beside it play no part in loading), see
  :func:`fingerprint_file`.

Directory hash (one line per file, files in sorted order of their POSIX relative path ``r_i``)::

    H = sha256( concat_i  r_i  || 0x00 ||  hex(sha256(content_i))  || 0x0a )

so renaming, adding, removing or editing any file changes ``H``. Hidden files and directories
(a path component starting with ``.``, which covers ``.cache`` and ``.git``) are skipped. Symlinks to
files are followed (Hub snapshot folders are symlinks into a blob store).

Hashing a 14 GB checkpoint takes about a minute, so per-file digests are memoised in a JSON file under
``memo_dir``, keyed by ``(absolute path, size, mtime_ns)``. An edit that keeps both size and
``mtime_ns`` identical is therefore not seen; every ordinary write changes ``mtime_ns``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftcheck.probes.cache import sha256_of_file as hash_file  # the one sha256 helper
from shiftcheck.probes.models.errors import CheckpointError
from shiftcheck.probes.models.gguf import gguf_location, is_gguf_name

logger = logging.getLogger(__name__)

MEMO_FILENAME = "fingerprint_memo.json"
MEMO_SCHEMA_VERSION = 1


class FingerprintError(RuntimeError):
    """A checkpoint could not be fingerprinted; the message names the checkpoint and the cause."""


@dataclass(frozen=True)
class FileStamp:
    """What the memo trusts: a file at ``path`` with this ``size`` and ``mtime_ns`` has ``sha256``."""

    size: int
    mtime_ns: int
    sha256: str


# ---------------------------------------------------------------------------------------------
# per-file hashing and the memo
# ---------------------------------------------------------------------------------------------


def list_checkpoint_files(root: Path) -> list[Path]:
    """Relative paths of all regular files under ``root``, sorted by POSIX form.

    Skips any path with a component starting with ``.`` (hidden files, ``.cache/``, ``.git/``).
    Directory symlinks are not descended into; file symlinks are followed.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            full = Path(dirpath) / name
            if not name.startswith(".") and full.is_file():
                found.append(full.relative_to(root))
    return sorted(found, key=lambda p: p.as_posix())


def memo_file(memo_dir: Path) -> Path:
    """The memo's location inside ``memo_dir``."""
    return memo_dir / MEMO_FILENAME


def stamp_from_json(raw: Any) -> FileStamp | None:
    """Parse one memo record; ``None`` if it is malformed."""
    if not isinstance(raw, dict):
        return None
    size, mtime_ns, sha = raw.get("size"), raw.get("mtime_ns"), raw.get("sha256")
    if not (isinstance(size, int) and isinstance(mtime_ns, int) and isinstance(sha, str) and len(sha) == 64):
        return None
    return FileStamp(size=size, mtime_ns=mtime_ns, sha256=sha)


def read_memo(path: Path) -> dict[str, FileStamp]:
    """Load the memo; a missing file is empty, a corrupt one is ignored with a warning (and rewritten later)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable fingerprint memo %s (%s); it will be rewritten", path, exc)
        return {}
    if not isinstance(raw, dict) or raw.get("schema_version") != MEMO_SCHEMA_VERSION or not isinstance(raw.get("files"), dict):
        logger.warning("ignoring fingerprint memo %s with unknown layout; it will be rewritten", path)
        return {}
    stamps = {key: stamp_from_json(value) for key, value in raw["files"].items()}
    return {key: stamp for key, stamp in stamps.items() if stamp is not None}


def write_memo(path: Path, files: dict[str, FileStamp]) -> None:
    """Write the memo atomically: a temp file in the same directory, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "schema_version": MEMO_SCHEMA_VERSION,
        "files": {
            key: {"size": s.size, "mtime_ns": s.mtime_ns, "sha256": s.sha256} for key, s in sorted(files.items())
        },
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=0)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stamped_hash(path: Path, memo: dict[str, FileStamp]) -> FileStamp:
    """The file's stamp, from ``memo`` when ``(size, mtime_ns)`` match, else by hashing it.

    Raises :class:`FingerprintError` if the file changes while it is being hashed.
    """
    before = path.stat()
    known = memo.get(str(path))
    if known is not None and known.size == before.st_size and known.mtime_ns == before.st_mtime_ns:
        return known
    sha = hash_file(path)
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise FingerprintError(f"{path} changed while it was being hashed; wait for the write to finish and retry")
    return FileStamp(size=before.st_size, mtime_ns=before.st_mtime_ns, sha256=sha)


def combine(entries: list[tuple[str, str]]) -> str:
    """``sha256(concat r || 0x00 || h || 0x0a)`` over ``(relative posix path r, file hex digest h)`` pairs, in order."""
    digest = hashlib.sha256()
    for rel, sha in entries:
        digest.update(rel.encode("utf-8") + b"\x00" + sha.encode("ascii") + b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------


def fingerprint_path(path: Path, memo_dir: Path | None) -> str:
    """``"sha256:<hex>"`` content hash of the checkpoint directory ``path`` (module docstring formula).

    With ``memo_dir`` set, per-file digests are reused from and saved to ``memo_dir/fingerprint_memo.json``
    (memo entries for files of this directory that no longer exist are dropped; other entries are kept).
    With ``memo_dir=None`` every file is hashed.
    """
    root = Path(path).expanduser().absolute()
    if not root.is_dir():
        raise FingerprintError(f"checkpoint directory {root} does not exist or is not a directory")
    rel_paths = list_checkpoint_files(root)
    if not rel_paths:
        raise FingerprintError(f"checkpoint directory {root} holds no (non-hidden) files to fingerprint")
    memo_path = memo_file(Path(memo_dir)) if memo_dir is not None else None
    memo = read_memo(memo_path) if memo_path is not None else {}
    stamps = {str(root / rel): stamped_hash(root / rel, memo) for rel in rel_paths}
    if memo_path is not None and any(memo.get(key) != stamp for key, stamp in stamps.items()):
        latest = read_memo(memo_path)  # re-read: another process may have added entries meanwhile
        prefix = str(root) + os.sep
        kept = {key: s for key, s in latest.items() if not key.startswith(prefix)}
        write_memo(memo_path, {**kept, **stamps})
    return "sha256:" + combine([(rel.as_posix(), stamps[str(root / rel)].sha256) for rel in rel_paths])


def fingerprint_file(path: Path, memo_dir: Path | None) -> str:
    """``"gguf:sha256:<hex>"``: the content hash of one checkpoint file, memoised like directory files."""
    file = Path(path).expanduser().absolute()
    if not file.is_file():
        raise FingerprintError(f"checkpoint file {file} does not exist or is not a file")
    memo_path = memo_file(Path(memo_dir)) if memo_dir is not None else None
    memo = read_memo(memo_path) if memo_path is not None else {}
    stamp = stamped_hash(file, memo)
    if memo_path is not None and memo.get(str(file)) != stamp:
        write_memo(memo_path, {**read_memo(memo_path), str(file): stamp})
    return "gguf:sha256:" + stamp.sha256


def fingerprint_hub(repo_id: str, revision: str | None) -> str:
    """``"hub:<repo_id>@<sha>"`` where ``sha`` is the commit ``revision`` (default branch if ``None``) resolves to.

    Uses ``huggingface_hub.HfApi().model_info(repo_id, revision=revision).sha``; needs network access
    (or a reachable mirror). Every failure becomes a :class:`FingerprintError` naming the repo and revision.
    """
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise FingerprintError(f"hub repo id must be a non-empty string like 'org/name', got {repo_id!r}")
    where = f"hub checkpoint {repo_id!r} (revision {revision or 'default branch'})"
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise FingerprintError(f"cannot fingerprint {where}: huggingface_hub is not installed") from exc
    try:
        sha = HfApi().model_info(repo_id, revision=revision).sha
    except Exception as exc:  # network, auth, missing repo/revision: all reported the same way
        raise FingerprintError(
            f"cannot resolve {where} to a commit: {type(exc).__name__}: {exc}. "
            "Offline? Pass a local checkpoint directory instead (it is fingerprinted by content)."
        ) from exc
    if not isinstance(sha, str) or not sha:
        raise FingerprintError(f"cannot resolve {where}: the hub returned no commit sha ({sha!r})")
    return f"hub:{repo_id}@{sha}"


def looks_like_path(spec: str) -> bool:
    """True if ``spec`` names a local path rather than a Hub id (``name`` or ``org/name``).

    Absolute, ``~``- or ``.``-prefixed, deeper than ``org/name``, with a backslash, a ``.gguf`` file
    name, or a relative path whose parent directory exists locally (``models/x`` when ``models/`` is
    here). The one heuristic used by loading and fingerprinting alike.
    """
    if spec.startswith(("/", "~", ".")) or "\\" in spec or spec.count("/") > 1 or is_gguf_name(spec):
        return True
    parent = Path(spec).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def fingerprint_checkpoint(
    spec: str, revision: str | None = None, memo_dir: Path | None = None, gguf_file: str | None = None
) -> str:
    """Fingerprint ``spec``: a GGUF file (a ``.gguf`` path, or a directory plus ``gguf_file``) by that
    file's content, an existing local directory by content, anything else as a Hub repo id (with
    ``gguf_file``: still the repo's commit, which fixes the file).

    A ``revision`` only makes sense for the Hub; giving one with a local directory is an error, since
    the directory's content, not a revision, is what would be loaded.
    """
    try:
        gguf = gguf_location(spec, gguf_file)
    except CheckpointError as exc:
        raise FingerprintError(str(exc)) from None
    local = Path(spec).expanduser()
    if gguf is not None:
        if revision is not None:
            raise FingerprintError(f"revision {revision!r} was given for local GGUF file {local}; drop the revision")
        return fingerprint_file(gguf[0] / gguf[1], memo_dir)
    if local.is_dir():
        if revision is not None:
            raise FingerprintError(
                f"revision {revision!r} was given for local checkpoint directory {local}; "
                "local directories are identified by content, drop the revision"
            )
        return fingerprint_path(local, memo_dir)
    if local.exists():
        raise FingerprintError(f"checkpoint {spec!r} exists but is not a directory or a .gguf file; accepted: a "
                               "checkpoint folder (config.json and weights), a .gguf file, a hub id ('org/name') "
                               "or world:NAME")
    if looks_like_path(spec):
        raise FingerprintError(
            f"checkpoint directory {spec!r} does not exist (and it is not a hub id of the form 'name' or 'org/name')"
        )
    return fingerprint_hub(spec, revision)
