"""``python -m probes.world build --seed 0 --out DIR`` and ``python -m probes.world verdicts``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from probes.world.build import MODEL_NAMES, WorldConfig, build_world, load_manifest


def _build(args: argparse.Namespace) -> int:
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.verbose else None
    manifest = build_world(WorldConfig(seed=args.seed), Path(args.out), progress=log, overwrite=args.force)
    print(f"world seed {args.seed} built in {manifest.seconds['total']:.1f} s -> {manifest.root}")
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in manifest.seconds.items()))
    print("  exact match on held-out prompts: "
          + ", ".join(f"{name} {manifest.accuracy[name]:.2f}" for name in MODEL_NAMES))
    print(f"  fingerprint {manifest.fingerprint[:16]}")
    return 0


def _verdicts(args: argparse.Namespace) -> int:
    from probes.world.verdicts import world_verdicts

    work = Path(args.work_dir)
    ok = True
    print(f"{'seed':>4} {'pair':<16} {'acc':>5} {'mean±std tuned':>16} {'mean±std base':>16} "
          f"{'p (Welch, 1-sided)':>19} {'verdict':>7} {'expected':>8}")
    for seed in args.seeds:
        root = work / f"seed{seed}"
        if (root / "world.json").is_file() and not args.force:
            manifest = load_manifest(root)
            if manifest.config != WorldConfig(seed=seed):
                print(f"{root} was built with another config; rebuild with --force", file=sys.stderr)
                return 2
        else:
            build_world(WorldConfig(seed=seed), root, overwrite=True)
        result = world_verdicts(root, alpha=args.alpha)
        build_s = load_manifest(root).seconds["total"]
        for r in result.rows:
            ok &= r.as_expected
            print(f"{seed:>4} {r.name + ' vs base':<16} {r.accuracy:>5.2f} {r.mean:>8.3f}±{r.std:<7.3f} "
                  f"{r.base_mean:>8.3f}±{r.base_std:<7.3f} {r.p_value:>19.2e} "
                  f"{'pass' if r.passed else 'fail':>7} {'pass' if r.expected else 'fail':>8}")
        print(f"{seed:>4} (n = {result.n_prompts} prompts, build {build_s:.0f} s, verdicts {result.seconds:.0f} s)")
    print("all verdicts as expected" if ok else "SOME VERDICTS DIFFER FROM THE EXPECTED TABLE")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.world", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build base, good, bad-copy, bad-cpt and the eval prompts")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    b.add_argument("--force", action="store_true", help="replace an existing output directory")
    b.add_argument("-v", "--verbose", action="store_true", help="log training progress to stderr")
    b.set_defaults(func=_build)
    v = sub.add_parser("verdicts", help="build (or reuse) worlds and print the density verdict table")
    v.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    v.add_argument("--work-dir", default=".shiftcheck_cache/world-verdicts",
                   help="where the worlds are built, one subdirectory per seed (reused when present)")
    v.add_argument("--alpha", type=float, default=0.01)
    v.add_argument("--force", action="store_true", help="rebuild worlds even when present")
    v.set_defaults(func=_verdicts)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
