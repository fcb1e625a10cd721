"""The authors' attention-pair TSV (METHODS §6): export from a probe run and replay without a model.

Header ``Model Size Layer Type Head Dim Rank Score TopK``; Type ``QK``; one row per neuron; TopK
holds the neuron's kept pairs as ``key=query`` joined by ``|||``, with the authors' text escaping
(newline ``/n``, tab ``/t``). The format is not always reversible (PROBE_NOTES): a word may
contain ``=``, and the word ``|`` next to a separator gives ``||||``. Parse rule: split TopK at
each ``|||`` from the left (so ``a=b||||=c`` gives ``a=b`` and ``|=c``), then split a pair at the
first ``=`` that leaves both sides non-empty (``==x`` is ``=`` and ``x``). Head-level lists are
counted from these neuron lists (§2.5), never from a word count of the raw text.

The authors' released file (``results/bilinear_interpret/bilinear_words_split.tsv*`` in
JacksonWuxs/Interpret_Instruction_Tuning_LLMs) is one file holding several models (``Model`` is
``llama`` or ``vicuna``, written by ``src/run_bilinear_explain.py`` appending to one TSV with one
header), cut into byte parts by ``split``: a part may end inside a row or a UTF-8 character, so parts
are concatenated as bytes, in name order, before any line is read. ``--replay-pairs-base
PATH::MODEL`` selects one model; PATH may be the file or the common prefix of its parts.
Like the authors' reader (``utils.read_rawfile``), rows without exactly 9 tab-separated columns and
repeated header rows are skipped.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from shiftcheck.probes.attention.pairs import NeuronPairs
from shiftcheck.probes.attention.probe import AttentionResult

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


MODEL_SEP = "::"


def parse_replay_spec(spec: str | Path) -> tuple[Path, str | None]:
    """``PATH`` or ``PATH::MODEL`` (the model inside a multi-model file)."""
    text = str(spec)
    if MODEL_SEP in text:
        path, model = text.rsplit(MODEL_SEP, 1)
        if model:
            return Path(path), model
    return Path(text), None


def pair_parts(path: str | Path) -> list[Path]:
    """The file itself, or, when ``path`` is no file, the byte-split parts ``PATH*`` in name order
    (``split``'s suffixes aa, ab, ... sort like the bytes they hold)."""
    path = Path(path)
    if path.is_file():
        return [path]
    parts = sorted(p for p in path.parent.glob(glob_escape(path.name) + "*") if p.is_file())
    if not parts:
        raise PairsFormatError(f"pairs TSV not found: {path} (neither a file nor the prefix of split parts)")
    return parts


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def iter_lines(parts: Sequence[str | Path], chunk: int = 1 << 20) -> Iterator[str]:
    """The lines of the parts' concatenated bytes (without the newline), decoded once whole."""
    buf = b""
    for part in parts:
        with Path(part).open("rb") as fh:
            while block := fh.read(chunk):
                lines = (buf + block).split(b"\n")
                buf = lines.pop()
                for line in lines:
                    yield line.decode("utf-8").rstrip("\r")
    if buf:
        yield buf.decode("utf-8").rstrip("\r")


def _rows(parts: Sequence[Path], where: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, 9 columns) of every data row; checks the first line is the header."""
    lines = iter_lines(parts)
    header = next(lines, "").split("\t")
    if tuple(header[: len(HEADER)]) != HEADER:
        raise PairsFormatError(f"{where}: header {header} is not {list(HEADER)}")
    for n, line in enumerate(lines, 2):
        cols = line.split("\t")
        if len(cols) != len(HEADER) or cols[0] == "Model":
            continue  # blank, broken (the authors' reader skips these too) or a repeated header
        yield n, cols


def models_in(path: str | Path) -> list[str]:
    """The distinct ``Model`` values of a pairs file (or its parts), in order of appearance."""
    parts = pair_parts(path)
    return list(dict.fromkeys(cols[0] for _, cols in _rows(parts, str(path))))


def split_by_model(parts: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Concatenate byte-split parts (in the order given) and write one authors'-format TSV per
    ``Model`` value to ``out_dir/<model>.tsv``; returns {model: path}. Streams: the authors' file is
    too large to hold in memory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [Path(p) for p in parts]
    handles: dict[str, object] = {}
    paths: dict[str, Path] = {}
    try:
        for _, cols in _rows(parts, str(parts[0]) if parts else "no parts"):
            model = cols[0]
            if model not in handles:
                paths[model] = out_dir / (re.sub(r"[^A-Za-z0-9._-]", "_", model) + ".tsv")
                handles[model] = paths[model].open("w", encoding="utf-8", newline="")
                handles[model].write("\t".join(HEADER) + "\n")
            handles[model].write("\t".join(cols) + "\n")
    finally:
        for fh in handles.values():
            fh.close()
    return paths


def read_pairs_tsv(path: str | Path | Sequence[str | Path], label: str, min_count: int = 2,
                   model: str | None = None) -> AttentionResult:
    """Head-level pair lists (§2.5) of one model from the authors' TSV: a file, the prefix of its
    byte-split parts, or a list of parts. ``model`` selects the ``Model`` rows; it is required when
    the file holds more than one model."""
    parts = [Path(p) for p in path] if isinstance(path, (list, tuple)) else pair_parts(path)
    where = str(path if not isinstance(path, (list, tuple)) else parts[0])
    counts: dict[str, dict[tuple[int, int], Counter]] = {}
    for n, cols in _rows(parts, where):
        if cols[3] != "QK":
            raise PairsFormatError(f"{where}:{n}: expected Type QK, got {cols[3]!r}")
        if model is not None and cols[0] != model:
            continue
        try:
            key = (int(float(cols[2])), int(float(cols[4])))
        except ValueError:
            raise PairsFormatError(f"{where}:{n}: Layer/Head {cols[2]!r}/{cols[4]!r} are not integers") from None
        counter = counts.setdefault(cols[0], {}).setdefault(key, Counter())
        for raw in cols[8].split("|||") if cols[8] else []:
            pair = split_pair(unescape(raw))
            if pair is not None:
                a, b = sorted((pair[0].lower(), pair[1].lower()))
                counter[(a, b)] += 1
    if model is not None and model not in counts:
        raise PairsFormatError(f"{where}: no rows with Model {model!r}")
    if len(counts) > 1:
        raise PairsFormatError(f"{where} holds models {sorted(counts)}: choose one with {where}{MODEL_SEP}MODEL")
    heads = next(iter(counts.values()), {})
    vocab: dict[str, int] = {}
    pairs = {}
    for key, counter in heads.items():
        kept = [(vocab.setdefault(a, len(vocab)), vocab.setdefault(b, len(vocab)))
                for (a, b), c in sorted(counter.items()) if c >= min_count]
        pairs[key] = np.array(kept, dtype=np.int64).reshape(-1, 2)
    n_layers = 1 + max((k[0] for k in heads), default=-1)
    n_heads = 1 + max((k[1] for k in heads), default=-1)
    return AttentionResult(label, n_layers, n_heads, tuple(vocab), 0, pairs, {})


def read_replay(spec: str | Path, label: str, min_count: int = 2) -> AttentionResult:
    """``--replay-pairs-base/--replay-pairs-tuned``: ``PATH`` or ``PATH::MODEL`` (see the module doc)."""
    path, model = parse_replay_spec(spec)
    return read_pairs_tsv(path, label, min_count, model)
