"""Convert the authors' released files into shiftcheck's replay format (no pickle is ever trusted).

Input: a clone of ``JacksonWuxs/Interpret_Instruction_Tuning_LLMs`` (GPL-3.0; our copy was made from
commit 52508a0):

* ``datasets/FinalDataset.tsv``: ``id  prompt  reference  instruction-annotation`` with the authors'
  text escaping (``/n``, ``/t``, quoted fields; METHODS §6);
* ``datasets/AnnotatedDataset.tsv``: ``File Model Prompt Reference Instruct Response Rating``;
* ``results/attribution_interpret/ifa_<model>/<id>.pkl``: one pickled dict per prompt with
  ``Input`` (prompt pieces), ``Output`` (response pieces), ``Explain`` (the N x M matrix).

Output (what ``--replay-base/--replay-tuned`` and ``--ratings`` read): ``prompts.jsonl`` (METHODS §6,
instruction spans expanded to whole prompt sentences as §1.7 describes), ``ratings.tsv`` and
``attribution/<model>.npz`` + ``.jsonl``.

The pickles are read with :class:`RestrictedUnpickler`, which admits numpy arrays, strings, numbers,
lists, tuples and dicts and refuses every other global by name, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# the restricted unpickler

ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "str"), ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"),
    ("builtins", "int"), ("builtins", "float"), ("builtins", "bytes"), ("_codecs", "encode"),
})


class UnsafePickleError(ValueError):
    """A pickle asked for a global outside :data:`ALLOWED_GLOBALS`; the message names it."""


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only what numpy arrays and plain containers need; everything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"refused to unpickle global {module}.{name}: only numpy arrays, strings, "
                                    "numbers, lists, tuples and dicts are admitted")
        return super().find_class(module, name)


def restricted_load(data: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(data)).load()


# ---------------------------------------------------------------------------------------------
# the authors' text conventions (METHODS §6, §1.7)

_SENTENCE = re.compile(r"(?<=[.!?:])\s+")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_ID_SOURCES = (("user_oriented_task_", "self-instruct"), ("lima_author_", "lima"), ("mtbench_", "mt-bench"))


def decode_text(text: str) -> str:
    """The authors' escaping undone: ``/t`` -> tab, ``/n`` -> newline, a wrapping quote pair removed,
    ``""`` -> ``"`` (it also rewrites genuine ``/n`` substrings, as their loader does)."""
    text = text.replace("/t", "\t").replace("/n", "\n")
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        text = text[1:-1]
    return text.replace('""', '"')


def source_of(prompt_id: str) -> str:
    for prefix, source in _ID_SOURCES:
        if prompt_id.startswith(prefix):
            return source
    return re.sub(r"[_-]?\d+$", "", prompt_id)


def instruction_sentences(prompt: str, annotation: str) -> list[str]:
    """§1.7: each annotated fragment, cut into sentences, is mapped to the first prompt sentence that
    contains it (a leading ``Input:`` removed; ``Output:`` is never instruction). An empty piece
    matches the first prompt sentence, the authors' quirk."""
    sentences = [s for line in prompt.split("\n") for s in _SENTENCE.split(line)]
    found: list[str] = []
    for fragment in annotation.split("&&&")[0].replace("\n", "|||").split("|||"):
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
    """``[start, end)`` of the first occurrence of each sentence, in prompt order."""
    spans = sorted({(prompt.index(s), prompt.index(s) + len(s)) for s in sentences if s in prompt})
    return [list(s) for s in spans]


def piece_offsets(pieces: list[str], text: str) -> list[tuple[int, int]] | None:
    """Character ranges of SentencePiece ``pieces`` in ``text`` (``▁`` is a space, ``<0xNN>`` bytes
    are decoded as UTF-8 runs); None when the pieces do not spell ``text``."""
    import codecs

    parts: list[str] = []
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    for piece in pieces:
        byte = _BYTE_PIECE.match(piece)
        if byte:  # a character spans its byte pieces; it belongs to the piece that completes it
            parts.append(decoder.decode(bytes([int(byte.group(1), 16)])))
        else:
            parts.append(decoder.decode(b"", final=True) + piece.replace("▁", " "))
    spelled = "".join(parts)
    lead = len(spelled) - len(spelled.lstrip(" "))
    if spelled[lead:] != text:
        return None
    offsets, pos = [], -lead
    for part in parts:
        offsets.append((max(pos, 0), max(pos + len(part), 0)))
        pos += len(part)
    return offsets


