"""Unit tests for probes.cache: key digests, round trips, integrity checks and cross-process locking."""

from __future__ import annotations

import json
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from shiftcheck.probes.cache import (
    ARRAYS_FILE,
    META_FILE,
    CacheEntry,
    CacheError,
    CacheKey,
    CacheLockTimeout,
    ResultCache,
    default_cache_dir,
)

BASE_KEY = dict(fingerprint="sha256:" + "a" * 64, probe="importance", config={"b": 0, "layers": [1, 2]}, code_version="1")


def make_entry(seed: int) -> CacheEntry:
    rng = np.random.default_rng(seed)
    return CacheEntry(
        meta={"prompt_ids": ["user_oriented_task_0", "lima_author_3"], "score": 0.25, "missing": None},
        arrays={
            "user_oriented_task_0/S": rng.random((3, 4)).astype(np.float32),
            "lima_author_3/S": rng.integers(0, 9, size=(5, 2)).astype(np.uint8),
            "file": np.arange(3),  # a name that would clash with np.savez's own parameter
            "mask": np.array([True, False]),
        },
    )


def assert_entries_equal(got: CacheEntry, expected: CacheEntry) -> None:
    assert got.meta == expected.meta
    assert list(got.arrays) == list(expected.arrays)
    for name, array in expected.arrays.items():
        np.testing.assert_array_equal(got.arrays[name], array)
        assert got.arrays[name].dtype == array.dtype


# --------------------------------------------------------------------------------------------- keys


def test_digest_is_stable_and_order_independent() -> None:
    a = CacheKey(**BASE_KEY)
    b = CacheKey(**{**BASE_KEY, "config": {"layers": [1, 2], "b": 0}})
    assert a.digest == b.digest == CacheKey(**BASE_KEY).digest
    assert len(a.digest) == 64
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize(
    "field, value",
    [
        ("fingerprint", "sha256:" + "b" * 64),
        ("probe", "attention_pairs"),
        ("config", {"b": 1, "layers": [1, 2]}),
        ("code_version", "2"),
    ],
)
def test_digest_changes_with_each_field(field: str, value: object) -> None:
    assert CacheKey(**{**BASE_KEY, field: value}).digest != CacheKey(**BASE_KEY).digest


def test_key_copies_config_so_later_mutation_cannot_change_it() -> None:
    config = {"b": 0}
    key = CacheKey(**{**BASE_KEY, "config": config})
    before = key.digest
    config["b"] = 1
    assert key.digest == before


@pytest.mark.parametrize("config", [{"x": float("nan")}, {"x": object()}])
def test_key_rejects_non_json_config(config: dict) -> None:
    with pytest.raises(CacheError, match="canonical JSON"):
        CacheKey(**{**BASE_KEY, "config": config})


def test_key_rejects_empty_fingerprint() -> None:
    with pytest.raises(CacheError, match="fingerprint"):
        CacheKey(**{**BASE_KEY, "fingerprint": ""})


# --------------------------------------------------------------------------------------------- round trip


def test_save_load_round_trip(tmp_path: Path) -> None:
    cache, key, entry = ResultCache(tmp_path), CacheKey(**BASE_KEY), make_entry(0)
    assert cache.load(key) is None
    cache.save(key, entry)
    assert_entries_equal(cache.load(key), entry)
    stored = json.loads((tmp_path / key.digest / META_FILE).read_text())
    assert stored["schema_version"] == 1
    assert stored["key"] == key.to_json()


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    cache, key = ResultCache(tmp_path), CacheKey(**BASE_KEY)
    cache.save(key, make_entry(0))
    with pytest.raises(CacheError, match="overwrite=True"):
        cache.save(key, make_entry(1))
    cache.save(key, make_entry(1), overwrite=True)
    assert_entries_equal(cache.load(key), make_entry(1))


