"""Annotator calibration figures for docs/FFN.md ("Annotator calibration").

    python benchmarks/annotator_calibration.py heuristic            # the heuristic, with and without GloVe
    python benchmarks/annotator_calibration.py smollm2 FFN.tsv      # the heuristic on real components
    python benchmarks/annotator_calibration.py hf DIR::FILE.gguf [--per-group 1]   # a local chat model

``FFN.tsv`` comes from ``shiftcheck ffn-words CHECKPOINT --out FFN.tsv`` (all layers, R = 300).
Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import time


def _heuristic(glove: bool):
    from shiftcheck.probes import words
    from shiftcheck.probes.ffn.annotators.heuristic import HeuristicAnnotator

    return HeuristicAnnotator(glove=words.load_glove() if glove else None)


def heuristic() -> None:
    from shiftcheck.probes.ffn.annotators.calibration import calibrate

    for glove in (True, False):
        t = time.perf_counter()
        c = calibrate(_heuristic(glove))
        print(json.dumps({"measure": "calibration", "glove": glove, "seconds": round(time.perf_counter() - t, 1)}
                         | c.to_dict()))


def smollm2(tsv: str) -> None:
    from shiftcheck.probes.ffn import read_tsv, split_topk
    from shiftcheck.probes.ffn.annotators import Component
    from shiftcheck.probes.ffn.concepts import LEVELS, SCENARIOS, counts

    rows = read_tsv(tsv)
    comps = [Component(int(r["Layer"]), int(r["Rank"]), tuple(split_topk(r["TopK"])[:15])) for r in rows]
    t = time.perf_counter()
    reps = _heuristic(True).annotate(comps, 1)
    seconds = time.perf_counter() - t
    lv, n = counts(reps, "level", LEVELS)
    sc, _ = counts(reps, "scenario", SCENARIOS)
    print(json.dumps({"measure": "smollm2", "components": len(comps), "explainable": n,
                      "explainable_pct": round(100 * n / len(comps), 2), "seconds": round(seconds, 1),
                      "levels_pct": {k: round(100 * v / max(n, 1), 1) for k, v in zip(LEVELS, lv)},
                      "scenarios_pct": {k: round(100 * v / max(n, 1), 1) for k, v in zip(SCENARIOS, sc)}}))
    examples = {}
    for a in reps[0]:
        if a.explainable and len(examples.get(a.level, [])) < 3:
            examples.setdefault(a.level, []).append(f"L{a.layer} PC{a.rank}: {a.description}: " + " ".join(a.words))
    print(json.dumps({"measure": "smollm2_examples", "examples": examples}, ensure_ascii=False))


def hf(spec: str, per_group: int) -> None:
    from shiftcheck.probes.ffn.annotators import make_annotator
    from shiftcheck.probes.ffn.annotators.calibration import calibrate

    ann = make_annotator("hf:" + spec)
    t = time.perf_counter()
    c = calibrate(ann, per_group=per_group)
    print(json.dumps({"measure": "calibration", "seconds": round(time.perf_counter() - t, 1)} | c.to_dict()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("heuristic", "smollm2", "hf"))
    ap.add_argument("arg", nargs="?")
    ap.add_argument("--per-group", type=int, default=1)
    args = ap.parse_args()
    if args.what == "heuristic":
        heuristic()
    elif args.what == "smollm2":
        smollm2(args.arg)
    else:
        hf(args.arg, args.per_group)


if __name__ == "__main__":
    main()