# ---------------------------------------------------------------------------------------------
# conversion


@dataclass(frozen=True)
class ConvertReport:
    prompts: int
    ratings: int
    models: dict[str, int]  # model -> instances converted
    unaligned: dict[str, int]  # model -> instances whose pieces did not spell the prompt (mask all zero)


def read_tsv_rows(path: Path, n_columns: int) -> Iterator[list[str]]:
    with path.open(encoding="utf-8") as fh:
        fh.readline()  # header
        for line in fh:
            if line.strip():
                yield line.rstrip("\n").split("\t")[:n_columns]


def _matrix(explain: Any) -> np.ndarray:
    m = np.asarray(explain)
    if m.ndim != 2:
        raise ValueError(f"Explain has shape {m.shape}, expected (prompt tokens, response tokens)")
    levels = np.issubdtype(m.dtype, np.number) and m.size and np.all(m == np.round(m)) and m.min() >= 0 and m.max() <= 10
    return m.astype(np.uint8) if levels or m.size == 0 else m.astype(np.float32)


def convert(repo: Path, out: Path) -> ConvertReport:
    """Write the replay files for every ``ifa_*`` model folder found under ``repo``."""
    from shiftcheck.probes.importance.tokens import instruction_mask_from_offsets

    repo, out = Path(repo), Path(out)
    (out / "attribution").mkdir(parents=True, exist_ok=True)
    prompts: dict[str, dict] = {}
    for pid, prompt, reference, annotation in read_tsv_rows(repo / "datasets" / "FinalDataset.tsv", 4):
        text = decode_text(prompt)
        spans = instruction_sentences(text, decode_text(annotation))
        prompts[pid] = {"id": pid, "source": source_of(pid), "prompt": text, "reference": decode_text(reference),
                        "instruction_annotation": decode_text(annotation), "instruction_spans": spans,
                        "instruction_char_spans": char_spans(text, spans)}
    with (out / "prompts.jsonl").open("w", encoding="utf-8") as fh:
        for rec in prompts.values():
            fh.write(json.dumps(rec) + "\n")

    n_ratings = 0
    annotated = repo / "datasets" / "AnnotatedDataset.tsv"
    if annotated.is_file():
        with (out / "ratings.tsv").open("w", encoding="utf-8") as fh:
            fh.write("id\tmodel\trating\tlabel\n")
            for row in read_tsv_rows(annotated, 7):
                rating = int(float(row[6])) if row[6].strip().lstrip("-").replace(".", "").isdigit() else -1
                label = "followed" if rating >= 2 else "unfollowed" if rating == 1 else "unrated"
                fh.write(f"{row[0].removesuffix('.pkl')}\t{row[1]}\t{rating}\t{label}\n")
                n_ratings += 1

    models, unaligned = {}, {}
    for folder in sorted((repo / "results" / "attribution_interpret").glob("ifa_*")):
        model = folder.name.removeprefix("ifa_").lower()
        arrays, lines, bad = {}, [], 0
        for pkl in sorted(folder.glob("*.pkl")):
            pid = pkl.stem
            if pid not in prompts:
                continue
            item = restricted_load(pkl.read_bytes())
            pieces = [str(p) for p in item["Input"]]
            output = item.get("Output", [])
            response = [str(p) for p in output] if isinstance(output, (list, tuple)) else []
            matrix = _matrix(item["Explain"])
            offsets = piece_offsets(pieces, prompts[pid]["prompt"].strip())
            if offsets is None:
                mask = np.zeros(len(pieces), dtype=bool)
                bad += 1
            else:
                lead = len(prompts[pid]["prompt"]) - len(prompts[pid]["prompt"].lstrip())
                spans = [(s - lead, e - lead) for s, e in prompts[pid]["instruction_char_spans"]]
                mask = instruction_mask_from_offsets(prompts[pid]["prompt"].strip(), offsets, spans)
            arrays[pid] = matrix
            lines.append({"id": pid, "source": prompts[pid]["source"], "n_prompt_tokens": int(matrix.shape[0]),
                          "n_response_tokens": int(matrix.shape[1]), "prompt_tokens": pieces,
                          "response_tokens": response, "instruction_token_mask": mask.astype(int).tolist()})
        np.savez(out / "attribution" / f"{model}.npz", **arrays)
        with (out / "attribution" / f"{model}.jsonl").open("w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line) + "\n")
        models[model], unaligned[model] = len(lines), bad
    return ConvertReport(len(prompts), n_ratings, models, unaligned)
