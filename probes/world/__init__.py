"""The embedded miniature world: a corpus, a word-level tokenizer, a base Llama and tuned variants.

It is the default base/tuned pair (no download, no GPU) and the project's proof that the suite can
fail: ``good`` passes the density test against ``base``; ``bad-copy``, ``bad-cpt`` and ``null``
do not. Build with ``shiftcheck world build --seed 0 --out DIR``.
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
    "world_prompts_path",
    "world_root",
]
