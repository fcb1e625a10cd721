"""``shiftcheck ffn-words``: export FFN components in the authors' TSV format (METHODS §6).

    shiftcheck ffn-words MODEL [--gguf-file F] --layers 0,29 --components 50 --out ffn.tsv
    shiftcheck ffn-words MODEL --annotator heuristic --annotated-out ffn_annotated.tsv

MODEL is a local directory or hub id (with ``--gguf-file`` a GGUF inside it). The annotated TSV
(``Explainable Tokens Summary``, ``Task``, ``Concept``, ``Seed``) is what ``--replay-ffn-base`` /
``--replay-ffn-tuned`` read back, so labels can be tested with no model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _layers(text: str | None, n_layers: int) -> list[int]:
    if not text:
        return list(range(n_layers))
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def _run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shiftcheck.probes import ffn, words
    from shiftcheck.probes.ffn import concepts
    from shiftcheck.probes.models.architectures import WeightViews

    kw = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    print(f"loading {args.model} {args.gguf_file or ''}", file=sys.stderr, flush=True)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, **kw)
    tok = AutoTokenizer.from_pretrained(args.model, **kw)
    views = WeightViews(model)
    cand = words.candidate_words(args.words)
    config = ffn.FfnConfig(args.components, args.top_words, cand.digest)
    res = ffn.ffn_components(views, tok, cand.words, config, _layers(args.layers, views.n_layers),
                             device=args.device)
    name = args.model_name or Path(args.gguf_file or args.model).stem
    rows = ffn.to_tsv_rows(res, name, args.size)
    ffn.write_tsv(rows, Path(args.out))
    print(f"{len(rows)} components of {len(res.layers)} layers -> {args.out}", file=sys.stderr)
    if args.annotator:
        from shiftcheck.probes.ffn.annotators import make_annotator
        from shiftcheck.probes.ffn.annotators.replay import write_annotations

        kw2 = {"glove": words.load_glove()} if args.annotator == "heuristic" else {}
        ann = make_annotator(args.annotator, base_url=args.annotator_base_url, api_key_env=args.annotator_api_key_env,
                             log=lambda m: print(m, file=sys.stderr, flush=True), **kw2)
        reps = ann.annotate(concepts.components_of(res, max_rank=args.components), args.repetitions)
        out = Path(args.annotated_out or Path(args.out).with_suffix(".annotated.tsv"))
        write_annotations(reps, out, name, args.size)
        print(f"{ann.name}: {len(reps)} repetition(s) -> {out}", file=sys.stderr)
    return 0


def add_ffn_words(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ffn-words", help="finding 3: FFN principal components and their top words (TSV)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="local directory or hub id")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside MODEL")
    p.add_argument("--layers", default=None, help="e.g. 0,29 or 0-3,29 (default: all)")
    p.add_argument("--components", type=int, default=300, help="components per layer, R (default 300)")
    p.add_argument("--top-words", type=int, default=50, help="words stored per component, K (default 50)")
    p.add_argument("--words", default=None, help="candidate word list TSV (default: shipped ShareGPT list)")
    p.add_argument("--model-name", default=None, help="Model column (default: the file or folder name)")
    p.add_argument("--size", default="", help="Size column, e.g. 135M")
    p.add_argument("--device", default=None, help="cpu or cuda (default: where the model is)")
    p.add_argument("--out", required=True, help="output TSV")
    p.add_argument("--annotator", default=None, help="also annotate: heuristic, openai:MODEL or hf:SPEC")
    p.add_argument("--annotator-base-url", default=None)
    p.add_argument("--annotator-api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--annotated-out", default=None, help="annotated TSV (default: OUT with .annotated.tsv)")
    p.set_defaults(func=_run)
