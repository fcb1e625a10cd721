"""The embedded miniature world: a corpus, a word-level tokenizer, a base Llama and tuned variants.

It is the default base/tuned pair (no download, no GPU) and the project's proof that the suite can
fail: ``good`` passes the density test against ``base``; ``bad-copy``, ``bad-cpt`` and ``null``
do not. The seed-0 world is shipped (``shipped/seed0``, see VERDICTS.md); other seeds are built into
the cache on first use, or with ``shiftcheck world build --seed N --out DIR``.

Import the submodules directly (``shiftcheck.probes.world.build`` imports torch;
``shiftcheck.probes.world.spec`` imports nothing heavy, for the plugin).
"""
