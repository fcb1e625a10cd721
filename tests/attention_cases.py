"""Constructed finding-2 cases with a known truth: head-level pair lists built directly (no model),
as ``AttentionResult`` objects or as the authors' pairs TSV for the replay path.

A head's list is written as two neuron rows carrying the same pairs, so each pair is counted twice
and survives METHODS §2.5's ``count >= 2`` rule on replay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shiftcheck.probes.attention import AttentionResult
from shiftcheck.probes.attention.io import HEADER

HeadLists = dict[tuple[int, int], list[tuple[str, str]]]


def result(label: str, lists: HeadLists, n_layers: int, n_heads: int, n_kv_heads: int | None = None) -> AttentionResult:
    vocab: dict[str, int] = {}
    pairs = {key: np.array([(vocab.setdefault(a, len(vocab)), vocab.setdefault(b, len(vocab))) for a, b in p],
                           dtype=np.int64).reshape(-1, 2) for key, p in lists.items()}
    return AttentionResult(label, n_layers, n_heads, tuple(vocab), 0, pairs, {}, n_kv_heads)


def tsv_rows(model: str, lists: HeadLists) -> list[str]:
    rows = []
    for (layer, head), pairs in sorted(lists.items()):
        topk = "|||".join(f"{b}={a}" for a, b in pairs)  # key=query, as the authors write it
        rows += [f"{model}\t7B\t{layer}\tQK\t{head}\t{d}\t{d + 1}\t1.0\t{topk}" for d in (0, 1)]
    return rows


def write_tsv(path: Path, models: dict[str, HeadLists]) -> Path:
    """One file, one header, the rows of every model (the authors' multi-model file)."""
    lines = ["\t".join(HEADER)] + [row for model, lists in models.items() for row in tsv_rows(model, lists)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def with_verb(verb: str, n: int, tag: str) -> list[tuple[str, str]]:
    """``n`` pairs of ``verb`` with nonsense partners (never a verb of either list)."""
    return [(verb, f"zq{tag}x{i}") for i in range(n)]


def one_head_case(instruction: list[str], control: list[str], seed: int = 0, n_layers: int = 8,
                  n_heads: int = 8) -> tuple[HeadLists, HeadLists]:
    """Issue 19's case: control verbs change up and down in many heads; in the tuned model one head,
    layer 0 head 0, gains one pair for each of 5 instruction verbs. Returns (base, tuned) lists."""
    rng = np.random.default_rng(seed)
    base: HeadLists = {}
    tuned: HeadLists = {}
    for layer in range(n_layers):
        for head in range(n_heads):
            b_pairs, t_pairs = [], []
            for j, v in enumerate(control):
                b = int(rng.integers(0, 3))
                t = max(0, b + int(rng.integers(-1, 2)))
                b_pairs += with_verb(v, b, f"{layer}h{head}v{j}")
                t_pairs += with_verb(v, t, f"{layer}h{head}v{j}")
            base[(layer, head)], tuned[(layer, head)] = b_pairs, t_pairs
    for i, v in enumerate(instruction[:5]):
        tuned[(0, 0)] = tuned[(0, 0)] + with_verb(v, 1, f"ins{i}")
    return base, tuned


def directed_case(instruction: list[str], control: list[str], seed: int = 0, n_layers: int = 8, n_heads: int = 8,
                  p_up: float = 0.8, p_change: float = 0.5, p_control: float = 0.5) -> tuple[HeadLists, HeadLists]:
    """A real effect spread over many heads: every verb starts with 1-2 pairs per head; in each head an
    instruction verb changes with probability ``p_change``, up with probability ``p_up``; control
    verbs change likewise but up with probability ``p_control``."""
    rng = np.random.default_rng(seed)
    base: HeadLists = {}
    tuned: HeadLists = {}
    for layer in range(n_layers):
        for head in range(n_heads):
            b_pairs, t_pairs = [], []
            for verbs, p in ((instruction, p_up), (control, p_control)):
                for j, v in enumerate(verbs):
                    b = int(rng.integers(1, 3))
                    t = b + (0 if rng.random() > p_change else (1 if rng.random() < p else -1))
                    tag = f"{layer}h{head}{'i' if verbs is instruction else 'c'}{j}"
                    b_pairs += with_verb(v, b, tag)
                    t_pairs += with_verb(v, t, tag)
            base[(layer, head)], tuned[(layer, head)] = b_pairs, t_pairs
    return base, tuned


# ---------------------------------------------------------------------------------------------
# edits of real pair lists with a known truth (the fast null series of tests/test_attention_nulls.py)


def head_lists(r: AttentionResult, layers: list[int]) -> HeadLists:
    return {(layer, h): sorted(r.pair_set(layer, h)) for layer in layers for h in range(r.n_heads)}


def edit_lists(lists: HeadLists, rng: np.random.Generator, n_heads: int, n_kv_heads: int,
               plant: dict[str, list[str]], p_head: float, drop: float, add: float,
               vocab: list[str]) -> HeadLists:
    """One edited copy of ``lists``: each verb of ``plant`` (verb -> its partner words) gains its pairs
    in every query head of a (layer, kv head) with probability ``p_head``; then every pair is dropped
    with probability ``drop`` and each head gains Poisson(``add`` x its size) random pairs of ``vocab``
    words (noise that moves frequent words both ways and rare words mostly up)."""
    per_kv = n_heads // n_kv_heads
    out: HeadLists = {}
    layers = sorted({layer for layer, _ in lists})
    planted = {(layer, kvh): [v for v in plant if rng.random() < p_head] for layer in layers for kvh in range(n_kv_heads)}
    for (layer, h), pairs in lists.items():
        kept = [p for p in pairs if rng.random() >= drop]
        for v in planted[(layer, h // per_kv)]:
            kept += [tuple(sorted((v, w))) for w in plant[v]]
        n_new = rng.poisson(add * max(len(pairs), 1))
        idx = rng.integers(0, len(vocab), size=(n_new, 2))
        kept += [tuple(sorted((vocab[a], vocab[b]))) for a, b in idx if a != b]
        out[(layer, h)] = sorted(set(kept))
    return out
