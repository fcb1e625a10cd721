"""Finding 2's verdict over seeds on the lexical test model (tests/lexical.py): null series with
support, planted power, and the frequency-matching comparison. A measurement, recorded in
docs/ATTENTION.md; CI runs the fast pair-list series of tests/test_attention_nulls.py.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/attention_nulls.py split --seeds 20
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/attention_nulls.py noise --seeds 20 --rel 3 --size bigger
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/attention_nulls.py planted --seeds 20

Constructions (layers 0-1 = the lowest group; B0 the lexical base, fixed):
* ``shuffle``: base = B0 + every instruction verb planted in random (layer, kv head)s, tuned = B0 +
  every instruction verb planted in other, independent random ones (each with ``--p-head``), both
  with independent noise at ``--rel``: verbs change in many heads, in no direction.
* ``split``: instruction verbs split at random into halves A and B; base = B0 + A planted, tuned =
  B0 + B planted, each verb in each (layer, kv head) with probability ``--p-head``; key neighbours
  never instruction verbs unless ``--keys-may-be-verbs`` (then a verb of A can gain pairs as the key
  of a B plant, so the realised tuned model does gain instruction-verb pairs: see the docs).
* ``split-per-head``: as ``split``, but every (layer, kv head) draws its own halves, so each verb
  is on the base side in about half of its heads: no verb and no half of the verbs has a direction
  in the realised models (the per-seed ``split`` gives one half a direction: see the docs).
* ``tilted`` (power of a two-way effect): base = B0 + every instruction verb planted with
  ``--p-base``, tuned = B0 + every instruction verb planted with ``--p-head`` (independent draws),
  noise on both: instruction verbs both gain and lose pairs, gaining in more heads.
* ``noise``: base = B0, tuned = B0 + Gaussian noise on W_Q/W_K of layers 0-1 at ``--rel`` times each
  matrix's RMS (not exchangeable: a verb absent from the base lists can only gain).
* ``planted``: base = B0 + noise, tuned = B0 + every instruction verb planted with ``--p-head`` +
  noise (independent draws, ``--rel``): power.
Each seed reports the verdict (cluster bootstrap, frequency-matched controls), the same without
matching (``unmatched``), and the two-way variant that also resamples verbs (``two_way``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SIZES = {"big": {}, "bigger": {"n_heads": 32, "n_kv_heads": 16, "d_model": 512}}


def finish(summary: dict, rows: list[dict], alpha: float, json_path: str | None) -> int:
    """Pass counts of each verdict variant with their Clopper-Pearson intervals, printed and saved."""
    for key in ("verdict", "unmatched", "two_way"):
        k = sum(r[key]["outcome"] == "pass" for r in rows)
        summary[key] = {**clopper_pearson(k, len(rows), alpha),
                        "inconclusive": sum(r[key]["outcome"] == "inconclusive" for r in rows)}
    print(json.dumps(summary))
    if json_path:
        Path(json_path).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


def clopper_pearson(k: int, n: int, alpha: float) -> dict:
    from scipy.stats import binomtest

    t = binomtest(k, n, alpha, alternative="greater")
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return {"passes": k, "seeds": n, "rate": k / n, "ci95": [ci.low, ci.high], "p_rate_above_alpha": t.pvalue}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("construction", choices=["shuffle", "split", "split-per-head", "tilted", "noise", "planted"])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--size", choices=sorted(SIZES), default="big")
    ap.add_argument("--rel", type=float, default=1.0, help="noise, times each W_Q/W_K matrix's RMS entry")
    ap.add_argument("--p-head", type=float, default=0.5)
    ap.add_argument("--p-base", type=float, default=0.2, help="tilted: the base side's planting probability")
    ap.add_argument("--specific", type=int, default=0, metavar="K",
                    help="tilted/planted/split-per-head: project the control verbs' top K embedding directions out of each "
                         "plant's query direction (a plant specific to instruction verbs)")
    ap.add_argument("--keys-may-be-verbs", action="store_true")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--min-head-support", type=int, default=10)
    ap.add_argument("--json", default=None, help="write the per-seed rows and the summary here")
    args = ap.parse_args(argv)

    from lexical import (BIG, PairLister, add_layer_noise, lexical_model, lexical_vocab, plant_random_heads,
                         plant_split_per_head, verb_subspace)

    from shiftcheck.probes import attention as at
    from shiftcheck.probes import words

    t0 = time.time()
    kv = words.load_glove()
    base, tok = lexical_model(kv, lexical_vocab(kv), **{**BIG, **SIZES[args.size]})
    lister = PairLister(tok, kv, base)
    layers = at.group_layers(0, base.config.num_hidden_layers)
    iv = [v for v in words.instruction_verbs().words if v in tok.get_vocab()]
    cv = words.control_verbs().words
    not_keys = frozenset() if args.keys_may_be_verbs else frozenset(iv)
    rb0 = lister.result(base, layers)
    avoid = verb_subspace(base, tok, cv, args.specific) if args.specific else None
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rng = np.random.default_rng(seed)
        mb, mt = copy.deepcopy(base), copy.deepcopy(base)
        if args.construction in ("split-per-head", "tilted"):
            if args.construction == "split-per-head":
                plant_split_per_head(mb, mt, tok, kv, iv, layers, args.p_head, 1000 + seed, not_keys=not_keys,
                                     avoid=avoid)
            else:
                plant_random_heads(mb, tok, kv, iv, layers, args.p_base, 1000 + seed, not_keys=not_keys, avoid=avoid)
                plant_random_heads(mt, tok, kv, iv, layers, args.p_head, 2000 + seed, not_keys=not_keys, avoid=avoid)
            if args.rel:
                add_layer_noise(mb, layers, args.rel, 3000 + seed)
                add_layer_noise(mt, layers, args.rel, 4000 + seed)
            rb = lister.result(mb, layers)
        elif args.construction in ("split", "shuffle"):
            perm = list(rng.permutation(iv))
            halves = (perm[: len(iv) // 2], perm[len(iv) // 2 :]) if args.construction == "split" else (iv, iv)
            plant_random_heads(mb, tok, kv, halves[0], layers, args.p_head, 1000 + seed, not_keys=not_keys)
            plant_random_heads(mt, tok, kv, halves[1], layers, args.p_head, 2000 + seed, not_keys=not_keys)
            if args.rel:
                add_layer_noise(mb, layers, args.rel, 3000 + seed)
                add_layer_noise(mt, layers, args.rel, 4000 + seed)
            rb = lister.result(mb, layers)
        elif args.construction == "noise":
            add_layer_noise(mt, layers, args.rel, 100 + seed)
            rb = rb0
        else:
            add_layer_noise(mb, layers, args.rel, 3000 + seed)
            plant_random_heads(mt, tok, kv, iv, layers, args.p_head, 2000 + seed, not_keys=not_keys, avoid=avoid)
            add_layer_noise(mt, layers, args.rel, 4000 + seed)
            rb = lister.result(mb, layers)
        rt = lister.result(mt, layers)
        row = {"seed": seed}
        for key, match, both in (("verdict", True, False), ("unmatched", False, False), ("two_way", True, True)):
            v = at.verb_verdict(rb, rt, 0, iv, cv, 0.5, args.alpha, 5, min_head_support=args.min_head_support,
                                match=match, resample_verbs=both)
            n = v.numbers
            row[key] = {
                "outcome": v.outcome, "p": n["p_value"], "share": n.get("bootstrap_instruction_share"),
                "control": n.get("bootstrap_control_share"), "verbs": n["instruction_verbs_with_change"],
                "clusters": n["instruction_changed_clusters"], "welch_p": n["welch_p_two_sided"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"construction": args.construction, "size": args.size, "rel": args.rel, "p_head": args.p_head,
               "p_base": args.p_base if args.construction == "tilted" else None,
               "keys_may_be_verbs": args.keys_may_be_verbs, "specific": args.specific, "clusters_in_group": len(layers) * base.config.num_key_value_heads,
               "seconds": round(time.time() - t0, 1)}
    return finish(summary, rows, args.alpha, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
