"""One parse of a GGUF file's metadata per checkpoint.

transformers parses a GGUF file with ``gguf.GGUFReader`` each time it builds the config, the
tokenizer's config and the weights. The reader makes a numpy view per metadata value, which takes
5-10 CPU s on SmolLM2's 49k-token vocabulary, so one checkpoint cost three such parses. While
loading the weights it also rebuilds ``gguf``'s tensor-name map once per submodule (397 times,
about 10 s). :class:`GgufParse` keeps the first parse of a file and the parsed metadata, and
:func:`parsed_once` hands them to transformers' later calls. The name map is a pure function of
(architecture, block count), so it is computed once per load.

These are patches of two module attributes that transformers looks up at call time
(``gguf.GGUFReader``, ``gguf.get_tensor_name_map``) and of
``transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint``. They last only for the
``with`` block and are undone on exit. A transformers that stops using them still loads correctly,
only without the saving.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(eq=False)
class GgufParse:
    """The parse of one GGUF file, shared between inspecting and loading the checkpoint.

    Call :meth:`release` once the weights are loaded: the reader holds about 140 MB of views for a
    49k-token vocabulary. ``metadata`` lives for one :func:`parsed_once` block."""

    file: Path
    reader: Any = field(default=None, repr=False)
    metadata: dict[str, Any] | None = field(default=None, repr=False)  # load_gguf_checkpoint(file)

    def is_file(self, path: str | os.PathLike[str]) -> bool:
        return Path(path).resolve() == self.file.resolve()

    def release(self) -> None:
        self.reader = None
        self.metadata = None


@contextmanager
def parsed_once(parse: GgufParse) -> Iterator[None]:
    """While active, transformers' GGUF calls on ``parse.file`` share one reader and one metadata
    parse (returned as a copy: callers edit the dicts they get). The metadata is dropped on exit
    (config and tokenizer are built inside one block); the reader stays for the weights."""
    try:
        import gguf
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # transformers' own load then says what to install
        yield
        return
    real_reader, real_map = gguf.GGUFReader, gguf.get_tensor_name_map
    real_load = gguf_utils.load_gguf_checkpoint

    def reader(path: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not parse.is_file(path):
            return real_reader(path, *args, **kwargs)
        if parse.reader is None:
            parse.reader = real_reader(path)
        return parse.reader

    def load_metadata(path: Any, return_tensors: bool = False, **kwargs: Any) -> Any:
        if return_tensors or kwargs or not parse.is_file(path):
            return real_load(path, return_tensors, **kwargs)
        if parse.metadata is None:
            parse.metadata = real_load(path)
        return copy.deepcopy(parse.metadata)

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(real_map)
    gguf_utils.load_gguf_checkpoint = load_metadata
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_map
        gguf_utils.load_gguf_checkpoint = real_load
        parse.metadata = None
