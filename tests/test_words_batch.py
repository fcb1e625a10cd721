"""The candidates' tokens in one batch equal ``tokenizer.tokenize`` one word at a time, on real fast
tokenizers trained here (byte-level BPE as GPT-2/Qwen2, Metaspace BPE as Llama/SentencePiece, a
word-level vocabulary with <unk>) and on a slow one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from shiftcheck.probes import words
from tests.builders import word_tokenizer

CORPUS = ["the cat sat on the mat", "summarize the following text", "don't translate naïve café",
          "write a poem about 日本", "<|im_end|> is a special token", "12 + 30 = 42", "x_y = f(z)"] * 20


def _bpe(pre, decoder) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer, core.decoder = pre, decoder
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=["<|im_end|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
                                                         if isinstance(pre, pre_tokenizers.ByteLevel) else []))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>")


TOKENIZERS = {
    "byte-level": lambda: _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()),
    "metaspace": lambda: _bpe(pre_tokenizers.Metaspace(), decoders.Metaspace()),
    "word-level": lambda: word_tokenizer(),
}
WORDS = st.text(st.sampled_from(list("catsmheo ïé日本<>|_'+=12\n")), max_size=12)


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
@settings(max_examples=40, deadline=None)
@given(texts=st.lists(WORDS, max_size=20))
def test_one_batch_equals_tokenize_one_text_at_a_time(kind, texts):
    tok = TOKENIZERS[kind]()
    assert tok.is_fast
    texts = [" " + t for t in texts] + [" <|im_end|>", " cat"]
    assert words.tokenize_each(tok, texts) == [tok.tokenize(t) for t in texts]


def test_word_ids_match_the_one_word_path_on_a_trained_tokenizer():
    tok = TOKENIZERS["metaspace"]()
    cand = ["cat", "summarize", "naïve", "日本", "<|im_end|>", "", "zzzq"]
    got = words.word_token_ids(tok, cand)
    for w, ids in zip(cand, got.ids):
        pieces = tok.tokenize(" " + w)
        pieces = pieces[1:] if pieces and pieces[0] in words.SPACE_MARKERS else pieces
        assert ids == tuple(tok.convert_tokens_to_ids(pieces))


def test_a_slow_tokenizer_is_asked_one_text_at_a_time():
    class Slow:  # not ``is_fast``: no batch encoding to call
        def tokenize(self, text):
            return list(text.strip())

    assert words.tokenize_each(Slow(), [" ab", " c"]) == [["a", "b"], ["c"]]
    assert words.tokenize_each(Slow(), []) == []
