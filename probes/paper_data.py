"""Convert the authors' released files into shiftcheck's replay format (no pickle is ever trusted).

Input: a clone of ``JacksonWuxs/Interpret_Instruction_Tuning_LLMs`` (GPL-3.0; our copy was made from
commit 52508a0):

* ``datasets/FinalDataset.tsv``: header ``ID Prompt Response Instruct&Context``, then
  ``id  prompt  reference  annotation`` with the authors' text escaping (``/n``, ``/t``, quoted
  fields; METHODS §6); the annotation is ``instruction fragments &&& context``;
* ``datasets/AnnotatedDataset.tsv``: header ``File Model Prompt Reference Instruct Response Rating``
  (``File`` = ``<id>.pkl``; rating 1..4, -1 = unrated);
* ``datasets/SingleShareGPT_Vocab.tsv``: no header, ``word  relative-frequency``;
* ``results/attribution_interpret/ifa_<model>/<id>.pkl``: one pickled dict per prompt, written by
  their ``run_instruct_following.py``: ``ID`` (str), ``Input`` (prompt pieces, BOS excluded),
  ``Reference`` (str), ``Output`` (response pieces), ``Explain`` (float32 ndarray, N x M levels
  0..10; shape ``(0,)`` when the response is empty).

* ``results/linear_interpret/linear_{task,concept}_seed<s>.tsv`` (finding 3, Table 5; optional):
  explainable components only, both models per file, read by
  :func:`shiftcheck.probes.ffn.annotators.replay.load_authors` (``linear_seed<s>.tsv``, when
  present, adds the unexplainable components);
* ``results/bilinear_interpret/bilinear_words_split.tsv*`` (finding 2, Table 3; optional): byte
  parts of one file holding several models, concatenated and split by
  :func:`shiftcheck.probes.attention.io.split_by_model`.

Output (the layout of ``shared/paper-data``, docs/PAPER_DATA.md): ``prompts.jsonl``,
``ratings.tsv`` + ``ratings.jsonl``, ``attribution/<model>.npz`` + ``.jsonl`` (what
``probes/replay.py`` loads), ``sharegpt_vocab_raw.tsv`` and ``sharegpt_vocab.tsv``; when their
inputs are present, ``ffn/<model>.annotated.tsv`` (``--replay-ffn-base/--replay-ffn-tuned``) and
``pairs/<model>.tsv`` (``--replay-pairs-base/--replay-pairs-tuned``).

The pickles are read with :class:`RestrictedUnpickler`, which admits numpy arrays, strings, numbers,
lists, tuples and dicts and refuses every other global by name, so a hostile file cannot run code.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# the restricted unpickler


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    return {
        # protocol 5 writes arrays as _frombuffer(buffer, dtype, shape, order): a view, no code run
        ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): multiarray.scalar,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


_BUILTINS = {("builtins", n): getattr(__import__("builtins"), n)
             for n in ("str", "list", "dict", "tuple", "int", "float", "bytes")}
# protocol 0-2 pickles spell bytes as _codecs.encode(str, "latin1"): pure, no side effect.
_BUILTINS[("_codecs", "encode")] = __import__("_codecs").encode
ALLOWED_GLOBALS = frozenset(set(_BUILTINS) | set(_numpy_globals()))


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside :data:`ALLOWED_GLOBALS`; the message names it."""


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only what numpy arrays and plain containers need; everything else is refused.

    Admitted globals are resolved from a fixed table (nothing is imported on the pickle's say-so);
    ``persistent_load`` keeps the default, which refuses persistent ids.
    """

    _table: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._table is None:
            RestrictedUnpickler._table = {**_BUILTINS, **_numpy_globals()}
        key = (module, name)
        # Python 2 names (``__builtin__.bytes`` in protocol 0-2), mapped as pickle's fix_imports does
        key = _compat_pickle.NAME_MAPPING.get(key, key)
        key = (_compat_pickle.IMPORT_MAPPING.get(key[0], key[0]), key[1])
        try:
            return RestrictedUnpickler._table[key]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle global {module}.{name}: only numpy arrays, strings, numbers, "
                "lists, tuples and dicts are admitted") from None


def restricted_load(data: bytes) -> Any:
    """``pickle.loads`` for untrusted bytes: only :data:`ALLOWED_GLOBALS` may be referenced."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


# ---------------------------------------------------------------------------------------------
# the authors' text conventions (METHODS §6, §1.7)

_SENTENCE = re.compile(r"(?<=[.!?:])\s+")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_ID_SOURCES = (("user_oriented_task_", "self-instruct"), ("lima_author_", "lima"), ("lima_", "lima"),
               ("mtbench_", "mt-bench"))
EDGE_PIECES = frozenset({"\u2581", "<0x0A>", '\u2581"'})  # dropped at span edges by the authors


class PaperDataError(ValueError):
    """The authors' files are missing or do not look like their release."""


def decode_text(text: str) -> str:
    """The authors' ``utils.decode``: ``/t`` -> tab, ``/n`` -> newline, a wrapping quote pair
    removed, ``""`` -> ``"`` (it also rewrites genuine ``/n`` substrings, as their loader does)."""
    text = text.replace("/t", "\t").replace("/n", "\n")
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1]
    return text.replace('""', '"')


