"""A lexical base model for findings 2 and 3: a tiny Llama whose word vectors carry real semantics.

Word-level tokenizer over alphabetic ShareGPT candidates that GloVe knows, plus every instruction
verb and some control verbs; input (and, tied, output) embeddings initialised from GloVe 6B-50d,
projected to ``d_model`` by a seeded random map, so METHODS §2.1/§3.2 word vectors have GloVe
structure. Attention and MLP weights are random (seeded). Nothing is trained: the tests plant
edits with a known truth on top of it (finding 2: W_Q/W_K; finding 3: FFN directions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shiftcheck.probes import words
from shiftcheck.probes.world.tokenizer import build_tokenizer

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")


def lexical_vocab(kv, n_candidates: int = 3000, n_control: int = 500) -> list[str]:
    """Specials, then alphabetic lower-case candidates GloVe knows (in list order), then the
    instruction verbs and the first ``n_control`` control verbs not already present."""
    seen: dict[str, None] = {s: None for s in SPECIALS}
    for w in words.candidate_words().words:
        if len(seen) - len(SPECIALS) >= n_candidates:
            break
        if w.isalpha() and w.islower() and w in kv.key_to_index:
            seen.setdefault(w, None)
    for w in words.instruction_verbs().words:
        seen.setdefault(w, None)
    for w in words.control_verbs().words[:n_control]:
        if w.isalpha():
            seen.setdefault(w, None)
    return list(seen)


def lexical_model(kv, vocab: list[str], d_model: int = 64, n_layers: int = 4, n_heads: int = 4,
                  n_kv_heads: int = 2, d_mlp: int = 128, seed: int = 0):
    """``(model, tokenizer)``: the lexical base, built in memory (float32, eval mode)."""
    tokenizer = build_tokenizer(vocab)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=d_model, intermediate_size=d_mlp,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                         max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).float().eval()
    glove = words.glove_matrix(kv, vocab)  # (n_words, 50), zero rows for specials
    proj = rng.normal(0.0, 1.0 / np.sqrt(glove.shape[1]), size=(glove.shape[1], d_model))
    emb = glove @ proj + rng.normal(0.0, 0.02, size=(len(vocab), d_model))
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.tensor(emb, dtype=torch.float32))
    return model, tokenizer


def save_lexical(model, tokenizer, out: Path) -> Path:
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
