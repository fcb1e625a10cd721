"""``shiftcheck pairs``: finding 2's per-neuron word pairs of one checkpoint, in the authors' TSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from shiftcheck.cli_common import (add_alias, add_checkpoint, add_columns, add_command, add_layers, add_words,
                                   check_layers, load, model_label, plugin_help, plugin_value, say)

DESCRIPTION = """\
Finding 2's per-neuron word pairs of one checkpoint, written in the authors' TSV format
(Model Size Layer Type Head Dim Rank Score TopK; METHODS section 2 for the maths, section 6 for
the format). The pytest plugin reads such files back with --replay-pairs-base/--replay-pairs-tuned,
so the attention finding can be judged with no model.

example:
  shiftcheck pairs SmolLM2-135M-Instruct.Q4_1.gguf --layers 0,14,29 --size 135M --out pairs.tsv
"""


def _pairs(args: argparse.Namespace) -> int:
    from shiftcheck.probes import attention as at
    from shiftcheck.probes import words
    from shiftcheck.probes.attention.io import neuron_rows, write_pairs_tsv

    ref, checkpoint = load(args)
    views, tokenizer = checkpoint.views, checkpoint.tokenizer
    layers = check_layers(args.layers, views.n_layers)
    candidates = words.candidate_words(args.candidate_words)
    config = at.AttentionConfig(top_k=args.pair_top_k)
    ws = at.word_space(candidates, words.load_glove(args.glove), config, words.glove_digest(args.glove),
                       views.W_E.device)
    E_w, has_tokens = at.word_vectors(views, tokenizer, candidates)
    say(f"{candidates.digest}: {len(candidates)} candidates, {int((~has_tokens).sum())} without tokens")
    name = args.model_name or model_label(ref)
    rows = []
    for layer in layers:
        Hq, Hk = at.head_activations(views, E_w, layer)
        for h in range(views.n_heads):
            np_ = at.neuron_pairs(Hq[h], Hk[h], ws, has_tokens, config.top_k)
            rows += neuron_rows(name, args.size, layer, h, np_, candidates.words)
        say(f"layer {layer}: done")
    write_pairs_tsv(Path(args.out), rows)
    print(f"wrote {len(rows)} neuron rows of {len(layers)} layer(s) to {args.out}")
    return 0


def add_pairs(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "pairs", "finding 2: per-neuron word pairs of a checkpoint in the authors' TSV format",
                    DESCRIPTION)
    add_checkpoint(p)
    p.add_argument("--out", required=True, help="Output TSV (authors' format).")
    add_layers(p)
    p.add_argument("--pair-top-k", type=plugin_value("pair_top_k"), default=100, metavar="K",
                   help=plugin_help("pair_top_k"))
    add_alias(p, "--top-k", "--pair-top-k", "pair_top_k", plugin_value("pair_top_k"))
    add_words(p)
    add_columns(p)
    p.set_defaults(func=_pairs)
