"""Every GPU figure docs/BENCHMARKS.md lists as not measured, in one call that needs only this
repository (models are built on the device from random weights; no download, no network).

    python benchmarks/gpu.py --out gpu.json                 # on a GPU machine, about 8 minutes at most
    python benchmarks/gpu.py --smoke --device cpu --out s.json   # tiny shapes: checks the script itself

Figures, each a key of the JSON written to ``--out`` (a figure that fails records its error and the
others still run; ``--budget-s`` skips what would start after the budget is spent):

* ``attribution``: loop vs batched VJP vs batched JVP at the Llama-7B shape (hidden 4096, 32
  layers, 32 heads, vocab 32000; N = 200 prompt, M = 300 response tokens), seconds and peak memory
  per path, each in its own process (``benchmarks/attribution.py``);
* ``bf16_memory``: the same model stored in float32 and in bfloat16, weights and peak memory of one
  JVP attribution (maths in float32 either way);
* ``ffn``: finding 3's PCA + word projection at the 7B shape (down-projection 11008 x 4096, 26473
  words), seconds per layer and projected to 32 layers;
* ``attention``: finding 2's head pairs at the 7B shape (32 heads x 128 dims per layer, the shipped
  candidate words), seconds per layer and projected to 32 layers;
* ``suite``: a SmolLM2-shaped random pair (hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536;
  word-level vocabulary of the shipped candidate words) through ``pytest behaviour_tests`` on the
  device, timed by stage (``benchmarks/run.py``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = {  # (hidden, layers, heads, kv heads, mlp, vocab, N, M)
    "full": {"attribution": (4096, 32, 32, 32, 11008, 32000, 200, 300), "ffn": (4096, 11008, 26473, 2),
             "attention": (4096, 32, 128, 2), "suite": (576, 30, 9, 3, 1536), "bf16": (4096, 32, 32, 11008, 32000)},
    "smoke": {"attribution": (64, 2, 4, 2, 128, 500, 6, 10), "ffn": (64, 128, 600, 1),
              "attention": (64, 2, 16, 1), "suite": (64, 4, 4, 2, 128), "bf16": (64, 2, 4, 128, 500)},
}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def attribution(args, shape) -> dict:
    hidden, layers, heads, kv, mlp, vocab, n, m = shape
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "attribution.json"
        cmd = [sys.executable, str(HERE / "attribution.py"), "--device", args.device, "--hidden", str(hidden),
               "--layers", str(layers), "--heads", str(heads), "--kv-heads", str(kv), "--intermediate", str(mlp),
               "--vocab", str(vocab), "--prompt", str(n), "--response", str(m), "--repeats", "1", "--json", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=args.budget_s)
        return json.loads(out.read_text())


def bf16_memory(args, shape) -> dict:
    """Child processes, one per dtype, so each peak is its own."""
    rows = {}
    for dtype in ("float32", "bfloat16"):
        cmd = [sys.executable, __file__, "--child-bf16", dtype, "--device", args.device,
               *(["--smoke"] if args.smoke else [])]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=args.budget_s)
        rows[dtype] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def bf16_child(dtype: str, device: str, shape) -> None:
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from shiftcheck.probes.importance import PromptEncoding, raw_importance

    hidden, layers, heads, mlp, vocab = shape
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                      num_attention_heads=heads)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(getattr(torch, dtype)).eval()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = _peak_mb(device) if not device.startswith("cuda") else torch.cuda.memory_allocated() / 2**20
    rng = np.random.default_rng(0)
    prompt = tuple(int(i) for i in rng.integers(3, vocab, 30))
    enc = PromptEncoding((1,), prompt, tuple(map(str, prompt)), np.ones(30, bool), "")
    start = time.perf_counter()
    raw_importance(model, enc, [int(i) for i in rng.integers(3, vocab, 60)], "jvp")
    _sync(device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(json.dumps({"weights_mb": weights, "peak_mb": _peak_mb(device), "peak_above_model_mb": _peak_mb(device) - base,
                      "seconds_jvp_30x60": time.perf_counter() - start}))


def ffn(args, shape) -> dict:
    import torch

    from shiftcheck.probes import ffn as ffn_probe

    d_model, d_mlp, n_words, n_layers = shape
    g = torch.Generator().manual_seed(0)
    E = torch.randn(n_words, d_model, generator=g)
    E_hat = (E / E.norm(dim=1, keepdim=True)).to(args.device)
    times = []
    for layer in range(n_layers):
        W = (torch.randn(d_mlp, d_model, generator=g) * 0.02).to(args.device)
        _sync(args.device)
        start = time.perf_counter()
        ffn_probe.layer_components(W, E_hat, ffn_probe.FfnConfig(), layer)
        _sync(args.device)
        times.append(time.perf_counter() - start)
    return {"seconds_per_layer": times, "projected_32_layers_s": sum(times) / len(times) * 32,
            "peak_mb": _peak_mb(args.device)}


def attention(args, shape) -> dict:
    import numpy as np
    import torch

    from shiftcheck.probes import attention as at
    from shiftcheck.probes import words

    d_model, n_heads, d_head, n_layers = shape
    cands = words.candidate_words()
    if args.smoke:
        cands = words.WordList(cands.name + " (first 400)", cands.words[:400], cands.source)
    ws = at.word_space(cands, words.load_glove(), at.AttentionConfig(), "glove", args.device)
    has = np.ones(len(cands.words), bool)
    g = torch.Generator().manual_seed(0)
    E_w = torch.randn(len(cands.words), d_model, generator=g, dtype=torch.float64).to(args.device)
    times = []
    for _layer in range(n_layers):
        Wq = (torch.randn(n_heads, d_model, d_head, generator=g, dtype=torch.float64) / d_model ** 0.5).to(args.device)
        Wk = (torch.randn(n_heads, d_model, d_head, generator=g, dtype=torch.float64) / d_model ** 0.5).to(args.device)
        _sync(args.device)
        start = time.perf_counter()
        Hq, Hk = E_w @ Wq, E_w @ Wk
        for h in range(n_heads):
            at.head_pairs(at.neuron_pairs(Hq[h], Hk[h], ws, has, 100), ws.lower_id, 2)
        _sync(args.device)
        times.append(time.perf_counter() - start)
    return {"seconds_per_layer": times, "projected_32_layers_s": sum(times) / len(times) * 32,
            "n_words": len(cands.words), "peak_mb": _peak_mb(args.device)}


def suite(args, shape) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from shiftcheck.probes import words
    from shiftcheck.probes.world.tokenizer import SPECIAL_TOKENS, build_tokenizer

    hidden, layers, heads, kv, mlp = shape
    seen = dict.fromkeys(SPECIAL_TOKENS)
    for w in words.candidate_words().words:
        if " " not in w and w.strip():
            seen.setdefault(w, None)
    vocab = list(seen)[: 3500 if args.smoke else None]
    tok = build_tokenizer(vocab)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(cfg).eval()
            path = Path(tmp) / f"m{seed}"
            model.save_pretrained(path, safe_serialization=True)
            tok.save_pretrained(path)
            paths.append(path)
        out = Path(tmp) / "run.json"
        extra = f"--device {args.device} --allow-inconclusive" + (" --ffn-components 8" if args.smoke else "")
        cmd = [sys.executable, str(HERE / "run.py"), "--base", str(paths[0]), "--tuned", str(paths[1]),
               "--max-prompts", "2" if args.smoke else "8", "--max-new-tokens", "4" if args.smoke else "32",
               "--extra", extra, "--quiet", "--json", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=args.budget_s)
        return json.loads(out.read_text())


FIGURES = {"attribution": attribution, "bf16_memory": bf16_memory, "ffn": ffn, "attention": attention,
           "suite": suite}
SHAPE_OF = {"attribution": "attribution", "bf16_memory": "bf16", "ffn": "ffn", "attention": "attention",
            "suite": "suite"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (runs on a CPU in seconds)")
    ap.add_argument("--only", nargs="+", choices=list(FIGURES), help="run only these figures")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no figure after this many seconds")
    ap.add_argument("--out", type=Path, default=Path("gpu.json"))
    ap.add_argument("--child-bf16", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shapes = SHAPES["smoke" if args.smoke else "full"]
    if args.child_bf16:
        bf16_child(args.child_bf16, args.device, shapes["bf16"])
        return
    import torch

    report: dict = {"device": args.device, "smoke": args.smoke, "torch": torch.__version__,
                    "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    start = time.perf_counter()
    for name in args.only or list(FIGURES):
        if time.perf_counter() - start > args.budget_s:
            report[name] = {"skipped": f"budget of {args.budget_s:g} s spent"}
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            report[name] = FIGURES[name](args, shapes[SHAPE_OF[name]])
        except Exception as exc:  # noqa: BLE001 - one failed figure must not lose the others
            detail = exc.stderr[-2000:] if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else ""
            report[name] = {"error": f"{type(exc).__name__}: {exc}", "detail": detail or traceback.format_exc()[-2000:]}
        report[name]["wall_s"] = round(time.perf_counter() - t0, 2)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {report[name]['wall_s']} s", file=sys.stderr, flush=True)
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")  # after each: a cut run keeps the rest
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
