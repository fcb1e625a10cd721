"""``shiftcheck pairs MODEL [--gguf-file F] --layers 0,14,29 --out pairs.tsv``: finding 2's
per-neuron word pairs in the authors' TSV format (METHODS §6)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _layers(text: str | None, n_layers: int) -> list[int]:
    if not text:
        return list(range(n_layers))
    layers = [int(x) for x in text.split(",") if x.strip()]
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise SystemExit(f"--layers {bad} outside 0..{n_layers - 1}")
    return layers


def _pairs(args: argparse.Namespace) -> int:
    import torch

    from shiftcheck.probes import attention as at
    from shiftcheck.probes import words
    from shiftcheck.probes.attention.io import neuron_rows, write_pairs_tsv
    from shiftcheck.probes.models.loading import LoadOptions, load_checkpoint
    from shiftcheck.probes.world.build import ensure_world
    from shiftcheck.probes.world.spec import parse_world_spec
    from shiftcheck.probes.cache import default_cache_dir

    spec = args.model
    world = parse_world_spec(spec)
    if world is not None:
        spec = str(ensure_world(default_cache_dir(), world[1]).model_dir(world[0]))
    kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    checkpoint = load_checkpoint(spec, LoadOptions(device=args.device, trust_remote_code=args.trust_remote_code,
                                                   **kwargs))
    views, tokenizer = checkpoint.views, checkpoint.tokenizer
    candidates = words.candidate_words(args.candidate_words)
    config = at.AttentionConfig(top_k=args.top_k)
    ws = at.word_space(candidates, words.load_glove(args.glove), config, words.glove_digest(args.glove),
                       views.W_E.device)
    E_w, has_tokens = at.word_vectors(views, tokenizer, candidates)
    print(f"{candidates.digest}: {len(candidates)} candidates, {int((~has_tokens).sum())} without tokens",
          file=sys.stderr)
    rows = []
    for layer in _layers(args.layers, views.n_layers):
        Hq, Hk = at.head_activations(views, E_w, layer)
        for h in range(views.n_heads):
            np_ = at.neuron_pairs(Hq[h], Hk[h], ws, has_tokens, config.top_k)
            rows += neuron_rows(args.name or Path(args.model).name, args.size, layer, h, np_, candidates.words)
        print(f"layer {layer}: done", file=sys.stderr, flush=True)
    del torch
    write_pairs_tsv(Path(args.out), rows)
    print(f"wrote {len(rows)} neuron rows to {args.out}")
    return 0


def add_pairs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pairs", help="finding 2: per-neuron word pairs of a model in the authors' TSV format")
    p.add_argument("model", help="a checkpoint as --base accepts it: directory, .gguf file, hub id or world:NAME")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside the MODEL directory")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
    p.add_argument("--out", required=True, help="output TSV")
    p.add_argument("--top-k", type=int, default=100, help="words per query/key neuron (METHODS §2.4)")
    p.add_argument("--glove", default=None, help="GloVe file (default: the packaged 6B-50d)")
    p.add_argument("--candidate-words", default=None, help="candidate word list TSV (default: ShareGPT)")
    p.add_argument("--device", default="auto")
    p.add_argument("--name", default=None, help="Model column (default: the directory name)")
    p.add_argument("--size", default="", help="Size column, e.g. 7B")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=_pairs)
