"""Persistent sqlite answer cache for chat annotators: one row per answered request, committed as
it arrives, so a rerun costs nothing and a kill loses no finished answer.

Key: sha256 of (endpoint model, template version, messages, parameters, repetition). Only the
request content and the answer are stored: never a header, a base URL credential or an API key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path


def answer_key(model: str, template_version: str, messages: list[dict], params: dict, repetition: int) -> str:
    blob = json.dumps({"model": model, "template": template_version, "messages": messages, "params": params,
                       "repetition": repetition}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """Thread-safe get/put over one sqlite file (WAL, autocommit per answer)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT)")

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, model: str, answer: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers (key, model, answer) VALUES (?, ?, ?)",
                             (key, model, answer))

    def has_model(self, model: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM answers WHERE model = ? LIMIT 1", (model,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
