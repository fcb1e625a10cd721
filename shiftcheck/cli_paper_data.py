"""``shiftcheck paper-data convert AUTHORS_REPO_DIR OUT_DIR`` (docs/PAPER_DATA.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _convert(args: argparse.Namespace) -> int:
    from shiftcheck.probes.paper_data import PaperDataError, convert

    try:
        report = convert(Path(args.repo), Path(args.out))
    except PaperDataError as exc:  # includes a refused pickle global, named in the message
        print(f"shiftcheck paper-data convert: {exc}", file=sys.stderr)
        return 2
    print(f"converted {report.prompts} prompts, {report.ratings} ratings, {report.vocab} vocabulary rows -> {args.out}")
    for model, n in report.models.items():
        bad = report.unaligned[model]
        print(f"  attribution/{model}.npz + .jsonl: {n} instances"
              + (f" ({len(bad)} whose pieces did not spell the prompt, mask left empty: {', '.join(bad[:5])})"
                 if bad else ""))
    for model, info in report.ffn.items():
        print(f"  {info['path']}: {info['repetitions']} seed(s), {info['rows']} components"
              + (" (explainable only: the files hold no unexplainable component)" if info["explainable_only"] else "")
              + (f"; {info['skipped']} malformed rows skipped" if info["skipped"] else ""))
    for model, path in report.pairs.items():
        print(f"  {path}: pairs of model {model}")
    if not report.ffn:
        print("  no results/linear_interpret/linear_{task,concept}_seed*.tsv: finding 3 not converted")
    if not report.pairs:
        print("  no results/bilinear_interpret/bilinear_words_split.tsv*: finding 2 not converted")
    return 0


def add_paper_data(sub: argparse._SubParsersAction) -> None:
    pd = sub.add_parser("paper-data", help="convert the authors' released data into replay files")
    psub = pd.add_subparsers(dest="paper_command", required=True)
    c = psub.add_parser("convert", help="datasets/*.tsv, results/attribution_interpret/ifa_*/*.pkl, "
                                        "results/linear_interpret/linear_{task,concept}_seed*.tsv and "
                                        "results/bilinear_interpret/bilinear_words_split.tsv* -> "
                                        "prompts.jsonl, ratings.tsv/.jsonl, sharegpt_vocab*.tsv, "
                                        "attribution/<model>.npz + .jsonl, ffn/<model>.annotated.tsv, "
                                        "pairs/<model>.tsv",
                        description="Reads a clone of JacksonWuxs/Interpret_Instruction_Tuning_LLMs (GPL-3.0). "
                                    "The pickles are read with a restricted unpickler that admits only numpy "
                                    "arrays, strings, numbers, lists, tuples and dicts.")
    c.add_argument("repo", help="the authors' repository (a clone)")
    c.add_argument("out", help="output directory")
    c.set_defaults(func=_convert)
