"""``shiftcheck cache info|clear``: what the result cache holds, or empty it."""

from __future__ import annotations

import argparse

from shiftcheck.cli_common import add_command

DESCRIPTION = """\
The result cache holds every probe result of every checkpoint (keyed by content fingerprint,
probe, configuration and unit), so a rerun computes only what changed. It lives in
$SHIFTCHECK_CACHE (a directory or an fsspec URL shared by CI shards), else ./.shiftcheck_cache.
"""


def _cache(args: argparse.Namespace):
    from shiftcheck.probes.cache import open_cache

    return open_cache(args.cache_dir)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _cache_info(args: argparse.Namespace) -> int:
    info = _cache(args).info()
    print(f"cache: {info.root}")
    print(f"  {info.n_entries} entries, {_human(info.bytes)} on disk")
    for probe, n in info.entries.items():
        print(f"  {probe}: {n}")
    return 0


def _cache_clear(args: argparse.Namespace) -> int:
    cache = _cache(args)
    removed = cache.clear()
    print(f"removed {removed} entries from {cache.root}")
    return 0


def add_cache(sub: argparse._SubParsersAction) -> None:
    cache = add_command(sub, "cache", "inspect or empty the result cache ($SHIFTCHECK_CACHE)", DESCRIPTION)
    cache.add_argument("--cache-dir", default=None,
                       help="Cache directory or fsspec URL (default: $SHIFTCHECK_CACHE, else ./.shiftcheck_cache)")
    csub = cache.add_subparsers(dest="cache_command", required=True, title="commands", metavar="{info,clear}")
    add_command(csub, "info", "print the number of entries per probe and the size on disk").set_defaults(
        func=_cache_info)
    add_command(csub, "clear", "remove every cached result (pytest's --cache-clear leaves them alone)",
                "Remove every cached result. The plugin's --shiftcheck-clear-cache does the same before a\n"
                "run; pytest's own --cache-clear leaves shiftcheck's cache alone.").set_defaults(func=_cache_clear)
