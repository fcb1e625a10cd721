"""Replay annotator: labels made elsewhere, read from files; no model, no endpoint.

Two formats, one result (:class:`ReplayLabels`, repetitions as lists of :class:`Annotation`):

1. **shiftcheck's annotated TSV** (METHODS §6; written by ``shiftcheck ffn-words --annotator`` and
   ``shiftcheck paper-data convert``): ``Model Size Layer Type Head Rank Score TopK`` then
   ``Explainable Tokens Summary``, ``Task`` (scenario) and/or ``Concept`` (linguistic level) and an
   optional ``Seed`` (the repetition, default 0). A row whose summary says "Cannot Tell", or whose
   Task and Concept are both empty, is an unexplainable component.

2. **The authors' released files** (``results/linear_interpret/`` of
   JacksonWuxs/Interpret_Instruction_Tuning_LLMs, written by their ``run_chatgpt_annotate.py``):
   ``linear_task_seed<s>.tsv`` (header ``Task Explainable Tokens Summary Model Size Layer Type Head
   Rank Score TopK``) and ``linear_concept_seed<s>.tsv`` (the same with ``Concept`` first). Both
   models share each file (the ``Model`` column: llama, vicuna, ...) and hold **only the
   explainable components** (their annotator skipped "Cannot Tell" summaries); seeds are the
   repetitions. A spec names the folder and the model: ``DIR::vicuna``.

   The authors' Table 5 shares (``analysis_linear_interpret.py``) divide by the rows of each file,
   i.e. by the explainable components, so the shares need no total. The total is only needed for
   the share of explainable components per layer: it is read from ``linear_seed<s>.tsv`` (every
   component, with its ``Explainable`` flag) when that file is present; otherwise the labels are
   marked ``explainable_only`` and the report says the explainable share is unknown. A component
   found in the task file but not in the concept file (or the reverse; the authors' annotator
   dropped failed calls) is counted with an empty label for the missing part; the authors count
   each file's rows separately. Malformed rows (wrong number of fields) are skipped, as theirs are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from shiftcheck.probes.ffn import FfnError, decode_field, read_tsv, split_topk
from shiftcheck.probes.ffn.annotators import Annotation

SUMMARY = "Explainable Tokens Summary"
AUTHORS_COLUMNS = ("Explainable", "Tokens", "Summary", "Model", "Size", "Layer", "Type", "Head", "Rank", "Score",
                   "TopK")
AUTHORS_KINDS = {"task": "Task", "concept": "Concept"}
_SEED = re.compile(r"seed(\d+)\.tsv$")


@dataclass(frozen=True)
class ReplayLabels:
    """Replayed annotations of one model: ``repetitions[rep][i]``, and where they came from."""

    repetitions: list
    files: tuple[str, ...]
    model: str = ""
    explainable_only: bool = False  # no unexplainable component in the files: totals unknown
    skipped_rows: int = 0

    def describe(self) -> str:
        names = ", ".join(Path(f).name for f in self.files[:4]) + (" ..." if len(self.files) > 4 else "")
        what = f"model {self.model} in " if self.model else ""
        return f"{what}{names} ({len(self.repetitions)} repetition(s))"


def load_annotations(path: str | Path, max_rank: int = 300) -> list[list[Annotation]]:
    """shiftcheck's annotated TSV: ``out[rep]`` = the annotations of repetition ``rep`` (Rank <= ``max_rank``)."""
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


# ---------------------------------------------------------------------------------------------
# the authors' linear_{task,concept}_seed<s>.tsv


def read_authors_rows(path: Path, first: str | None) -> tuple[list[dict[str, str]], int]:
    """Rows of one authors' file as dicts (header lines repeated by resumed runs skipped) and the
    number of malformed rows skipped. ``first`` is the label column before the 11 shared ones
    (``Task`` or ``Concept``), or None for ``linear_seed<s>.tsv``."""
    columns = ((first,) if first else ()) + AUTHORS_COLUMNS
    if not path.is_file():
        raise FfnError(f"not found: {path}")
    rows, bad = [], 0
    with path.open(encoding="utf-8", newline="\n") as fh:
        for n, line in enumerate(fh):
            cells = line.rstrip("\n").split("\t")
            if len(cells) != len(columns):
                bad += bool(line.strip())
                continue
            row = dict(zip(columns, cells))
            if row["Model"] == "Model":  # the header (their reader skips it the same way)
                continue
            rows.append(row)
    return rows, bad


