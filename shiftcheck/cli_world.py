"""``shiftcheck world build|verdicts``: the embedded miniature world that is the default pair."""

from __future__ import annotations

import argparse
from pathlib import Path

from shiftcheck.cli_common import add_command, say

DESCRIPTION = """\
The embedded miniature world: a base model, its good instruction tune and two bad ones (bad-copy,
bad-cpt), trained on CPU from a synthetic corpus. The seed-0 world ships with the package and is
the default pair (--base world:base --tuned world:good); these commands build other seeds and
measure their verdicts. World bytes depend on the machine's float kernels and the thread count.
"""


def _world_build(args: argparse.Namespace) -> int:
    from shiftcheck.probes.runner import quiet_loading
    from shiftcheck.probes.world.build import MODEL_NAMES, WorldConfig, build_world

    quiet_loading()  # transformers' per-tensor bars would break up the training log

    config = WorldConfig(seed=args.seed, num_threads=args.threads)
    manifest = build_world(config, Path(args.out), progress=say if args.verbose else None, overwrite=args.force)
    print(f"world seed {args.seed} built in {manifest.seconds['total']:.1f} s -> {manifest.root}")
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in manifest.seconds.items()))
    print("  exact match on held-out prompts: "
          + ", ".join(f"{name} {manifest.accuracy[name]:.2f}" for name in MODEL_NAMES))
    if manifest.base_density is not None:  # the floor check (probes/world/floor.py)
        print(f"  {manifest.base_density.summary()}")
    print(f"  fingerprint {manifest.fingerprint[:16]}")
    return 0


def _world_verdicts(args: argparse.Namespace) -> int:
    from shiftcheck.probes.runner import quiet_loading
    from shiftcheck.probes.world.build import WorldConfig, build_world, load_manifest

    quiet_loading()
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
                say(f"{root} was built with another config; rebuild with --force")
                return 2
        else:
            build_world(config, root, progress=say if args.verbose else None, overwrite=True)
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


def add_world(sub: argparse._SubParsersAction) -> None:
    world = add_command(sub, "world", "the embedded miniature world (the default base/tuned pair)", DESCRIPTION)
    wsub = world.add_subparsers(dest="world_command", required=True, title="commands", metavar="{build,verdicts}")
    b = add_command(wsub, "build", "build base, good, bad-copy, bad-cpt and the eval prompts of one seed",
                    "Build one world into --out. The bytes depend on the machine's float kernels and the\n"
                    "thread count: a world built elsewhere has its own fingerprint and its own verdicts.\n"
                    "The shipped seed-0 world is used by default; a build is needed only for other seeds.")
    b.add_argument("--seed", type=int, default=0, help="The world's seed (default 0, the shipped world)")
    b.add_argument("--threads", type=int, default=1, help="Torch CPU threads of the build (default 1)")
    b.add_argument("--out", required=True, help="Output directory (must not exist unless --force)")
    b.add_argument("--force", action="store_true", help="Replace an existing output directory")
    b.add_argument("-v", "--verbose", action="store_true", help="Log training progress to stderr")
    b.set_defaults(func=_world_build)
    v = add_command(wsub, "verdicts", "build (or reuse) worlds and print the density verdict table",
                    "Build (or reuse) one world per seed and test good, bad-copy and bad-cpt against base\n"
                    "through the suite's own verdict path and default alpha. Exit 1 when a verdict differs\n"
                    "from the expected table (good passes, the bad tunes fail).")
    v.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="World seeds (default 0 1 2)")
    v.add_argument("--threads", type=int, default=1, help="Torch CPU threads of the builds (default 1)")
    v.add_argument("--work-dir", default=".shiftcheck_cache/world-verdicts",
                   help="Where the worlds are built, one subdirectory per seed (reused when present)")
    v.add_argument("--alpha", type=float, default=0.05, help="Significance level (default 0.05, as the suite)")
    v.add_argument("--force", action="store_true", help="Rebuild worlds even when present")
    v.add_argument("-v", "--verbose", action="store_true", help="Log training progress to stderr")
    v.set_defaults(func=_world_verdicts)
