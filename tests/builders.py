"""Tiny random checkpoints for tests: built in memory, saved with safetensors, never downloaded.

* :func:`word_tokenizer` - a word-level fast tokenizer (specials ``<unk> <s> </s> <pad>`` = ids
  0..3, then the words), which prepends ``<s>`` like a Llama tokenizer.
* :func:`tiny_model` - an in-memory tiny causal LM of one family with randomised norm gains and
  biases (HF initialises gains to 1 and biases to 0, which would hide orientation bugs).
* :func:`save_checkpoint`, :func:`tiny_llama`, :func:`tiny_gpt2` - the same, saved to a folder.

Every builder is seeded and leaves the global torch RNG untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
DEFAULT_WORDS: tuple[str, ...] = tuple(
    "the a an sea cat dog house tree river city write summarize translate list explain describe "
    "answer question short long poem story red blue green fast slow happy sad . , : ?".split()
)

# family -> (config class, model class, extra config fields); hidden 32, 2 layers, 4 q heads
_LLAMA_SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
FAMILIES: dict[str, tuple[type, type, dict[str, Any]]] = {
    "llama": (LlamaConfig, LlamaForCausalLM, dict(_LLAMA_SHAPE)),
    "mistral": (MistralConfig, MistralForCausalLM, dict(_LLAMA_SHAPE)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(_LLAMA_SHAPE)),
    # Gemma's head_dim is independent of hidden_size / heads: use 16 so that a wrong d_head shows.
    "gemma": (GemmaConfig, GemmaForCausalLM, dict(_LLAMA_SHAPE, head_dim=16)),
    "gpt2": (GPT2Config, GPT2LMHeadModel, dict(n_embd=32, n_layer=2, n_head=4, n_positions=64)),
}


def word_tokenizer(words: Sequence[str] = DEFAULT_WORDS) -> PreTrainedTokenizerFast:
    """Word-level fast tokenizer: ids 0..3 are ``<unk> <s> </s> <pad>``, then ``words`` in order."""
    vocab = {token: i for i, token in enumerate([*SPECIALS, *words])}
    if len(vocab) != len(SPECIALS) + len(words):
        raise ValueError("words must be unique and must not repeat the special tokens")
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )


def _randomise_small_params(model: PreTrainedModel, generator: torch.Generator) -> None:
    """Give every 1-d parameter (norm gains, biases) random values so they cannot hide bugs."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim != 1:
                continue
            noise = torch.randn(param.shape, generator=generator) * 0.3
            is_gain = name.endswith("weight")  # norm weights; biases end with "bias"
            gemma_style = isinstance(model, GemmaForCausalLM)  # gain = 1 + weight
            param.copy_(noise + (1.0 if is_gain and not gemma_style else 0.0))


def tiny_model(
    family: str = "llama",
    *,
    vocab_size: int = len(SPECIALS) + len(DEFAULT_WORDS),
    gqa: bool = True,
    seed: int = 0,
    tie_word_embeddings: bool | None = None,
    **config_overrides: Any,
) -> PreTrainedModel:
    """An in-memory random tiny causal LM (``eval()``, float32). ``gqa`` -> 2 kv heads for 4 q heads."""
    config_cls, model_cls, fields = FAMILIES[family]
    fields = dict(fields, vocab_size=vocab_size, **config_overrides)
    if family != "gpt2":
        fields["num_key_value_heads"] = 2 if gqa else fields["num_attention_heads"]
    if tie_word_embeddings is not None:
        fields["tie_word_embeddings"] = tie_word_embeddings
    config = config_cls(bos_token_id=1, eos_token_id=2, pad_token_id=3, **fields)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    generator = torch.Generator().manual_seed(seed + 1)
    _randomise_small_params(model, generator)
    return model.eval()


def save_checkpoint(model: PreTrainedModel, tokenizer: Any, directory: Path) -> Path:
    """Save model (safetensors) and tokenizer into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_llama(
    tmp_path: Path, gqa: bool = True, seed: int = 0, vocab: Sequence[str] = DEFAULT_WORDS, name: str | None = None
) -> Path:
    """Tiny Llama (hidden 32, 2 layers, 4 q heads, 2 kv heads if ``gqa``) + word tokenizer, saved.

    Saved to ``tmp_path / name`` (default ``tiny_llama_seed{seed}``); returns that folder.
    """
    tokenizer = word_tokenizer(vocab)
    model = tiny_model("llama", vocab_size=len(tokenizer), gqa=gqa, seed=seed)
    return save_checkpoint(model, tokenizer, tmp_path / (name or f"tiny_llama_seed{seed}"))


def tiny_gpt2(tmp_path: Path, seed: int = 0, vocab: Sequence[str] = DEFAULT_WORDS, name: str | None = None) -> Path:
    """Tiny GPT-2 (n_embd 32, 2 layers, 4 heads, tied embeddings) + word tokenizer, saved.

    Saved to ``tmp_path / name`` (default ``tiny_gpt2_seed{seed}``); returns that folder.
    """
    tokenizer = word_tokenizer(vocab)
    model = tiny_model("gpt2", vocab_size=len(tokenizer), seed=seed)
    return save_checkpoint(model, tokenizer, tmp_path / (name or f"tiny_gpt2_seed{seed}"))
