"""Tokenizer checks: a checkpoint's tokenizer must give ids the probes can trust.

WORLD_NOTES.md: with transformers 5 a word-level tokenizer saved beside a Qwen2 config reloads as
``Qwen2Tokenizer`` with wrong ids, so a loaded tokenizer is compared with its own saved
``tokenizer.json`` (or, for a GGUF file, with the vocabulary stored in the file; see
:mod:`~probes.models.gguf`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shiftcheck.probes.models.errors import CheckpointError


PROBE_TEXT = "Write a short poem about the sea, then list three facts."


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()


def _vocab_sample_text(raw: Any, n: int = 32) -> str:
    """A text made of up to ``n`` ordinary vocabulary entries spread over the vocabulary.

    Decoded by the ``tokenizers`` library itself, so it consists of known tokens even for a
    word-level vocabulary where the English probe text is all unknown words.
    """
    special = set(raw.get_added_tokens_decoder())
    ids = [i for i in range(raw.get_vocab_size(with_added_tokens=False)) if i not in special]
    step = max(1, len(ids) // n)
    return raw.decode(ids[::step][:n], skip_special_tokens=True)


def check_tokenizer(tokenizer: Any, tokenizer_json: Path | None, origin: str) -> None:
    """Refuse a tokenizer whose ids cannot be trusted (see the module docstring).

    * must be fast (``is_fast``): offset mappings are needed for instruction spans (§1.7);
    * ``convert_tokens_to_ids(tokenize(t)) == tokenizer(t, add_special_tokens=False).input_ids``;
    * where ``tokenizer_json`` exists: same vocabulary and the same ids as
      ``tokenizers.Tokenizer.from_file(tokenizer_json)`` on a probe text and a vocabulary sample;
    * decoding the probe text gives the text back (up to whitespace and case) when no token is unknown.

    ``tokenizer_json=None`` skips the comparison with a saved file: callers without one say so
    explicitly (a GGUF checkpoint is compared with its own vocabulary by
    :func:`~probes.models.gguf.check_gguf_tokenizer` first).
    """
    name = type(tokenizer).__name__
    if not getattr(tokenizer, "is_fast", False):
        raise CheckpointError(
            f"tokenizer of {origin} is a slow tokenizer ({name}); a fast tokenizer is required because the "
            "probes need offset mappings. Provide a tokenizer.json (save a fast tokenizer with save_pretrained)."
        )
    texts = [PROBE_TEXT]
    raw = None
    if tokenizer_json is not None:
        from tokenizers import Tokenizer

        try:
            raw = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:
            raise CheckpointError(f"corrupt tokenizer file {tokenizer_json}: {exc}") from exc
        texts.append(_vocab_sample_text(raw))
        check_same_vocab(tokenizer, raw.get_vocab(with_added_tokens=True), str(tokenizer_json), origin)
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        via_tokens = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
        if list(via_tokens) != list(ids):
            raise CheckpointError(
                f"tokenizer of {origin} ({name}) is inconsistent on {text!r}: tokenize+convert_tokens_to_ids "
                f"gives {via_tokens[:12]} but encoding gives {ids[:12]}"
            )
        if raw is not None:
            expected = raw.encode(text, add_special_tokens=False).ids
            if list(expected) != list(ids):
                raise CheckpointError(
                    f"tokenizer of {origin} does not reproduce its tokenizer.json: AutoTokenizer returned {name}, "
                    f"which encodes {text!r} as {ids[:12]}, but {tokenizer_json} gives {expected[:12]}. "
                    "transformers 5 rebuilds the tokenizer of some model types (e.g. Qwen2) from the vocabulary "
                    "alone (WORLD_NOTES.md), so every probe would use wrong token ids. Save a tokenizer of the "
                    "model family's own class, or a config whose model type keeps tokenizer.json (e.g. Llama)."
                )
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids
    if tokenizer.unk_token_id not in ids:
        decoded = tokenizer.decode(ids)
        if _squash(decoded) != _squash(PROBE_TEXT):
            raise CheckpointError(
                f"tokenizer of {origin} ({name}) does not decode its own ids: {PROBE_TEXT!r} -> {decoded!r}"
            )


def check_same_vocab(tokenizer: Any, saved: dict[str, int], source: str, origin: str) -> None:
    """The loaded tokenizer's vocabulary (token -> id, added tokens included) equals ``saved``,
    read from ``source`` (a tokenizer.json or a GGUF file); else a :class:`CheckpointError` listing
    up to 10 differing tokens with both ids."""
    loaded = tokenizer.get_vocab()
    if loaded == saved:
        return
    differing = [
        f"{tok!r}: loaded={loaded.get(tok)} saved={saved.get(tok)}"
        for tok in sorted(set(loaded) | set(saved), key=lambda t: (saved.get(t, loaded.get(t)), t))
        if loaded.get(tok) != saved.get(tok)
    ]
    raise CheckpointError(
        f"tokenizer of {origin} ({type(tokenizer).__name__}, {len(loaded)} tokens) does not match {source} "
        f"({len(saved)} tokens); {len(differing)} tokens differ, e.g. {'; '.join(differing[:10])}"
    )
