"""The authors' attention-pair TSV (METHODS §6): export from a probe run and replay without a model.

Header ``Model Size Layer Type Head Dim Rank Score TopK``; Type ``QK``; one row per neuron; TopK
holds the neuron's kept pairs as ``key=query`` joined by ``|||``, with the authors' text escaping
(newline ``/n``, tab ``/t``). The format is not always reversible (PROBE_NOTES): a word may
contain ``=``, and the word ``|`` next to a separator gives ``||||``. Parse rule: split TopK at
each ``|||`` from the left (so ``a=b||||=c`` gives ``a=b`` and ``|=c``), then split a pair at the
first ``=`` that leaves both sides non-empty (``==x`` is ``=`` and ``x``). Head-level lists are
counted from these neuron lists (§2.5), never from a word count of the raw text.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from shiftcheck.probes.attention import AttentionResult, NeuronPairs

HEADER = ("Model", "Size", "Layer", "Type", "Head", "Dim", "Rank", "Score", "TopK")


class PairsFormatError(ValueError):
    """A pairs TSV that does not follow the authors' format; the message names the file and row."""


def escape(text: str) -> str:
    return text.replace("\t", "/t").replace("\n", "/n")


def unescape(text: str) -> str:
    return text.replace("/t", "\t").replace("/n", "\n")


def split_pair(pair: str) -> tuple[str, str] | None:
    for i, ch in enumerate(pair):
        if ch == "=" and 0 < i < len(pair) - 1:
            return pair[:i], pair[i + 1:]
    return None


def neuron_rows(model: str, size: str, layer: int, head: int, np_: NeuronPairs, words_: tuple[str, ...]) -> list[list[str]]:
    """One TSV row per neuron of a head, in energy order; pairs ``key=query`` by decreasing cosine."""
    rows = []
    for rank, dim in enumerate(np_.order, 1):
        sel = np_.dim == dim
        pairs = "|||".join(f"{escape(words_[k])}={escape(words_[q])}" for q, k in zip(np_.q[sel], np_.k[sel]))
        rows.append([model, size, str(layer), "QK", str(head), str(int(dim)), str(rank), f"{np_.energy[dim]:.6g}", pairs])
    return rows


def write_pairs_tsv(path: Path, rows: list[list[str]]) -> None:
    with Path(path).open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)


def read_pairs_tsv(path: str | Path, label: str, min_count: int = 2) -> AttentionResult:
    """Head-level pair lists (§2.5) from the authors' TSV (split parts concatenated beforehand)."""
    path = Path(path)
    if not path.is_file():
        raise PairsFormatError(f"pairs TSV not found: {path}")
    counts: dict[tuple[int, int], Counter] = {}
    with path.open(encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if tuple(header[: len(HEADER)]) != HEADER:
            raise PairsFormatError(f"{path}: header {header} is not {list(HEADER)}")
        for n, line in enumerate(fh, 2):
            if not line.strip() or line.startswith("Model\t"):
                continue  # blank lines and the repeated headers of concatenated parts
            cols = line.rstrip("\n").split("\t", len(HEADER) - 1)
            if len(cols) < len(HEADER) - 1 or cols[3] != "QK":
                raise PairsFormatError(f"{path}:{n}: expected {len(HEADER)} columns with Type QK")
            key = (int(cols[2]), int(cols[4]))
            counter = counts.setdefault(key, Counter())
            for raw in (cols[8].split("|||") if len(cols) > 8 and cols[8] else []):
                pair = split_pair(unescape(raw))
                if pair is not None:
                    a, b = sorted((pair[0].lower(), pair[1].lower()))
                    counter[(a, b)] += 1
    vocab: dict[str, int] = {}
    pairs = {}
    for key, counter in counts.items():
        kept = [(vocab.setdefault(a, len(vocab)), vocab.setdefault(b, len(vocab)))
                for (a, b), c in sorted(counter.items()) if c >= min_count]
        pairs[key] = np.array(kept, dtype=np.int64).reshape(-1, 2)
    n_layers = 1 + max((k[0] for k in counts), default=-1)
    n_heads = 1 + max((k[1] for k in counts), default=-1)
    return AttentionResult(label, n_layers, n_heads, tuple(vocab), 0, pairs, {})
