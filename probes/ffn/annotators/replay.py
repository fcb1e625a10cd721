"""Replay annotator: annotated FFN TSVs in the authors' format (METHODS §6), no model, no endpoint.

Columns: ``Model Size Layer Type Head Rank Score TopK`` then ``Explainable Tokens Summary`` and a
``Task`` (scenario) and/or ``Concept`` (linguistic level) column. An optional ``Seed`` column
holds the repetition (default 0). A row whose summary says "Cannot Tell", or whose Task and
Concept are both empty, is an unexplainable component.
"""

from __future__ import annotations

from pathlib import Path

from shiftcheck.probes.ffn.annotators import Annotation
from shiftcheck.probes.ffn import FfnError, read_tsv, split_topk

SUMMARY = "Explainable Tokens Summary"


def load_annotations(path: str | Path, max_rank: int = 300) -> list[list[Annotation]]:
    """``out[rep]`` = the annotations of repetition ``rep`` (Rank <= ``max_rank``, §3.4)."""
    rows = read_tsv(path)
    cols = set(rows[0]) if rows else set()
    if rows and SUMMARY not in cols and "Task" not in cols and "Concept" not in cols:
        raise FfnError(f"{path}: not an annotated FFN TSV (needs '{SUMMARY}' and Task and/or Concept columns)")
    reps: dict[int, list[Annotation]] = {}
    for r in rows:
        try:
            layer, rank, seed = int(r["Layer"]), int(r["Rank"]), int(r.get("Seed") or 0)
        except ValueError as exc:
            raise FfnError(f"{path}: bad Layer/Rank/Seed in row {r}: {exc}") from None
        if rank > max_rank:
            continue
        desc = r.get(SUMMARY, "") or ""
        task, concept = r.get("Task", "") or "", r.get("Concept", "") or ""
        if not desc:
            desc = "Cannot Tell" if not (task or concept) else "(replayed)"
        reps.setdefault(seed, []).append(Annotation(layer, rank, tuple(split_topk(r["TopK"])[:15]), desc, task,
                                                    concept))
    return [reps[k] for k in sorted(reps)]


def write_annotations(reps: list[list[Annotation]], path: str | Path, model: str = "", size: str = "") -> Path:
    """The inverse of :func:`load_annotations` (Score left empty: it is not part of a label)."""
    from shiftcheck.probes.ffn import encode_field, write_tsv

    rows = []
    for seed, anns in enumerate(reps):
        for a in anns:
            rows.append([model, size, str(a.layer), "FFN", "0", str(a.rank), "",
                         "|||".join(encode_field(w) for w in a.words), encode_field(a.description),
                         encode_field(a.scenario), encode_field(a.level), str(seed)])
    header = ("Model", "Size", "Layer", "Type", "Head", "Rank", "Score", "TopK", SUMMARY, "Task", "Concept", "Seed")
    return write_tsv(rows, Path(path), header)