def source_of(prompt_id: str) -> str:
    for prefix, source in _ID_SOURCES:
        if prompt_id.startswith(prefix):
            return source
    return re.sub(r"[_-]?\d+$", "", prompt_id)


def subset_of(prompt_id: str) -> str:
    """MT-Bench category from ``mtbench_<category>_<n>``; empty for the other sources."""
    m = re.fullmatch(r"mtbench_(.+)_\d+", prompt_id)
    return m.group(1) if m else ""


def split_annotation(annotation: str) -> tuple[str, str]:
    """``instruction fragments &&& context`` -> (instruction part, context part)."""
    inst, _, context = annotation.partition("&&&")
    return inst, context


def instruction_sentences(prompt: str, annotation: str) -> list[str]:
    """§1.7 (their ``utils.annotate``): each annotated fragment, cut into sentences, is mapped to the
    first prompt sentence that contains it (a leading ``Input:`` removed; ``Output:`` is never
    instruction). An empty piece matches the first prompt sentence, the authors' quirk. Returned in
    order of discovery, without duplicates."""
    sentences = [s for line in prompt.split("\n") for s in _SENTENCE.split(line)]
    found: list[str] = []
    for fragment in split_annotation(annotation)[0].replace("\n", "|||").split("|||"):
        for piece in _SENTENCE.split(fragment):
            match = next((s for s in sentences if piece in s), None)
            if match is None:
                continue
            if match.startswith("Input:"):
                match = match[6:].strip()
            if match and match != "Output:" and match not in found:
                found.append(match)
    return found


def char_spans(prompt: str, sentences: list[str]) -> list[list[int]]:
    """``[start, end)`` of the first occurrence of each sentence, in the order given, narrowed to
    exclude whitespace at its two ends (a fragment like ``" on Overleaf."`` keeps its space in
    ``instruction_spans`` but not in its offsets)."""
    spans = []
    for sentence in sentences:
        if not sentence.strip() or sentence not in prompt:
            continue
        start = prompt.index(sentence)
        end = start + len(sentence)
        start += len(sentence) - len(sentence.lstrip())
        end -= len(sentence) - len(sentence.rstrip())
        spans.append([start, end])
    return spans


