"""The ``shiftcheck`` console script: one parser for every command (``python -m shiftcheck`` too).

Each command lives in the module named after it (``cli_world``, ``cli_cache``, ``cli_pairs``,
``cli_ffn_words``, ``cli_paper_data``); what the model commands share with the pytest plugin (the
checkpoint spec, option names and help) is in ``cli_common``. Heavy libraries (torch,
transformers) are imported inside the commands that need them, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from shiftcheck.cli_cache import add_cache
from shiftcheck.cli_common import FORMATTER, user_errors
from shiftcheck.cli_ffn_words import add_ffn_words
from shiftcheck.cli_kl import add_kl
from shiftcheck.cli_pairs import add_pairs
from shiftcheck.cli_world import add_world

DESCRIPTION = """\
shiftcheck: vet an instruction-tuned checkpoint against its base model. The findings themselves
run under pytest (pytest behaviour_tests --base BASE --tuned TUNED); these commands build the
embedded world, manage the result cache and export one checkpoint's probe results in the
authors' formats.

CHECKPOINT takes every form --base takes: a local directory, a .gguf file, a hub id, or
world:NAME[@seed=N] (world:base, world:good, world:bad-copy, world:bad-cpt).

  shiftcheck world build --seed N --out DIR            build another seed's world
  shiftcheck world verdicts --seeds 0 1 2              verdict table of built worlds
  shiftcheck cache info | clear                        what the result cache holds, or empty it
  shiftcheck pairs CHECKPOINT --out pairs.tsv          finding 2: attention word pairs (TSV)
  shiftcheck ffn-words CHECKPOINT --out ffn.tsv        finding 3: FFN components and words (TSV)
  shiftcheck paper-data convert REPO OUT               the authors' data as replay files
  shiftcheck kl TUNED BASE                             KL preflight: KL(TUNED || BASE) per source

Settings: $SHIFTCHECK_CACHE for the cache. 'shiftcheck COMMAND --help' for a command's options.
"""


def _add_paper_data(sub: argparse._SubParsersAction) -> None:
    """The authors' data converter (its module keeps its own wording); given a description if it has none."""
    from shiftcheck.cli_paper_data import add_paper_data

    add_paper_data(sub)
    parser = sub.choices["paper-data"]
    parser.formatter_class = FORMATTER
    if not parser.description:
        parser.description = ("Convert the authors' released data (a clone of their repository) into the replay "
                              "files\nthe plugin reads with --replay-base/--replay-tuned, --ratings and "
                              "--candidate-words.")


# In the order of the console's description: the world, the cache, then findings 2 and 3 and the data.
SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_world, add_cache, add_pairs, add_ffn_words, _add_paper_data, add_kl)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiftcheck", description=DESCRIPTION, formatter_class=FORMATTER)
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="{world,cache,pairs,ffn-words,paper-data,kl}")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a known input error (bad checkpoint, missing file) is one line and exit 2."""
    import logging

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return args.func(args)
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"shiftcheck {args.command}: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
