"""Benchmark: per-token loop vs batched attribution (METHODS §1.3), measured in one run.

    python benchmarks/attribution.py --hidden 128 --layers 2 --prompt 30 --response 120
    python benchmarks/attribution.py --device cuda --hidden 4096 --layers 32 --heads 32 \\
        --vocab 32000 --prompt 200 --response 300          # Llama-7B shape on one GPU

A randomly initialised LlamaForCausalLM is used: timings depend on shape, not on weights.
Reports seconds per instance for each path, the speed-up over the loop, peak memory, and how
many entries of the normalised S (L=10, b=0) agree with the fp32 loop.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shiftcheck.probes.importance import PromptEncoding, importance_jvp, importance_loop, importance_vjp, normalise


def build_model(args: argparse.Namespace) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate or int(args.hidden * 8 / 3) // 64 * 64 or 4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads or args.heads,
        max_position_embeddings=args.prompt + args.response + 8,
    )
    with torch.device(args.device):
        model = LlamaForCausalLM(cfg)
    return model.float().eval()


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS on Linux


def timed(fn, device: str, repeats: int):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out, peak_memory_mb(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--intermediate", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--prompt", type=int, default=30, help="N, attributed prompt tokens")
    ap.add_argument("--response", type=int, default=120, help="M, response tokens")
    ap.add_argument("--chunk", type=int, default=None, help="rows per batched pass (default: sized to memory)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-jvp", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    model = build_model(args)
    rng = np.random.default_rng(0)
    prompt = tuple(int(i) for i in rng.integers(3, args.vocab, args.prompt))
    resp = [int(i) for i in rng.integers(3, args.vocab, args.response)]
    enc = PromptEncoding((1,), prompt, tuple(map(str, prompt)), np.ones(args.prompt, dtype=bool), "")

    rows = {}
    t_loop, I_loop, mem_loop = timed(lambda: importance_loop(model, enc, resp), args.device, args.repeats)
    rows["loop"] = (t_loop, I_loop, mem_loop)
    rows["vjp"] = timed(lambda: importance_vjp(model, enc, resp, args.chunk), args.device, args.repeats)
    if not args.skip_jvp:
        rows["jvp"] = timed(lambda: importance_jvp(model, enc, resp, args.chunk), args.device, args.repeats)

    S_ref = normalise(I_loop)
    report = {"shape": vars(args), "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    print(f"shape: hidden {args.hidden}, layers {args.layers}, vocab {args.vocab}, N={args.prompt}, M={args.response}, device {args.device}")
    print(f"{'path':<6} {'s/instance':>11} {'speed-up':>9} {'peak MB':>9} {'S equal':>8} {'max rel diff of I':>18}")
    for name, (secs, I, mem) in rows.items():
        equal = float((normalise(I) == S_ref).mean())
        rel = float(np.abs(I - I_loop).max() / (np.abs(I_loop).max() + 1e-30))
        print(f"{name:<6} {secs:>11.3f} {t_loop / secs:>8.1f}x {mem:>9.0f} {equal:>8.2%} {rel:>18.2e}")
        report[name] = {"seconds": secs, "speedup": t_loop / secs, "peak_mb": mem, "S_equal": equal, "max_rel_diff": rel}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
