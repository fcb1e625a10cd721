"""Word-level fast tokenizer of the miniature world.

One token per whitespace- or punctuation-separated word (``tokenizers`` WordLevel model with the
``Whitespace`` pre-tokenizer), so the offset mapping gives each token its word's character range and
an instruction character span maps to exactly its words. A ``TemplateProcessing`` post-processor
prepends BOS: ``tok(text).input_ids`` starts with BOS and ``add_special_tokens=False`` gives none,
like a Llama tokenizer.

WORLD_NOTES.md: with transformers 5.x a word-level tokenizer saved beside a Llama config reloads
through ``AutoTokenizer`` with the same ids (a Qwen2 config does not); :func:`check_round_trip`
verifies this after saving.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from shiftcheck.probes.world.corpus import SPECIAL_TOKENS

UNK, BOS, EOS, PAD = SPECIAL_TOKENS


class TokenizerRoundTripError(RuntimeError):
    """A saved tokenizer reloads with different ids than the one that was saved."""


def build_tokenizer(vocab: list[str]) -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer over ``vocab`` (ids = list positions; specials first)."""
    if list(vocab[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
        raise ValueError(f"vocab must start with the special tokens {SPECIAL_TOKENS}, got {vocab[:4]}")
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab has duplicate words")
    ids = {word: i for i, word in enumerate(vocab)}
    core = Tokenizer(models.WordLevel(vocab=ids, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, ids[BOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        padding_side="left",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def encode_words(vocab_ids: dict[str, int], words: list[str]) -> list[int]:
    """Ids of already split words, without BOS; the fast path used to build training batches."""
    try:
        return [vocab_ids[w] for w in words]
    except KeyError as exc:
        raise ValueError(f"word {exc.args[0]!r} is not in the world vocabulary") from exc


def check_round_trip(saved_dir: Path, original: PreTrainedTokenizerFast, probe_texts: list[str]) -> None:
    """Reload ``saved_dir`` through ``AutoTokenizer`` and require identical ids and offsets.

    Raises :class:`TokenizerRoundTripError` naming the first text whose ids differ.
    """
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(saved_dir)
    for text in probe_texts:
        a = original(text, return_offsets_mapping=True)
        b = reloaded(text, return_offsets_mapping=True)
        if a["input_ids"] != b["input_ids"] or a["offset_mapping"] != b["offset_mapping"]:
            raise TokenizerRoundTripError(
                f"tokenizer saved in {saved_dir} reloads as {type(reloaded).__name__} with different ids "
                f"for {text!r}: saved {a['input_ids']}, reloaded {b['input_ids']}. "
                "Save the tokenizer beside a Llama config (WORLD_NOTES.md: Qwen2 configs rebuild it)."
            )
