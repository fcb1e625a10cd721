"""``shiftcheck ffn-words``: finding 3's FFN principal components of one checkpoint and their top
words, in the authors' TSV, optionally annotated."""

from __future__ import annotations

import argparse
from pathlib import Path

from shiftcheck.cli_common import (add_alias, add_checkpoint, add_columns, add_command, add_layers, add_words,
                                   check_layers, load, model_label, plugin_help, plugin_value, say)

DESCRIPTION = """\
Finding 3's feed-forward components of one checkpoint: the principal components of each layer's
down-projection and the candidate words each one points at (METHODS section 3.1-3.2 for the maths),
written in the authors' TSV (Model Size Layer Type Head Rank Score TopK; section 6 for the format).
With --annotator the components are also labelled (section 3.3) into an annotated TSV
(Explainable Tokens Summary, Task, Concept, Seed) that the plugin's --replay-ffn-base and
--replay-ffn-tuned read back, so labels can be tested with no model.

examples:
  shiftcheck ffn-words SmolLM2-135M-Instruct.Q4_1.gguf --layers 0,29 --ffn-components 50 \\
      --size 135M --out ffn.tsv
  shiftcheck ffn-words world:good --ffn-components 20 --out ffn.tsv --annotator heuristic
"""


def _run(args: argparse.Namespace) -> int:
    from shiftcheck.probes import ffn, words
    from shiftcheck.probes.ffn import concepts

    ref, checkpoint = load(args)
    views, tok = checkpoint.views, checkpoint.tokenizer
    layers = check_layers(args.layers, views.n_layers)
    cand = words.candidate_words(args.candidate_words)
    config = ffn.FfnConfig(args.ffn_components, args.ffn_top_words, cand.digest)
    res = ffn.ffn_components(views, tok, cand.words, config, layers)
    name = args.model_name or model_label(ref)
    rows = ffn.to_tsv_rows(res, name, args.size)
    ffn.write_tsv(rows, Path(args.out))
    print(f"wrote {len(rows)} components of {len(res.layers)} layer(s) to {args.out}")
    if args.annotator:
        from shiftcheck.probes.ffn.annotators import make_annotator
        from shiftcheck.probes.ffn.annotators.replay import write_annotations

        kw = {"glove": words.load_glove(args.glove)} if args.annotator == "heuristic" else {}
        ann = make_annotator(args.annotator, base_url=args.annotator_base_url, api_key_env=args.annotator_api_key_env,
                             concurrency=args.annotator_concurrency, log=say, **kw)
        reps = ann.annotate(concepts.components_of(res, max_rank=args.ffn_components), args.annotator_repetitions)
        out = Path(args.annotated_out or Path(args.out).with_suffix(".annotated.tsv"))
        write_annotations(reps, out, name, args.size)
        print(f"{ann.name}: {len(reps)} repetition(s) -> {out}")
    return 0


def add_ffn_words(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "ffn-words", "finding 3: FFN principal components of a checkpoint and their top words (TSV)",
                    DESCRIPTION)
    add_checkpoint(p)
    p.add_argument("--out", required=True, help="Output TSV (authors' format).")
    add_layers(p)
    p.add_argument("--ffn-components", type=plugin_value("ffn_components"), default=300, metavar="R",
                   help=plugin_help("ffn_components"))
    add_alias(p, "--components", "--ffn-components", "ffn_components", plugin_value("ffn_components"))
    p.add_argument("--ffn-top-words", type=plugin_value("ffn_top_words"), default=50, metavar="K",
                   help=plugin_help("ffn_top_words"))
    add_alias(p, "--top-words", "--ffn-top-words", "ffn_top_words", plugin_value("ffn_top_words"))
    add_words(p, glove_help="GloVe vectors of the heuristic annotator (GloVe text or word2vec file). "
                            "Default: the packaged GloVe 6B 50d.")
    add_columns(p)
    a = p.add_argument_group("annotation (optional, as the plugin's finding-3 options)")
    a.add_argument("--annotator", default=None, type=plugin_value("annotator"), metavar="SPEC",
                   help="Also label the components: heuristic (offline), openai:MODEL (any OpenAI-compatible "
                        "endpoint) or hf:SPEC (a local chat model). Default: no annotation.")
    a.add_argument("--annotator-base-url", default=None, metavar="URL", help=plugin_help("annotator_base_url"))
    a.add_argument("--annotator-api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help=plugin_help("annotator_api_key_env"))
    a.add_argument("--annotator-repetitions", type=plugin_value("annotator_repetitions"), default=5, metavar="N",
                   help=plugin_help("annotator_repetitions"))
    add_alias(a, "--repetitions", "--annotator-repetitions", "annotator_repetitions",
              plugin_value("annotator_repetitions"))
    a.add_argument("--annotator-concurrency", type=plugin_value("annotator_concurrency"), default=4, metavar="N",
                   help=plugin_help("annotator_concurrency"))
    a.add_argument("--annotated-out", default=None, metavar="TSV",
                   help="Annotated TSV. Default: OUT with the suffix .annotated.tsv.")
    p.set_defaults(func=_run)