@pytest.mark.parametrize(
    "entry, match",
    [
        (CacheEntry(meta={"x": float("nan")}, arrays={}), "canonical JSON"),
        (CacheEntry(meta={"x": (1, 2)}, arrays={}), "round trip"),
        (CacheEntry(meta={}, arrays={"s": np.array(["a", "b"])}), "only numeric"),
        (CacheEntry(meta={}, arrays={"o": np.array([{}], dtype=object)}), "only numeric"),
    ],
)
def test_save_rejects_what_cannot_round_trip(tmp_path: Path, entry: CacheEntry, match: str) -> None:
    with pytest.raises(CacheError, match=match):
        ResultCache(tmp_path).save(CacheKey(**BASE_KEY), entry)


def test_get_or_compute_computes_once_then_hits(tmp_path: Path) -> None:
    cache, key = ResultCache(tmp_path), CacheKey(**BASE_KEY)
    calls: list[int] = []

    def compute() -> CacheEntry:
        calls.append(1)
        return make_entry(0)

    first, hit1 = cache.get_or_compute(key, compute)
    second, hit2 = cache.get_or_compute(key, compute)
    assert (hit1, hit2) == (False, True)
    assert len(calls) == 1
    assert_entries_equal(second, first)


def test_entry_for_one_fingerprint_is_never_returned_for_another(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key_a = CacheKey(**BASE_KEY)
    key_b = CacheKey(**{**BASE_KEY, "fingerprint": "sha256:" + "b" * 64})
    cache.save(key_a, make_entry(0))
    assert cache.load(key_b) is None
    entry_b, hit = cache.get_or_compute(key_b, lambda: make_entry(1))
    assert not hit
    assert_entries_equal(entry_b, make_entry(1))
    assert_entries_equal(cache.load(key_a), make_entry(0))


def test_entry_whose_meta_names_another_key_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Even a directory planted under B's digest holding A's result is not returned for B."""
    cache = ResultCache(tmp_path)
    key_a = CacheKey(**BASE_KEY)
    key_b = CacheKey(**{**BASE_KEY, "fingerprint": "sha256:" + "b" * 64})
    cache.save(key_a, make_entry(0))
    (tmp_path / key_a.digest).rename(tmp_path / key_b.digest)
    with caplog.at_level(logging.WARNING, logger="shiftcheck.probes.cache"):
        assert cache.load(key_b) is None
    assert "belongs to key" in caplog.text


# --------------------------------------------------------------------------------------------- integrity


def corrupt_truncate_arrays(entry_dir: Path) -> None:
    data = (entry_dir / ARRAYS_FILE).read_bytes()
    (entry_dir / ARRAYS_FILE).write_bytes(data[: len(data) // 2])


def corrupt_garbage_meta(entry_dir: Path) -> None:
    (entry_dir / META_FILE).write_text("{not json")


def corrupt_delete_arrays(entry_dir: Path) -> None:
    (entry_dir / ARRAYS_FILE).unlink()


def corrupt_flip_array_byte(entry_dir: Path) -> None:
    data = bytearray((entry_dir / ARRAYS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (entry_dir / ARRAYS_FILE).write_bytes(bytes(data))


def corrupt_schema_version(entry_dir: Path) -> None:
    stored = json.loads((entry_dir / META_FILE).read_text())
    stored["schema_version"] = 999
    (entry_dir / META_FILE).write_text(json.dumps(stored))


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (corrupt_truncate_arrays, "sha256"),
        (corrupt_garbage_meta, "unreadable"),
        (corrupt_delete_arrays, "missing"),
        (corrupt_flip_array_byte, "sha256"),
        (corrupt_schema_version, "schema_version"),
    ],
)
def test_damaged_entry_is_recomputed_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture, corrupt, reason: str) -> None:
    cache, key = ResultCache(tmp_path), CacheKey(**BASE_KEY)
    cache.save(key, make_entry(0))
    corrupt(tmp_path / key.digest)
    with caplog.at_level(logging.WARNING, logger="shiftcheck.probes.cache"):
        entry, hit = cache.get_or_compute(key, lambda: make_entry(1))
    assert not hit
    assert reason in caplog.text
    assert_entries_equal(entry, make_entry(1))
    assert_entries_equal(cache.load(key), make_entry(1))


def test_clear_removes_entries(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    keys = [CacheKey(**{**BASE_KEY, "probe": f"p{i}"}) for i in range(3)]
    for key in keys:
        cache.get_or_compute(key, lambda: make_entry(0))
    assert cache.clear() == 3
    assert all(cache.load(key) is None for key in keys)
    assert ResultCache(tmp_path / "never_created").clear() == 0


def test_default_cache_dir_respects_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("SHIFTCHECK_CACHE")
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / ".shiftcheck_cache"


def test_lock_timeout_is_reported_clearly(tmp_path: Path) -> None:
    """Another holder of the entry's lock (flock is per open file, so a second FileLock object in this
    process conflicts like another process would) makes get_or_compute time out with a clear error."""
    cache, key = ResultCache(tmp_path, lock_timeout_s=0.2), CacheKey(**BASE_KEY)
    computed: list[int] = []
    with FileLock(str(cache.lock_path(key))):
        with pytest.raises(CacheLockTimeout, match="delete the lock file"):
            cache.get_or_compute(key, lambda: computed.append(1) or make_entry(0))
    assert computed == []


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan")])
def test_lock_timeout_must_be_finite_and_positive(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(CacheError, match="lock_timeout_s"):
        ResultCache(tmp_path, lock_timeout_s=timeout)


# --------------------------------------------------------------------------------------------- processes


def slow_compute(counter: str) -> CacheEntry:
    import time

    with open(counter, "a", encoding="utf-8") as fh:
        fh.write("computed\n")
    time.sleep(0.5)
    return make_entry(7)


def race_worker(root: str, counter: str, start, results) -> None:  # runs in a spawned process
    import functools

    start.wait()
    entry, hit = ResultCache(Path(root)).get_or_compute(CacheKey(**BASE_KEY), functools.partial(slow_compute, counter))
    results.put((hit, {name: array.tolist() for name, array in entry.arrays.items()}, entry.meta))


def test_two_processes_compute_an_entry_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    counter = tmp_path / "counter.txt"
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=race_worker, args=(str(tmp_path / "cache"), str(counter), start, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert counter.read_text().splitlines() == ["computed"]
    assert sorted(hit for hit, _, _ in outcomes) == [False, True]
    assert outcomes[0][1:] == outcomes[1][1:]


def test_fsspec_cache_round_trips_and_publishes_whole_objects(tmp_path):
    from shiftcheck.probes.cache import open_cache
    from shiftcheck.probes.remote_cache import FsspecResultCache

    cache = open_cache((tmp_path / "remote").as_uri())
    assert isinstance(cache, FsspecResultCache)
    key = CacheKey("sha256:x", "importance", {"unit": {"prompts": "ab"}}, "v1")
    assert cache.load(key) is None
    arrays = {"p0/S0": np.arange(6, dtype=np.uint8).reshape(2, 3), "p0/mask": np.array([1, 0], dtype=np.uint8)}
    calls = []
    entry, hit = cache.get_or_compute(key, lambda: calls.append(1) or CacheEntry({"label": "base"}, arrays))
    assert not hit and calls == [1]
    again, hit = cache.get_or_compute(key, lambda: calls.append(2) or CacheEntry({}, {}))
    assert hit and calls == [1] and again.meta == {"label": "base"}
    np.testing.assert_array_equal(again.arrays["p0/S0"], arrays["p0/S0"])
    assert not list((tmp_path / "remote").glob("*.tmp"))
    other = CacheKey("sha256:y", "importance", {"unit": {"prompts": "ab"}}, "v1")
    (tmp_path / "remote" / f"{other.digest}.entry.npz").write_bytes(
        (tmp_path / "remote" / f"{key.digest}.entry.npz").read_bytes())
    assert cache.load(other) is None  # an object under the wrong name is never served
    assert cache.info().entries == {"importance": 2}
    assert cache.clear() == 2 and cache.load(key) is None