def piece_offsets(pieces: list[str], text: str) -> list[tuple[int, int]] | None:
    """Character ranges of SentencePiece ``pieces`` in ``text``; None when they do not spell it.

    ``▁`` is a space (the word-initial ``▁`` belongs to its token, so a range may start at the
    preceding space; the dummy-prefix ``▁`` of the first piece has no character). ``<0xNN>`` pieces
    are UTF-8 bytes; every byte piece of a multi-byte character gets that character's range.
    """
    chunks = []
    for piece in pieces:
        byte = _BYTE_PIECE.match(piece)
        chunks.append(bytes([int(byte.group(1), 16)]) if byte else piece.replace("\u2581", " ").encode("utf-8"))
    raw = b"".join(chunks)
    try:
        spelled = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lead = len(spelled) - len(spelled.lstrip(" "))
    if spelled[lead:] != text:
        return None
    char_of_byte = np.empty(len(raw) + 1, dtype=np.int64)
    pos = 0
    for i, ch in enumerate(spelled):
        n = len(ch.encode("utf-8"))
        char_of_byte[pos:pos + n] = i
        pos += n
    char_of_byte[pos] = len(spelled)
    offsets, b = [], 0
    for chunk in chunks:
        if chunk:
            s, e = int(char_of_byte[b]), int(char_of_byte[b + len(chunk) - 1]) + 1
        else:
            s = e = int(char_of_byte[b])
        offsets.append((max(s - lead, 0), max(e - lead, 0)))
        b += len(chunk)
    return offsets


