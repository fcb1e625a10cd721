"""Unit tests for probes.fingerprint: content hashing of checkpoint folders, the memo, and hub ids."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from shiftcheck.probes.models import fingerprint as fp
from shiftcheck.probes.models.fingerprint import FingerprintError, fingerprint_checkpoint, fingerprint_hub, fingerprint_path


def make_checkpoint(root: Path, seed: int = 0) -> Path:
    """A small fake checkpoint: random weight bytes, a config, a tokenizer file in a subfolder, and hidden junk."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.safetensors").write_bytes(rng.bytes(3 * (1 << 20) + 17))  # spans several hash chunks
    (root / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    (root / "tokenizer").mkdir(exist_ok=True)
    (root / "tokenizer" / "tokenizer.json").write_text('{"vocab": {}}')
    (root / ".cache").mkdir(exist_ok=True)
    (root / ".cache" / "download.lock").write_text("x")
    (root / ".DS_Store").write_text("x")
    return root


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_same_directory_gives_same_fingerprint(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    first = fingerprint_path(ckpt, None)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert fingerprint_path(ckpt, None) == first
    assert fingerprint_path(ckpt, tmp_path / "memo") == first  # memo does not change the value
    assert fingerprint_path(ckpt, tmp_path / "memo") == first


def test_identical_content_elsewhere_gives_same_fingerprint(tmp_path: Path) -> None:
    assert fingerprint_path(make_checkpoint(tmp_path / "a"), None) == fingerprint_path(make_checkpoint(tmp_path / "b"), None)
    assert fingerprint_path(make_checkpoint(tmp_path / "c", seed=1), None) != fingerprint_path(tmp_path / "a", None)


def test_hidden_files_and_cache_folder_are_ignored(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    before = fingerprint_path(ckpt, None)
    (ckpt / ".cache" / "download.lock").write_text("changed")
    (ckpt / ".cache" / "new").write_text("new")
    (ckpt / ".hidden").write_text("new")
    assert fingerprint_path(ckpt, None) == before


def test_one_byte_edit_with_new_mtime_changes_fingerprint_despite_memo(tmp_path: Path) -> None:
    ckpt, memo = make_checkpoint(tmp_path / "ckpt"), tmp_path / "memo"
    before = fingerprint_path(ckpt, memo)
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1234] ^= 0x01  # same size
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # mtime surely differs
    assert fingerprint_path(ckpt, memo) != before


def test_content_edit_changes_fingerprint(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    before = fingerprint_path(ckpt, None)
    (ckpt / "config.json").write_text('{"model_type": "llama", "hidden_size": 9}')
    assert fingerprint_path(ckpt, None) != before


def test_rename_add_and_remove_change_fingerprint(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    seen = {fingerprint_path(ckpt, None)}
    (ckpt / "config.json").rename(ckpt / "config2.json")
    seen.add(fingerprint_path(ckpt, None))
    (ckpt / "extra.bin").write_bytes(b"")
    seen.add(fingerprint_path(ckpt, None))
    (ckpt / "tokenizer" / "tokenizer.json").unlink()
    seen.add(fingerprint_path(ckpt, None))
    assert len(seen) == 4


def test_moving_a_file_between_folders_changes_fingerprint(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    before = fingerprint_path(ckpt, None)
    (ckpt / "tokenizer" / "tokenizer.json").rename(ckpt / "tokenizer.json")
    assert fingerprint_path(ckpt, None) != before


def counting_hash(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the per-file hash with a spy that records each file it reads."""
    calls: list[Path] = []
    real = fp.hash_file

    def spy(path: Path, *args, **kwargs) -> str:
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fp, "hash_file", spy)
    return calls


def test_memo_avoids_rehashing_unchanged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, memo = make_checkpoint(tmp_path / "ckpt"), tmp_path / "memo"
    calls = counting_hash(monkeypatch)
    first = fingerprint_path(ckpt, memo)
    assert len(calls) == 3  # model, config, tokenizer; hidden files never read
    assert (memo / fp.MEMO_FILENAME).is_file()
    calls.clear()
    assert fingerprint_path(ckpt, memo) == first
    assert calls == []
    bump_mtime(ckpt / "config.json")
    assert fingerprint_path(ckpt, memo) == first  # same content, only re-read
    assert calls == [(ckpt / "config.json").absolute()]


def test_without_memo_every_file_is_hashed_each_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    calls = counting_hash(monkeypatch)
    fingerprint_path(ckpt, None)
    fingerprint_path(ckpt, None)
    assert len(calls) == 6


@pytest.mark.parametrize("garbage", ["{not json", '{"schema_version": 99, "files": {}}', "[]", '{"schema_version": 1, "files": {"x": 3}}'])
def test_corrupt_memo_is_ignored_and_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, garbage: str) -> None:
    ckpt, memo = make_checkpoint(tmp_path / "ckpt"), tmp_path / "memo"
    expected = fingerprint_path(ckpt, None)
    memo.mkdir()
    (memo / fp.MEMO_FILENAME).write_text(garbage)
    assert fingerprint_path(ckpt, memo) == expected
    calls = counting_hash(monkeypatch)
    assert fingerprint_path(ckpt, memo) == expected
    assert calls == []  # the rewritten memo is valid


def test_memo_with_wrong_digest_but_stale_stamp_is_not_trusted(tmp_path: Path) -> None:
    """A memo record only applies when size and mtime_ns both match the file on disk."""
    ckpt, memo = make_checkpoint(tmp_path / "ckpt"), tmp_path / "memo"
    expected = fingerprint_path(ckpt, memo)
    records = fp.read_memo(memo / fp.MEMO_FILENAME)
    poisoned = {k: fp.FileStamp(size=s.size + 1, mtime_ns=s.mtime_ns, sha256="0" * 64) for k, s in records.items()}
    fp.write_memo(memo / fp.MEMO_FILENAME, poisoned)
    assert fingerprint_path(ckpt, memo) == expected


def test_memo_keeps_other_checkpoints(tmp_path: Path) -> None:
    memo = tmp_path / "memo"
    fingerprint_path(make_checkpoint(tmp_path / "a"), memo)
    fingerprint_path(make_checkpoint(tmp_path / "b", seed=1), memo)
    keys = fp.read_memo(memo / fp.MEMO_FILENAME)
    assert sum(k.startswith(str((tmp_path / "a").absolute()) + os.sep) for k in keys) == 3
    assert sum(k.startswith(str((tmp_path / "b").absolute()) + os.sep) for k in keys) == 3


def test_empty_or_missing_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FingerprintError, match="no .*files"):
        fingerprint_path(tmp_path / "empty", None)
    with pytest.raises(FingerprintError, match="does not exist"):
        fingerprint_path(tmp_path / "missing", None)


# --------------------------------------------------------------------------------------------- hub


def fake_hub(monkeypatch: pytest.MonkeyPatch, model_info) -> list[tuple[str, str | None]]:
    """Install a stand-in ``huggingface_hub`` whose ``HfApi().model_info`` is ``model_info``; record calls."""
    calls: list[tuple[str, str | None]] = []

    class FakeApi:
        def model_info(self, repo_id: str, revision: str | None = None):
            calls.append((repo_id, revision))
            return model_info(repo_id, revision)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(HfApi=FakeApi))
    return calls


def test_hub_fingerprint_is_resolved_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    calls = fake_hub(monkeypatch, lambda repo, rev: types.SimpleNamespace(sha=sha))
    assert fingerprint_hub("org/model", "v1") == f"hub:org/model@{sha}"
    assert fingerprint_checkpoint("org/model") == f"hub:org/model@{sha}"
    assert calls == [("org/model", "v1"), ("org/model", None)]


def test_hub_errors_become_fingerprint_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(repo: str, rev: str | None):
        raise ConnectionError("no network")

    fake_hub(monkeypatch, offline)
    with pytest.raises(FingerprintError, match=r"'org/model'.*ConnectionError: no network.*local checkpoint directory"):
        fingerprint_hub("org/model", None)


def test_hub_without_sha_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub(monkeypatch, lambda repo, rev: types.SimpleNamespace(sha=None))
    with pytest.raises(FingerprintError, match="no commit sha"):
        fingerprint_hub("org/model", "main")


def test_dispatch_local_directory_and_bad_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub(monkeypatch, lambda repo, rev: pytest.fail("local specs must not reach the hub"))
    ckpt = make_checkpoint(tmp_path / "ckpt")
    assert fingerprint_checkpoint(str(ckpt)) == fingerprint_path(ckpt, None)
    with pytest.raises(FingerprintError, match="drop the revision"):
        fingerprint_checkpoint(str(ckpt), revision="main")
    with pytest.raises(FingerprintError, match="not a directory"):
        fingerprint_checkpoint(str(ckpt / "config.json"))
    with pytest.raises(FingerprintError, match="does not exist"):
        fingerprint_checkpoint(str(tmp_path / "missing" / "ckpt"))
