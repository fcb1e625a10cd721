"""Benchmark: per-token loop vs batched attribution (METHODS §1.3), measured in one run.

    python benchmarks/attribution.py --hidden 128 --layers 2 --prompt 30 --response 120
    python benchmarks/attribution.py --hidden 512 --layers 4 --heads 8 --vocab 32000 --prompt 30 --response 240
    python benchmarks/attribution.py --device cuda --hidden 4096 --layers 32 --heads 32 \\
        --vocab 32000 --prompt 200 --response 300          # Llama-7B shape on one GPU

A randomly initialised LlamaForCausalLM is used: timings depend on shape, not on weights. Each path
runs in its own subprocess, so its peak memory is its own (CPU: peak RSS above the process's RSS
after building the model; GPU: peak allocated), repeated ``--repeats`` times; the minimum and the
median are reported with the speed-up over the loop, and how many entries of the normalised S
(L=10, b=0) agree with the fp32 loop. Progress goes to stderr as each path starts and ends.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PATHS = ("loop", "vjp", "jvp")


def build_model(args: argparse.Namespace):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

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


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def run_one(args: argparse.Namespace) -> None:
    """Child mode: one path, ``repeats`` times; JSON on stdout, I saved to ``--out-npy``."""
    import torch

    from shiftcheck.probes.importance import PromptEncoding, importance_jvp, importance_loop, importance_vjp

    model = build_model(args)
    rng = np.random.default_rng(0)
    prompt = tuple(int(i) for i in rng.integers(3, args.vocab, args.prompt))
    resp = [int(i) for i in rng.integers(3, args.vocab, args.response)]
    enc = PromptEncoding((1,), prompt, tuple(map(str, prompt)), np.ones(args.prompt, dtype=bool), "")
    fn = {"loop": lambda: importance_loop(model, enc, resp),
          "vjp": lambda: importance_vjp(model, enc, resp, args.chunk),
          "jvp": lambda: importance_jvp(model, enc, resp, args.chunk)}[args.path]
    cuda = args.device.startswith("cuda")
    base_mb = _rss_mb()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_mb = torch.cuda.memory_allocated() / 2**20
    times, I = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        I = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()
    np.save(args.out_npy, I)
    print(json.dumps({"times": times, "peak_mb_above_model": peak - base_mb, "peak_mb": peak,
                      "device_name": torch.cuda.get_device_name() if cuda else "cpu"}))


def parser() -> argparse.ArgumentParser:
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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="loop,vjp,jvp", help="comma-separated subset of loop,vjp,jvp")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--out-npy", help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = parser().parse_args()
    if args.path:
        run_one(args)
        return
    paths = [p for p in args.paths.split(",") if p]
    if paths[0] != "loop":
        raise SystemExit("--paths must start with loop: it is the reference")
    shape = ["--device", args.device, "--hidden", str(args.hidden), "--layers", str(args.layers), "--heads",
             str(args.heads), "--vocab", str(args.vocab), "--prompt", str(args.prompt), "--response",
             str(args.response), "--repeats", str(args.repeats)]
    for flag, value in (("--kv-heads", args.kv_heads), ("--intermediate", args.intermediate), ("--chunk", args.chunk)):
        if value is not None:
            shape += [flag, str(value)]
    print(f"shape: hidden {args.hidden}, layers {args.layers}, vocab {args.vocab}, N={args.prompt}, "
          f"M={args.response}, device {args.device}, repeats {args.repeats}")
    rows, I_ref = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            print(f"[{time.strftime('%H:%M:%S')}] {path}: running {args.repeats} repeat(s)...", file=sys.stderr,
                  flush=True)
            npy = str(Path(tmp) / f"{path}.npy")
            cmd = [sys.executable, __file__, *shape, "--path", path, "--out-npy", npy]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{path} failed:\n{out.stderr[-3000:]}")
            rows[path] = json.loads(out.stdout.strip().splitlines()[-1])
            rows[path]["I"] = np.load(npy)
            if I_ref is None:
                I_ref = rows[path]["I"]
            print(f"[{time.strftime('%H:%M:%S')}] {path}: min {min(rows[path]['times']):.3f} s", file=sys.stderr,
                  flush=True)

    from shiftcheck.probes.importance import normalise

    S_ref = normalise(I_ref)
    loop_min = min(rows["loop"]["times"])
    report = {"shape": {k: v for k, v in vars(args).items() if k not in ("path", "out_npy")},
              "device_name": rows["loop"]["device_name"]}
    print(f"{'path':<6} {'min s':>9} {'median s':>9} {'speed-up':>9} {'peak MB':>9} {'S equal':>8} {'max rel diff':>13}")
    for name, row in rows.items():
        t_min, t_med = min(row["times"]), statistics.median(row["times"])
        equal = float((normalise(row["I"]) == S_ref).mean())
        rel = float(np.abs(row["I"] - I_ref).max() / (np.abs(I_ref).max() + 1e-30))
        print(f"{name:<6} {t_min:>9.3f} {t_med:>9.3f} {loop_min / t_min:>8.1f}x {row['peak_mb_above_model']:>9.0f} "
              f"{equal:>8.2%} {rel:>13.2e}")
        report[name] = {"seconds_min": t_min, "seconds_median": t_med, "speedup": loop_min / t_min,
                        "peak_mb_above_model": row["peak_mb_above_model"], "S_equal": equal, "max_rel_diff": rel}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
