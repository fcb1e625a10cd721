"""The embedded miniature world: a corpus, a word-level tokenizer, a base Llama and tuned variants.

It is the default base/tuned pair (no download, no GPU) and the project's proof that the suite can
fail: ``good`` passes the density test against ``base``; ``bad-copy``, ``bad-cpt`` and ``null``
do not. The seed-0 world is shipped (``shipped/seed0``, see VERDICTS.md); other seeds are built into
the cache on first use, or with ``shiftcheck world build --seed N --out DIR``.
"""

from shiftcheck.probes.world.build import (
    ALIASES,
    MODEL_NAMES,
    WorldConfig,
    WorldManifest,
    build_world,
    code_version,
    ensure_world,
    load_manifest,
    parse_world_spec,
    resolve_world,
    shipped_root,
    shipped_world,
    staging_dir,
    world_prompts_path,
    world_root,
)

__all__ = [
    "ALIASES",
    "MODEL_NAMES",
    "WorldConfig",
    "WorldManifest",
    "build_world",
    "code_version",
    "ensure_world",
    "load_manifest",
    "parse_world_spec",
    "resolve_world",
    "shipped_root",
    "shipped_world",
    "staging_dir",
    "world_prompts_path",
    "world_root",
]
