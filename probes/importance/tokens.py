"""Token bookkeeping of probe 1 (METHODS §1.2, §1.7): prompt encoding, instruction mask, the
attributed sequence ``[BOS] + P + R``.

Axis vocabulary: ``prompt_len`` (N), ``resp_len`` (M), ``seq_len`` (BOS + N + M), ``d_model`` (D).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shiftcheck.probes.importance.errors import AttributionError
from shiftcheck.probes.prompts import Prompt

# ---------------------------------------------------------------------------------------------
# Token bookkeeping (§1.2, §1.7)


@dataclass(frozen=True)
class PromptEncoding:
    """Token ids of one prompt and which of them are instruction tokens.

    ``prefix_ids`` are never attributed (BOS). ``prompt_ids`` are the N attributed prompt tokens;
    with a chat template they include the template tokens, which are never instruction tokens.
    """

    prefix_ids: tuple[int, ...]
    prompt_ids: tuple[int, ...]
    prompt_tokens: tuple[str, ...]
    instruction_mask: np.ndarray  # (prompt_len,) bool
    text: str  # the text whose tokens are prompt_ids


def adds_bos(tokenizer) -> bool:
    """True when the tokenizer prepends BOS by itself (LLaMA style); GPT-2 style returns False."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True).input_ids
    return len(ids) > 0 and ids[0] == bos


def instruction_mask_from_offsets(
    text: str, offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> np.ndarray:
    """§1.7: token n is an instruction token iff its character range overlaps a span.

    Whitespace-only pieces (``▁``, ``<0x0A>``) at span edges are never marked. With SentencePiece
    the word-initial ``▁`` belongs to the token, so a range may start at the preceding space; the
    overlap rule handles that.
    """
    mask = np.zeros(len(offsets), dtype=bool)
    for n, (s, e) in enumerate(offsets):
        if e <= s or not text[s:e].strip():
            continue
        mask[n] = any(s < span_end and e > span_start for span_start, span_end in spans)
    return mask


def templated_prompt(tokenizer, prompt: str) -> tuple[str, int]:
    """Wrap a prompt in the tokenizer's chat template; return the text and where the prompt starts."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise AttributionError("chat_template=True but the tokenizer has no chat template")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    where = text.find(prompt)
    if where < 0:
        raise AttributionError("the chat template rewrote the prompt text; instruction spans cannot be located")
    return text, where


def encode_prompt(tokenizer, prompt: Prompt, chat_template: bool = False) -> PromptEncoding:
    """Tokenise ``prompt.strip()`` (§1.2) and derive the instruction mask from character spans."""
    raw = prompt.prompt
    stripped = raw.strip()
    lead = len(raw) - len(raw.lstrip())
    spans = [(s - lead, e - lead) for s, e in prompt.instruction_char_spans]
    if chat_template:
        text, where = templated_prompt(tokenizer, stripped)
        spans = [(s + where, e + where) for s, e in spans]
        prefix: tuple[int, ...] = ()
    else:
        text = stripped
        prefix = (tokenizer.bos_token_id,) if adds_bos(tokenizer) else ()
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    if chat_template and ids and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id:
        prefix, ids, offsets = (ids[0],), ids[1:], offsets[1:]
    if not ids:
        raise AttributionError(f"prompt {prompt.id!r} has no tokens after tokenisation")
    mask = instruction_mask_from_offsets(text, offsets, spans)
    if spans and not mask.any():
        raise AttributionError(
            f"prompt {prompt.id!r}: instruction spans {prompt.instruction_char_spans} cover no prompt token"
        )
    return PromptEncoding(
        prefix_ids=prefix,
        prompt_ids=tuple(ids),
        prompt_tokens=tuple(tokenizer.convert_ids_to_tokens(ids)),
        instruction_mask=mask,
        text=text,
    )


def build_sequence(enc: PromptEncoding, response_ids: Sequence[int]) -> torch.Tensor:
    """ids = [BOS] + P_ids + R_ids, built by concatenation (§7 first pitfall). Shape (seq_len,)."""
    ids = list(enc.prefix_ids) + list(enc.prompt_ids) + list(response_ids)
    if ids[len(enc.prefix_ids) : len(enc.prefix_ids) + len(enc.prompt_ids)] != list(enc.prompt_ids):
        raise AttributionError("prompt ids are not a prefix of the attributed sequence")
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Generation (§1.1): greedy, each model its own response, batched with a KV cache


def generate_responses(
    model: torch.nn.Module,
    tokenizer,
    encodings: Sequence[PromptEncoding],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[int, ...]]:
    """Greedy responses (without EOS) for each encoded prompt, in input order.

    Prompts are batched by length (left padding) so a batch holds similar lengths; the batch
    layout depends only on the prompt set, never on the worker that runs it.
    """
    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    order = sorted(range(len(encodings)), key=lambda i: (len(encodings[i].prompt_ids), i))
    out: list[tuple[int, ...]] = [()] * len(encodings)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        seqs = [list(encodings[i].prefix_ids) + list(encodings[i].prompt_ids) for i in batch]
        width = max(map(len, seqs))
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
        attn = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=attn,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        for row, i in enumerate(batch):
            new = gen[row, width:].tolist()
            if eos is not None and eos in new:
                new = new[: new.index(eos)]
            while new and new[-1] == pad and pad != eos:
                new.pop()
            out[i] = tuple(new)
        if progress is not None:
            progress(len(batch))
    return out
