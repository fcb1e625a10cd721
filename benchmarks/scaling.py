"""Benchmark: how the attribution stage scales over xdist workers and CI-matrix shards, and what
bfloat16 storage saves, measured in one run.

    python benchmarks/scaling.py                 # CPU: 1 vs 2 workers vs 2 shards, fp32 vs bf16 memory
    python benchmarks/scaling.py --prompts 96 --hidden 256

Each configuration runs the real suite (``pytest behaviour_tests``) on the same saved tiny Llama pair
and prompts, from a cold cache, and reports wall seconds and the speed-up over one process. The two
shards run concurrently (as two CI jobs would), then a merging run asserts from the cache; its time
is reported separately. Memory: the attribution of one instance in a subprocess per storage dtype,
peak RSS above the loaded model's (CPU) or peak allocated (GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_pair(root: Path, hidden: int, layers: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from builders import save_checkpoint, tiny_model, word_tokenizer

    tok = word_tokenizer()
    out = []
    for name, seed in (("base", 0), ("tuned", 1)):
        model = tiny_model("llama", seed=seed)
        if hidden != 32 or layers != 2:
            from transformers import LlamaConfig, LlamaForCausalLM
            import torch

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                                     num_hidden_layers=layers, num_attention_heads=4,
                                                     num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                                     pad_token_id=3))
        out.append(save_checkpoint(model, tok, root / name))
    return out[0], out[1]


def write_prompts(path: Path, n: int) -> None:
    words = "write a short poem about the sea list the red house explain the question describe a long river".split()
    with path.open("w") as fh:
        for i in range(n):
            text = " ".join(words[(i + k) % len(words)] for k in range(8))
            fh.write(json.dumps({"id": f"p{i}", "source": "toy", "prompt": text,
                                 "instruction_char_spans": [[0, len(text.split()[0])]]}) + "\n")


def pytest_run(work: Path, cache: Path, args: list[str], extra: list[str]) -> tuple[float, subprocess.Popen]:
    env = dict(os.environ, SHIFTCHECK_CACHE=str(cache))
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "behaviour_tests" / "test_importance_density.py"), "-q",
           "-p", "no:cacheprovider", "--rootdir", str(work), *args, *extra]
    return time.perf_counter(), subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 text=True)


def timed(work: Path, cache: Path, args: list[str], extra: list[str]) -> float:
    start, proc = pytest_run(work, cache, args, extra)
    out, _ = proc.communicate()
    if proc.returncode not in (0, 1):
        raise SystemExit(out[-3000:])
    return time.perf_counter() - start


def memory_child(dtype: str, hidden: int, layers: int, vocab: int) -> None:
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from shiftcheck.probes.importance import PromptEncoding, raw_importance

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 8 / 3),
                                         num_hidden_layers=layers, num_attention_heads=8)).eval()
    model = model.to(getattr(torch, dtype))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(0)
    prompt = tuple(int(i) for i in rng.integers(3, vocab, 30))
    enc = PromptEncoding((1,), prompt, tuple(map(str, prompt)), np.ones(30, bool), "")
    raw_importance(model, enc, [int(i) for i in rng.integers(3, vocab, 60)], "jvp")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(json.dumps({"weights_mb": weights, "peak_rss_mb": peak, "peak_above_model_mb": peak - base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64, help="prompts (16 per unit)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--mem-hidden", type=int, default=512)
    ap.add_argument("--mem-layers", type=int, default=4)
    ap.add_argument("--mem-vocab", type=int, default=32000)
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.mem_hidden, args.mem_layers, args.mem_vocab)
        return
    work = Path(tempfile.mkdtemp(prefix="shiftcheck-scaling-"))
    try:
        (work / "pytest.ini").write_text("[pytest]\n")
        base, tuned = build_pair(work, args.hidden, args.layers)
        write_prompts(work / "prompts.jsonl", args.prompts)
        common = ["--base", str(base), "--tuned", str(tuned), "--prompts", str(work / "prompts.jsonl"),
                  "--max-new-tokens", str(args.max_new_tokens), "--device", "cpu"]
        print(f"{args.prompts} prompts, tiny Llama hidden {args.hidden} x {args.layers} layers, "
              f"{args.max_new_tokens} new tokens; {os.cpu_count()} cores", flush=True)
        results = {}
        results["1 process"] = timed(work, work / "c1", common, [])
        print(f"1 process: {results['1 process']:.1f} s", flush=True)
        results["2 workers"] = timed(work, work / "c2", common, ["-n", "2"])
        print(f"2 workers: {results['2 workers']:.1f} s", flush=True)
        start = time.perf_counter()
        procs = [pytest_run(work, work / "c3", common, ["--shiftcheck-shard", s])[1] for s in ("0/2", "1/2")]
        for proc in procs:
            proc.communicate()
        results["2 shards (concurrent)"] = time.perf_counter() - start
        results["merge run after shards"] = timed(work, work / "c3", common, [])
        print(f"2 shards: {results['2 shards (concurrent)']:.1f} s, then merge {results['merge run after shards']:.1f} s")
        one = results["1 process"]
        print(f"\n{'configuration':<26} {'seconds':>8} {'speed-up':>9}")
        for name, secs in results.items():
            print(f"{name:<26} {secs:>8.1f} {one / secs if 'merge' not in name else float('nan'):>8.2f}x")
        print(f"\nattribution memory, hidden {args.mem_hidden} x {args.mem_layers} layers, vocab {args.mem_vocab}:")
        for dtype in ("float32", "bfloat16"):
            out = subprocess.run([sys.executable, __file__, "--memory-child", dtype, "--mem-hidden", str(args.mem_hidden),
                                  "--mem-layers", str(args.mem_layers), "--mem-vocab", str(args.mem_vocab)],
                                 capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {dtype:<9} weights {m['weights_mb']:7.0f} MB, peak RSS {m['peak_rss_mb']:7.0f} MB "
                  f"({m['peak_above_model_mb']:.0f} MB above the loaded model)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
