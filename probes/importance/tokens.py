"""Token bookkeeping of probe 1 (METHODS §1.2, §1.7): prompt encoding, instruction mask, the
attributed sequence ``[BOS] + P + R``.

Axis vocabulary: ``prompt_len`` (N), ``resp_len`` (M), ``seq_len`` (BOS + N + M), ``d_model`` (D).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shiftcheck.probes.importance.errors import AttributionError, AttributionOOMError
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

    Whitespace-only pieces (``▁``, ``<0x0A>``) are dropped at each span's edges only; inside a span
    they stay marked, and a piece with any visible character (``▁"``) is never dropped. With
    SentencePiece the word-initial ``▁`` belongs to the token, so a range may start at the
    preceding space; the overlap rule handles that.
    """
    mask = np.zeros(len(offsets), dtype=bool)
    blank = [e <= s or not text[s:e].strip() for s, e in offsets]
    for span_start, span_end in spans:
        hit = [n for n, (s, e) in enumerate(offsets) if e > s and s < span_end and e > span_start]
        while hit and blank[hit[0]]:
            hit.pop(0)
        while hit and blank[hit[-1]]:
            hit.pop()
        mask[hit] = True
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
    return torch.tensor(list(enc.prefix_ids) + list(enc.prompt_ids) + list(response_ids), dtype=torch.long)


def check_prompt_prefix(tokenizer, enc: PromptEncoding, response_text: str, prompt_id: str) -> None:
    """§1.2: the prompt's ids must be a prefix of ``tok(x + " " + y)``, the authors' full sequence.

    A tokenizer that merges across the boundary would attribute other tokens than the authors' did;
    that is an error naming the instance, never a silent shift.
    """
    if not response_text:
        return
    sep = "" if enc.text.endswith((" ", "\n")) else " "
    full = tokenizer(enc.text + sep + response_text, add_special_tokens=False).input_ids
    n = len(enc.prompt_ids)
    if list(full[:n]) != list(enc.prompt_ids):
        raise AttributionError(
            f"prompt {prompt_id!r}: its tokens are not a prefix of the tokenised prompt + response "
            f"(the tokenizer merges across the boundary: prompt ends {list(enc.prompt_ids[-3:])}, "
            f"full sequence has {list(full[max(0, n - 3):n + 1])})")


def strip_response(tokenizer, response_ids: Sequence[int]) -> tuple[int, ...]:
    """§1.2 ``y.strip()``: drop whitespace-only tokens at both ends of a response."""
    ids = list(response_ids)

    def blank(i: int) -> bool:
        return not tokenizer.decode([i], skip_special_tokens=False).strip()

    while ids and blank(ids[0]):
        ids.pop(0)
    while ids and blank(ids[-1]):
        ids.pop()
    return tuple(ids)


# ---------------------------------------------------------------------------------------------
# Generation (§1.1): greedy, each model its own response, batched with a KV cache


def eos_ids(tokenizer, generation_config) -> tuple[int, ...]:
    """The stop set: the tokenizer's EOS and every EOS id of the checkpoint's generation config
    (chat models often list several, e.g. end-of-turn and end-of-text)."""
    found: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        for i in ([value] if isinstance(value, int) else list(value or [])):
            if i is not None and int(i) not in found:
                found.append(int(i))
    return tuple(found)


def greedy_config(max_new_tokens: int, eos: Sequence[int], pad: int, bos: int | None):
    """The one decoding every checkpoint gets (§1.1): greedy, one beam, no repetition penalty, no
    n-gram blocking, whatever the checkpoint's own ``generation_config`` says."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
        no_repeat_ngram_size=0, temperature=None, top_p=None, top_k=None, length_penalty=1.0,
        eos_token_id=list(eos) or None, pad_token_id=pad, bos_token_id=bos,
    )


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
    eos = eos_ids(tokenizer, getattr(model, "generation_config", None))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    config = greedy_config(max_new_tokens, eos, pad, tokenizer.bos_token_id)
    order = sorted(range(len(encodings)), key=lambda i: (len(encodings[i].prompt_ids), i))
    out: list[tuple[int, ...]] = [()] * len(encodings)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        seqs = [list(encodings[i].prefix_ids) + list(encodings[i].prompt_ids) for i in batch]
        width = max(map(len, seqs))
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
        attn = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
        try:
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=attn, generation_config=config)
        except torch.OutOfMemoryError as exc:
            raise AttributionOOMError(
                f"out of memory generating responses for {len(batch)} prompt(s) of up to {width} tokens on "
                f"{device}: lower --max-new-tokens, free the device, or run on another one") from exc
        for row, i in enumerate(batch):
            new = gen[row, width:].tolist()
            stops = [k for k, tok in enumerate(new) if tok in eos]
            if stops:
                new = new[: stops[0]]
            while new and new[-1] == pad and pad not in eos:
                new.pop()
            out[i] = tuple(new)
        if progress is not None:
            progress(len(batch))
    return out