def authors_files(folder: Path) -> dict[int, dict[str, Path]]:
    """seed -> {"task"|"concept"|"all": path} for the authors' files present in ``folder``."""
    out: dict[int, dict[str, Path]] = {}
    for p in sorted(folder.glob("linear_*seed*.tsv")):
        m = _SEED.search(p.name)
        if not m:
            continue
        kind = p.name[len("linear_"):m.start()].rstrip("_") or "all"
        if kind in ("task", "concept", "all"):
            out.setdefault(int(m.group(1)), {})[kind] = p
    return out


def authors_models(folder: str | Path) -> list[str]:
    """The ``Model`` values of the authors' task/concept files in ``folder`` (sorted)."""
    models: set[str] = set()
    for seed, kinds in authors_files(Path(folder)).items():
        for kind in ("task", "concept"):
            if kind in kinds:
                models |= {r["Model"] for r in read_authors_rows(kinds[kind], AUTHORS_KINDS[kind])[0]}
    return sorted(models)


def _key(r: dict[str, str]) -> tuple[str, str, str, str]:
    return r["Layer"], r["Type"], r["Head"], r["Rank"]


def _annotation(r: dict[str, str], scenario: str, level: str) -> Annotation:
    return Annotation(int(float(r["Layer"])), int(float(r["Rank"])),
                      tuple(decode_field(w) for w in split_topk(r["TopK"])[:15]), r["Summary"].strip(), scenario,
                      level)


def load_authors(folder: str | Path, model: str, max_rank: int = 300) -> ReplayLabels:
    """One model's labels from the authors' ``linear_{task,concept}_seed<s>.tsv`` in ``folder``."""
    folder = Path(folder)
    seeds = {s: k for s, k in authors_files(folder).items() if "task" in k or "concept" in k}
    if not seeds:
        raise FfnError(f"{folder}: no linear_task_seed<s>.tsv or linear_concept_seed<s>.tsv (the authors' "
                       "results/linear_interpret/ folder)")
    reps, files, skipped, explainable_only = [], [], 0, False
    for seed in sorted(seeds):
        kinds = seeds[seed]
        labelled: dict[tuple, dict[str, str]] = {}  # key -> row (first seen) with "Task"/"Concept"
        for kind in ("task", "concept"):
            if kind not in kinds:
                continue
            col = AUTHORS_KINDS[kind]
            rows, bad = read_authors_rows(kinds[kind], col)
            files.append(str(kinds[kind]))
            skipped += bad
            for r in rows:
                if r["Model"] != model:
                    continue
                entry = labelled.setdefault(_key(r), dict(r))
                entry.setdefault(col, r[col])
        anns = [_annotation(r, r.get("Task", "").strip(), r.get("Concept", "").strip()) for r in labelled.values()]
        if "all" in kinds:
            rows, bad = read_authors_rows(kinds["all"], None)
            files.append(str(kinds["all"]))
            skipped += bad
            anns += [_annotation(r, "", "") for r in rows if r["Model"] == model and _key(r) not in labelled
                     and "cannot tell" in r["Summary"].lower()]
        else:
            explainable_only = True
        anns = [a for a in anns if a.rank <= max_rank]
        if anns:
            reps.append(sorted(anns, key=lambda a: (a.layer, a.rank)))
    if not reps:
        found = authors_models(folder)
        raise FfnError(f"{folder}: no rows for model {model!r}; the files hold {', '.join(found) or 'no model'}")
    return ReplayLabels(reps, tuple(files), model, explainable_only, skipped)


def load_replay(spec: str | Path, max_rank: int = 300) -> ReplayLabels:
    """``--replay-ffn-base/--replay-ffn-tuned``: a shiftcheck annotated TSV, or ``DIR::MODEL`` for
    the authors' ``results/linear_interpret/`` folder (one model of their files)."""
    text = str(spec)
    path, _, model = text.partition("::")
    p = Path(path)
    if p.is_dir():
        if not model:
            found = authors_models(p)
            raise FfnError(f"{p} is a folder of the authors' files: name the model as {p}::MODEL "
                           f"(the files hold {', '.join(found) or 'no model'})")
        return load_authors(p, model, max_rank)
    if model:
        raise FfnError(f"{text}: '::MODEL' names a model in a folder of the authors' files; {p} is not a folder")
    reps = load_annotations(p, max_rank)
    only = bool(reps) and all(a.explainable for anns in reps for a in anns)
    return ReplayLabels(reps, (str(p),), "", only)
