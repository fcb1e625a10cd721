"""The ``shiftcheck`` console script: help without heavy imports, cache info and clear."""

from __future__ import annotations

import subprocess
import sys

from shiftcheck.cli import main
from shiftcheck.probes.cache import CacheEntry, CacheKey, ResultCache


def test_help_lists_the_subcommands_and_imports_nothing_heavy():
    code = ("import sys; from shiftcheck.cli import build_parser; h = build_parser().format_help(); "
            "print('world' in h and 'cache' in h); print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["True", "[]"]


def test_cache_info_counts_entries_per_probe_and_clear_empties_it(tmp_path, capsys):
    cache = ResultCache(tmp_path / "c")
    for i, probe in enumerate(["importance", "importance", "attention"]):
        cache.save(CacheKey(f"sha256:{i}", probe, {"k": i}, "v"), CacheEntry(meta={"i": i}, arrays={}))
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "info"]) == 0
    out = capsys.readouterr().out
    assert "3 entries" in out and "importance: 2" in out and "attention: 1" in out
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "clear"]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert ResultCache(tmp_path / "c").info().n_entries == 0


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "env-cache"))
    main(["cache", "info"])
    assert str(tmp_path / "env-cache") in capsys.readouterr().out
