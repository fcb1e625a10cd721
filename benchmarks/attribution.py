"""Benchmark: per-token loop vs batched attribution (METHODS §1.3), measured in one run.

    python benchmarks/attribution.py --hidden 128 --layers 2 --prompt 30 --response 120
    python benchmarks/attribution.py --hidden 512 --layers 4 --heads 8 --vocab 32000 --prompt 30 --response 240
    python benchmarks/attribution.py ... --attribution-memory 256MB   # chunks sized from a budget
    python benchmarks/attribution.py --device cuda --hidden 4096 --layers 32 --heads 32 \\
        --vocab 32000 --prompt 200 --response 300          # Llama-7B shape on one GPU

A randomly initialised LlamaForCausalLM is used: timings depend on shape, not on weights. Paths:
``loop`` (the reference), ``vjp-logits`` (reverse mode batched from log p, the code before the
unembedding seam; its default chunk is the old CPU default, 64), ``vjp`` and ``jvp`` (batched from the
final hidden state). Each path runs in its own subprocess, so its peak memory is its own (CPU: peak
RSS above the RSS after building the model, the kernel's high-water mark reset there through
/proc/self/clear_refs; GPU: peak allocated above the model), repeated ``--repeats`` times; the minimum
and the median wall seconds are reported with the CPU seconds of the fastest repeat, the speed-up
over the first path (normally the loop, the reference), the rows per pass and the memory estimate they were sized by (memory.py), and how many
entries of the normalised S (L=10, b=0) agree with the fp32 loop. Progress goes to stderr.
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

PATHS = ("loop", "vjp-logits", "vjp", "jvp")
OLD_CPU_CHUNK = 64  # vjp-logits without --chunk or a budget: the CPU default before the seam


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


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Reset the kernel's RSS high-water mark (VmHWM) and return the current RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mb() -> float:
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def run_one(args: argparse.Namespace) -> None:
    """Child mode: one path, ``repeats`` times; JSON on stdout, I saved to ``--out-npy``."""
    import torch

    from shiftcheck.probes.importance import PromptEncoding, importance_jvp, importance_loop, importance_vjp
    from shiftcheck.probes.importance import attribution as att
    from shiftcheck.probes.importance import memory

    model = build_model(args)
    rng = np.random.default_rng(0)
    prompt = tuple(int(i) for i in rng.integers(3, args.vocab, args.prompt))
    resp = [int(i) for i in rng.integers(3, args.vocab, args.response)]
    enc = PromptEncoding((1,), prompt, tuple(map(str, prompt)), np.ones(args.prompt, dtype=bool), "")
    budget = args.budget_bytes
    seq_len, M = 1 + args.prompt + args.response, args.response
    side = "jvp" if args.path == "jvp" else "vjp"
    logits = args.path == "vjp-logits"
    chunk = None
    if args.path != "loop":
        explicit = args.chunk or (OLD_CPU_CHUNK if logits and budget is None and not args.device.startswith("cuda")
                                  else None)
        chunk = att.pick_chunk(model, seq_len, M, side, explicit, budget, through_logits=logits)
    dims = memory.dims_of(model.config, seq_len, M)
    estimate = None if chunk is None else memory.peak_bytes(dims, side, chunk, logits) / 2**20
    fn = {"loop": lambda: importance_loop(model, enc, resp),
          "vjp-logits": lambda: att.vjp_through_logits(model, enc, resp, chunk),
          "vjp": lambda: importance_vjp(model, enc, resp, chunk),
          "jvp": lambda: importance_jvp(model, enc, resp, chunk)}[args.path]
    cuda = args.device.startswith("cuda")
    base_mb = _reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_mb = torch.cuda.memory_allocated() / 2**20
    times, cpu, I = [], [], None
    for _ in range(args.repeats):
        start, c0 = time.perf_counter(), time.process_time()
        with torch.enable_grad():
            I = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()
    np.save(args.out_npy, I)
    print(json.dumps({"times": times, "cpu": cpu, "peak_mb_above_model": peak - base_mb, "peak_mb": peak,
                      "chunk": chunk, "estimate_mb": estimate,
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
    ap.add_argument("--attribution-memory", default=None, metavar="SIZE",
                    help="budget of one batched pass, as the pytest option: 2GB, 1.5GiB, 512MB, a number of MiB, "
                         "auto (default: 1 GiB on a CPU, half the free GPU memory)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="loop,vjp-logits,vjp,jvp", help="comma-separated subset of " + ",".join(PATHS))
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--out-npy", help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = parser().parse_args()
    from shiftcheck.fixtures.options import parse_memory

    args.budget_bytes = None if args.attribution_memory is None else parse_memory(args.attribution_memory)
    if args.path:
        run_one(args)
        return
    paths = [p for p in args.paths.split(",") if p]
    # the first path is the reference of "S equal" and the speed-up (normally the loop)
    shape = ["--device", args.device, "--hidden", str(args.hidden), "--layers", str(args.layers), "--heads",
             str(args.heads), "--vocab", str(args.vocab), "--prompt", str(args.prompt), "--response",
             str(args.response), "--repeats", str(args.repeats)]
    for flag, value in (("--kv-heads", args.kv_heads), ("--intermediate", args.intermediate), ("--chunk", args.chunk),
                        ("--attribution-memory", args.attribution_memory)):
        if value is not None:
            shape += [flag, str(value)]
    print(f"shape: hidden {args.hidden}, layers {args.layers}, vocab {args.vocab}, N={args.prompt}, "
          f"M={args.response}, device {args.device}, repeats {args.repeats}, budget {args.attribution_memory or 'auto'}")
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
            print(f"[{time.strftime('%H:%M:%S')}] {path}: min {min(rows[path]['times']):.3f} s, peak "
                  f"{rows[path]['peak_mb_above_model']:.0f} MB", file=sys.stderr, flush=True)

    from shiftcheck.probes.importance import normalise

    S_ref = normalise(I_ref)
    loop_min = min(rows[paths[0]]["times"])
    report = {"shape": {k: v for k, v in vars(args).items() if k not in ("path", "out_npy")},
              "device_name": rows[paths[0]]["device_name"], "reference": paths[0]}
    print(f"{'path':<10} {'min s':>8} {'median s':>8} {'CPU s':>8} {'speed-up':>8} {'chunk':>5} {'est. MB':>8} "
          f"{'peak MB':>8} {'S equal':>8} {'max rel diff':>12}")
    for name, row in rows.items():
        t_min, t_med = min(row["times"]), statistics.median(row["times"])
        cpu = row["cpu"][row["times"].index(t_min)]
        equal = float((normalise(row["I"]) == S_ref).mean())
        rel = float(np.abs(row["I"] - I_ref).max() / (np.abs(I_ref).max() + 1e-30))
        chunk = "-" if row["chunk"] is None else str(row["chunk"])
        est = "-" if row["estimate_mb"] is None else f"{row['estimate_mb']:.0f}"
        print(f"{name:<10} {t_min:>8.2f} {t_med:>8.2f} {cpu:>8.2f} {loop_min / t_min:>7.1f}x {chunk:>5} {est:>8} "
              f"{row['peak_mb_above_model']:>8.0f} {equal:>8.2%} {rel:>12.2e}")
        report[name] = {"seconds_min": t_min, "seconds_median": t_med, "cpu_seconds": cpu, "speedup": loop_min / t_min,
                        "chunk": row["chunk"], "estimate_mb": row["estimate_mb"],
                        "peak_mb_above_model": row["peak_mb_above_model"], "S_equal": equal, "max_rel_diff": rel}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
