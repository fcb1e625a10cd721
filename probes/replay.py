"""Replay of released explanation files (METHODS.md §6), so probe 1's statistics run with no model.

A replay source is a pair ``<prefix>.npz`` + ``<prefix>.jsonl``:
* NPZ: one matrix per instance id, (prompt_len, resp_len); either levels 0..L (§1.4 with b = 0,
  the released format) or raw float gradient x input I, which is normalised here first.
* JSONL: ``id``, ``source``, ``prompt_tokens``, ``response_tokens``, ``instruction_token_mask``.
Any attribution tool's output can be replayed once written in this shape.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from shiftcheck.probes.importance import ImportanceConfig, ImportanceResult, InstanceAttribution, is_levels, normalise


class ReplayError(ValueError):
    """A replay file is missing or does not follow METHODS §6."""


def resolve_prefix(spec: str | Path) -> Path:
    """Accept ``DIR`` (holding exactly one .npz), ``PREFIX`` or ``PREFIX.npz`` / ``PREFIX.jsonl``."""
    path = Path(spec)
    if path.is_dir():
        npzs = sorted(path.glob("*.npz"))
        if len(npzs) != 1:
            raise ReplayError(
                f"replay directory {path} must hold exactly one .npz (found {len(npzs)}); pass PREFIX instead"
            )
        path = npzs[0]
    if path.suffix in (".npz", ".jsonl"):
        path = path.with_suffix("")
    for suffix in (".npz", ".jsonl"):
        if not path.with_suffix(suffix).is_file():
            raise ReplayError(f"replay file not found: {path.with_suffix(suffix)} (need PREFIX.npz and PREFIX.jsonl)")
    return path


def replay_fingerprint(prefix: Path) -> str:
    """Content hash of both replay files, so reports name exactly what was replayed."""
    h = hashlib.sha256()
    for suffix in (".npz", ".jsonl"):
        with prefix.with_suffix(suffix).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def _read_records(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            for key in ("id", "prompt_tokens", "instruction_token_mask"):
                if key not in rec:
                    raise ReplayError(f"{path}:{lineno}: missing field {key!r}")
            records.append(rec)
    return records


def _levels(matrix: np.ndarray, L: int, where: str) -> np.ndarray:
    """Released levels are used as they are; a float raw I is normalised with §1.4 (b = 0) first."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ReplayError(f"{where}: expected a 2-d matrix (prompt_len, resp_len), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ReplayError(f"{where}: matrix holds NaN or inf")
    if is_levels(matrix, L):
        return matrix.astype(np.uint8)
    return normalise(matrix, L, 0)


def load_replay(spec: str | Path, config: ImportanceConfig = ImportanceConfig(), label: str | None = None) -> ImportanceResult:
    """Load a released attribution dump as an :class:`ImportanceResult` (same type as a live run)."""
    prefix = resolve_prefix(spec)
    records = _read_records(prefix.with_suffix(".jsonl"))
    try:
        npz = np.load(prefix.with_suffix(".npz"), allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ReplayError(f"cannot read {prefix.with_suffix('.npz')}: {exc}") from exc
    instances = []
    with npz:
        for rec in records:
            key = rec["id"]
            where = f"{prefix.with_suffix('.npz')}[{key}]"
            if key not in npz.files:
                raise ReplayError(f"{where}: id listed in the JSONL has no matrix in the NPZ")
            S0 = _levels(npz[key], config.L, where)
            mask = np.asarray(rec["instruction_token_mask"], dtype=bool)
            if S0.shape[0] != len(mask) or S0.shape[0] != len(rec["prompt_tokens"]):
                raise ReplayError(
                    f"{where}: matrix has {S0.shape[0]} prompt rows but the JSONL lists "
                    f"{len(rec['prompt_tokens'])} prompt tokens and a mask of {len(mask)}"
                )
            instances.append(
                InstanceAttribution(
                    id=key,
                    source=str(rec.get("source") or "unknown"),
                    prompt_tokens=tuple(rec["prompt_tokens"]),
                    response_tokens=tuple(rec.get("response_tokens") or ()),
                    instruction_mask=mask,
                    S0=S0,
                )
            )
    if not instances:
        raise ReplayError(f"{prefix}.jsonl lists no instances")
    return ImportanceResult(label=label or prefix.name, instances=tuple(instances), config=config)
