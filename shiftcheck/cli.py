"""The ``shiftcheck`` console script.

    shiftcheck world build --seed 0 --out DIR      build an embedded world (machine-dependent bytes)
    shiftcheck world verdicts --seeds 0 1 2        build or reuse worlds and print the verdict table
    shiftcheck cache info | clear                  what the result cache holds, or empty it

Settings come from the same places as the pytest plugin: ``$SHIFTCHECK_CACHE`` for the cache, and
the ``[tool.shiftcheck]`` table of the ``pyproject.toml`` in the current directory or above. Heavy
libraries (torch, transformers) are imported inside the commands that need them, so ``--help`` is
instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

Command = Callable[[argparse.Namespace], int]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cache(args: argparse.Namespace):
    from shiftcheck.probes.cache import open_cache

    return open_cache(args.cache_dir)


# --- world ---------------------------------------------------------------------------------------

def _world_build(args: argparse.Namespace) -> int:
    from shiftcheck.probes.world.build import MODEL_NAMES, WorldConfig, build_world

    log = _say if args.verbose else None
    config = WorldConfig(seed=args.seed, num_threads=args.threads)
    manifest = build_world(config, Path(args.out), progress=log, overwrite=args.force)
    print(f"world seed {args.seed} built in {manifest.seconds['total']:.1f} s -> {manifest.root}")
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in manifest.seconds.items()))
    print("  exact match on held-out prompts: "
          + ", ".join(f"{name} {manifest.accuracy[name]:.2f}" for name in MODEL_NAMES))
    print(f"  fingerprint {manifest.fingerprint[:16]}")
    return 0


def _world_verdicts(args: argparse.Namespace) -> int:
    from shiftcheck.probes.world.build import WorldConfig, build_world, load_manifest
    from shiftcheck.probes.world.verdicts import world_verdicts

    work = Path(args.work_dir)
    ok = True
    print(f"{'seed':>4} {'thr':>3} {'pair':<16} {'acc':>5} {'mean±std tuned':>16} {'mean±std base':>16} "
          f"{'p':>9} {'g':>6} {'verdict':>7} {'expected':>8}")
    for seed in args.seeds:
        config = WorldConfig(seed=seed, num_threads=args.threads)
        root = work / f"seed{seed}-threads{args.threads}"
        if (root / "world.json").is_file() and not args.force:
            if load_manifest(root).config != config:
                _say(f"{root} was built with another config; rebuild with --force")
                return 2
        else:
            build_world(config, root, progress=_say if args.verbose else None, overwrite=True)
        result = world_verdicts(root, alpha=args.alpha)
        build_s = load_manifest(root).seconds["total"]
        for r in result.rows:
            ok &= r.as_expected
            print(f"{seed:>4} {args.threads:>3} {r.name + ' vs base':<16} {r.accuracy:>5.2f} "
                  f"{r.mean:>8.3f}±{r.std:<7.3f} {r.base_mean:>8.3f}±{r.base_std:<7.3f} {r.p_value:>9.2e} "
                  f"{r.effect:>6.2f} {'pass' if r.passed else 'fail':>7} {'pass' if r.expected else 'fail':>8}")
        print(f"{seed:>4} (n = {result.n_prompts} prompts, alpha {result.alpha:g}, build {build_s:.0f} s, "
              f"verdicts {result.seconds:.0f} s)", flush=True)
    print("all verdicts as expected" if ok else "SOME VERDICTS DIFFER FROM THE EXPECTED TABLE")
    return 0 if ok else 1


def _add_world(sub: argparse._SubParsersAction) -> None:
    world = sub.add_parser("world", help="the embedded miniature world (default base/tuned pair)")
    wsub = world.add_subparsers(dest="world_command", required=True)
    b = wsub.add_parser("build", help="build base, good, bad-copy, bad-cpt and the eval prompts",
                        description="Build one world. The bytes depend on the machine's float kernels "
                                    "and the thread count: a world built elsewhere has its own "
                                    "fingerprint and its own verdicts. The shipped world is used by "
                                    "default; a build is only needed to study other seeds.")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=1, help="torch CPU threads of the build (default 1)")
    b.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    b.add_argument("--force", action="store_true", help="replace an existing output directory")
    b.add_argument("-v", "--verbose", action="store_true", help="log training progress to stderr")
    b.set_defaults(func=_world_build)
    v = wsub.add_parser("verdicts", help="build (or reuse) worlds and print the density verdict table",
                        description="Each pair goes through the suite's own verdict path and default alpha.")
    v.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    v.add_argument("--threads", type=int, default=1, help="torch CPU threads of the builds (default 1)")
    v.add_argument("--work-dir", default=".shiftcheck_cache/world-verdicts",
                   help="where the worlds are built, one subdirectory per seed (reused when present)")
    v.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05, as the suite)")
    v.add_argument("--force", action="store_true", help="rebuild worlds even when present")
    v.add_argument("-v", "--verbose", action="store_true", help="log training progress to stderr")
    v.set_defaults(func=_world_verdicts)


# --- cache ---------------------------------------------------------------------------------------

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


def _add_cache(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="inspect or empty the result cache ($SHIFTCHECK_CACHE)")
    cache.add_argument("--cache-dir", default=None, help="cache directory or fsspec URL (default "
                                                          "$SHIFTCHECK_CACHE or ./.shiftcheck_cache)")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    csub.add_parser("info", help="entries per probe and size on disk").set_defaults(func=_cache_info)
    csub.add_parser("clear", help="remove every cached result").set_defaults(func=_cache_clear)


# --- entry point ---------------------------------------------------------------------------------

# Each probe module registers its export command here (name -> adder), in the order of the findings.
def _add_paper_data(sub: argparse._SubParsersAction) -> None:
    from shiftcheck.cli_paper_data import add_paper_data

    add_paper_data(sub)


from shiftcheck.cli_pairs import add_pairs  # noqa: E402  (finding 2; imports nothing heavy)
from shiftcheck.ffn_cli import add_ffn_words  # noqa: E402  (finding 3; imports nothing heavy)

SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_world, _add_cache, add_pairs, add_ffn_words, _add_paper_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiftcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