def instruction_mask(pieces: list[str], offsets: list[tuple[int, int]], spans) -> np.ndarray:
    """§1.7: a piece is instruction iff its character range overlaps a span; the authors' edge
    pieces (``▁``, ``<0x0A>``, ``▁"``) are dropped at each span's two ends."""
    mask = np.zeros(len(pieces), dtype=bool)
    for start, end in spans:
        hit = [n for n, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
        while hit and pieces[hit[0]] in EDGE_PIECES:
            hit.pop(0)
        while hit and pieces[hit[-1]] in EDGE_PIECES:
            hit.pop()
        if hit:
            mask[hit[0]:hit[-1] + 1] = True
    return mask


# ---------------------------------------------------------------------------------------------
# readers


def read_tsv_rows(path: Path, n_columns: int) -> Iterator[tuple[int, list[str]]]:
    """Rows after the header as (line number, fields); blank lines skipped, width checked."""
    if not path.is_file():
        raise PaperDataError(f"missing {path} (is this a clone of JacksonWuxs/Interpret_Instruction_Tuning_LLMs?)")
    with path.open(encoding="utf-8", newline="\n") as fh:
        fh.readline()
        for lineno, line in enumerate(fh, 2):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < n_columns:
                raise PaperDataError(f"{path}:{lineno}: {len(fields)} tab-separated fields, expected {n_columns}")
            yield lineno, fields[:n_columns]


def read_prompts(repo: Path) -> list[dict]:
    records = []
    for _, (pid, prompt, reference, annotation) in read_tsv_rows(repo / "datasets" / "FinalDataset.tsv", 4):
        text, note = decode_text(prompt), decode_text(annotation)
        spans = instruction_sentences(text, note)
        inst, context = split_annotation(note)
        records.append({"id": pid, "source": source_of(pid), "subset": subset_of(pid), "prompt": text,
                        "reference": decode_text(reference), "instruction_annotation": inst,
                        "context_annotation": context, "instruction_spans": spans,
                        "instruction_char_spans": char_spans(text, spans)})
    return records


def read_ratings(repo: Path) -> list[dict]:
    path = repo / "datasets" / "AnnotatedDataset.tsv"
    rows = []
    for lineno, (file, model, _p, _r, instruct, response, rating) in read_tsv_rows(path, 7):
        try:
            value = int(float(rating))
        except ValueError as exc:
            raise PaperDataError(f"{path}:{lineno}: rating {rating!r} is not a number") from exc
        pid = file.removesuffix(".pkl")
        label = "followed" if value >= 2 else "unfollowed" if value == 1 else "unrated"
        rows.append({"id": pid, "source": source_of(pid), "model": model, "rating": value, "label": label,
                     "response": decode_text(response), "alt_instruction_annotation": decode_text(instruct)})
    return rows


def read_vocab(repo: Path) -> list[tuple[str, float]]:
    """``SingleShareGPT_Vocab.tsv`` as (word, frequency) in file order (no header)."""
    path = repo / "datasets" / "SingleShareGPT_Vocab.tsv"
    if not path.is_file():
        raise PaperDataError(f"missing {path}")
    rows = []
    with path.open(encoding="utf-8", newline="\n") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2:
                continue
            try:
                rows.append((fields[0], float(fields[1])))
            except ValueError:
                continue
    return rows


def merge_case(vocab: list[tuple[str, float]]) -> list[tuple[str, float, int]]:
    """METHODS §4 (their ``load_wiki_words``): a word whose lower/upper/capitalised form was seen
    earlier is folded into that form. Returns (word, summed frequency, first raw rank)."""
    merged: dict[str, list] = {}
    for rank, (word, freq) in enumerate(vocab, 1):
        for key in (str.lower, str.upper, str.capitalize):
            if key(word) in merged:
                word = key(word)
                break
        entry = merged.setdefault(word, [0.0, rank])
        entry[0] += freq
    return [(w, f, r) for w, (f, r) in merged.items()]


def read_attribution(path: Path) -> dict:
    """One ``ifa_*/<id>.pkl`` through the restricted unpickler, checked for the authors' keys."""
    try:
        item = restricted_load(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise PaperDataError(f"{path}: {exc}") from exc
    if not isinstance(item, dict) or not {"Input", "Output", "Explain"} <= set(item):
        raise PaperDataError(f"{path}: expected a dict with Input, Output, Explain")
    return item


def attribution_matrix(explain: Any, n_prompt: int, n_response: int, where: str) -> np.ndarray:
    """``Explain`` as uint8 levels (float32 if it is not 0..10 integers). An empty response is
    stored by the authors as shape ``(0,)``; it becomes ``(n_prompt, 0)``."""
    m = np.asarray(explain)
    if m.size == 0:
        return np.zeros((n_prompt, 0), dtype=np.uint8)
    if m.shape != (n_prompt, n_response):
        raise PaperDataError(f"{where}: Explain has shape {m.shape}, expected ({n_prompt}, {n_response})")
    if np.all(np.isfinite(m)) and np.all(m == np.round(m)) and m.min() >= 0 and m.max() <= 10:
        return m.astype(np.uint8)
    return m.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# conversion


@dataclass(frozen=True)
class ConvertReport:
    prompts: int
    ratings: int
    vocab: int
    models: dict[str, int] = field(default_factory=dict)  # model -> instances converted
    unaligned: dict[str, list[str]] = field(default_factory=dict)  # ids whose pieces did not spell the prompt
    ffn: dict[str, dict] = field(default_factory=dict)  # model -> {path, repetitions, rows, explainable_only, skipped}
    pairs: dict[str, str] = field(default_factory=dict)  # model -> path of its pairs TSV


def convert_ffn(repo: Path, out: Path) -> dict[str, dict]:
    """Finding 3's annotated files (Table 5) -> ``out/ffn/<model>.annotated.tsv`` (seeds as the
    ``Seed`` column, every rank kept: the replay applies ``--ffn-components``)."""
    from shiftcheck.probes.ffn.annotators.replay import authors_files, authors_models, load_authors, write_annotations

    folder = repo / "results" / "linear_interpret"
    if not folder.is_dir() or not any("task" in k or "concept" in k for k in authors_files(folder).values()):
        return {}
    done = {}
    for model in authors_models(folder):
        labels = load_authors(folder, model, max_rank=10**9)
        (out / "ffn").mkdir(parents=True, exist_ok=True)
        path = write_annotations(labels.repetitions, out / "ffn" / f"{_safe(model)}.annotated.tsv", model)
        done[model] = {"path": str(path), "repetitions": len(labels.repetitions),
                       "rows": sum(len(r) for r in labels.repetitions), "explainable_only": labels.explainable_only,
                       "skipped": labels.skipped_rows}
    return done


def convert_pairs(repo: Path, out: Path) -> dict[str, str]:
    """Finding 2's pairs (Table 3): the byte parts concatenated, one ``out/pairs/<model>.tsv`` each."""
    from shiftcheck.probes.attention.io import split_by_model

    parts = sorted((repo / "results" / "bilinear_interpret").glob("bilinear_words_split.tsv*"))
    if not parts:
        return {}
    return {m: str(p) for m, p in split_by_model(parts, out / "pairs").items()}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def convert(repo: Path, out: Path) -> ConvertReport:
    """Write the replay files for the release cloned at ``repo`` into ``out``."""
    repo, out = Path(repo), Path(out)
    prompts = read_prompts(repo)
    ratings = read_ratings(repo)
    vocab = read_vocab(repo)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "prompts.jsonl").open("w", encoding="utf-8") as fh:
        for rec in prompts:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with (out / "ratings.tsv").open("w", encoding="utf-8") as tsv, \
            (out / "ratings.jsonl").open("w", encoding="utf-8") as jl:
        tsv.write("id\tsource\tmodel\trating\tlabel\n")
        for r in ratings:
            tsv.write(f"{r['id']}\t{r['source']}\t{r['model']}\t{r['rating']}\t{r['label']}\n")
            jl.write(json.dumps(r, ensure_ascii=False) + "\n")
    with (out / "sharegpt_vocab_raw.tsv").open("w", encoding="utf-8") as fh:
        fh.write("raw_rank\tword\tfrequency\n")
        for rank, (word, freq) in enumerate(vocab, 1):
            fh.write(f"{rank}\t{word}\t{freq!r}\n")
    with (out / "sharegpt_vocab.tsv").open("w", encoding="utf-8") as fh:
        fh.write("rank\tword\tfrequency\tfirst_raw_rank\n")
        for rank, (word, freq, first) in enumerate(merge_case(vocab), 1):
            fh.write(f"{rank}\t{word}\t{freq:.10g}\t{first}\n")

    models, unaligned = {}, {}
    root = repo / "results" / "attribution_interpret"
    for folder in sorted(p for p in root.glob("ifa_*") if p.is_dir()):
        model = folder.name.removeprefix("ifa_").lower()
        arrays, lines, bad = {}, [], []
        for rec in prompts:
            pkl = folder / f"{rec['id']}.pkl"
            if not pkl.is_file():
                continue
            item = read_attribution(pkl)
            pieces = [str(p) for p in item["Input"]]
            response = [str(p) for p in item["Output"]]
            matrix = attribution_matrix(item["Explain"], len(pieces), len(response), str(pkl))
            text = rec["prompt"].strip()
            lead = len(rec["prompt"]) - len(rec["prompt"].lstrip())
            offsets = piece_offsets(pieces, text)
            if offsets is None:
                mask = np.zeros(len(pieces), dtype=bool)
                bad.append(rec["id"])
            else:
                spans = [(s - lead, e - lead) for s, e in rec["instruction_char_spans"]]
                mask = instruction_mask(pieces, offsets, spans)
            arrays[rec["id"]] = matrix
            lines.append({"id": rec["id"], "source": rec["source"], "n_prompt_tokens": int(matrix.shape[0]),
                          "n_response_tokens": int(matrix.shape[1]), "prompt_tokens": pieces,
                          "response_tokens": response, "instruction_token_mask": mask.astype(int).tolist()})
        if not lines:
            continue
        (out / "attribution").mkdir(exist_ok=True)
        np.savez_compressed(out / "attribution" / f"{model}.npz", **arrays)
        with (out / "attribution" / f"{model}.jsonl").open("w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        models[model], unaligned[model] = len(lines), bad
    if not models:
        raise PaperDataError(f"no attribution pickles under {root}/ifa_*/ matched a prompt id")
    try:
        ffn = convert_ffn(repo, out)
    except ValueError as exc:  # FfnError: a file not in the authors' format, named in the message
        raise PaperDataError(f"results/linear_interpret: {exc}") from exc
    try:
        pairs = convert_pairs(repo, out)
    except ValueError as exc:  # PairsFormatError
        raise PaperDataError(f"results/bilinear_interpret: {exc}") from exc
    return ConvertReport(len(prompts), len(ratings), len(vocab), models, unaligned, ffn, pairs)
