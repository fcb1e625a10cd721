"""Probe 1: prompt -> response attribution and instruction "importance density".

METHODS.md §1 (paper §3.1, eq. 1-3). Axis vocabulary used in shape comments:
``prompt_len`` (N, attributed prompt tokens), ``resp_len`` (M, response tokens),
``seq_len`` (BOS + N + M), ``d_model`` (D).

Reading order: token bookkeeping -> raw importance I (loop reference, batched VJP, batched JVP)
-> S = normalise(I) -> density a -> instance score -> position profile -> generation ->
``run_importance``, the public entry point.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from shiftcheck.probes.prompts import Prompt

CODE_VERSION = "importance-1"  # bump when any number this module produces changes

# ---------------------------------------------------------------------------------------------
# Errors and configuration


class AttributionError(RuntimeError):
    """Attribution of one instance could not be computed; the message names the instance."""


class AttributionOOMError(AttributionError):
    """Out of memory even with a chunk of one response token."""


class NonFiniteAttributionError(AttributionError):
    """The gradient x input matrix holds NaN or inf (usually fp16/bf16 weights or a broken checkpoint)."""


@dataclass(frozen=True)
class ImportanceConfig:
    """Defaults are the paper's (METHODS §5)."""

    L: int = 10  # levels of the ceil quantisation (§1.4)
    b: int = 7  # keep levels > b for the density analysis (§1.4)
    p: float = 4.0  # l1/lp density (§1.5)
    max_new_tokens: int = 300  # greedy, raw prompt (§1.1)
    chat_template: bool = False  # the paper used raw prompts for both models
    generation_batch_size: int = 8
    mode: str = "auto"  # auto | vjp | jvp | loop
    chunk_size: int | None = None  # response tokens (vjp) or prompt tokens (jvp) per pass; None = sized to memory

    def cache_config(self) -> dict:
        """The fields that change the stored matrices (b and p act at analysis time). The mode is
        included because paths agree only to float tolerance, which can move a ceil level."""
        return {"L": self.L, "max_new_tokens": self.max_new_tokens, "chat_template": self.chat_template,
                "mode": self.mode}


MODES = ("auto", "vjp", "jvp", "loop")

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
# Raw importance I (§1.3):  I[n, j] = < d p_j / d E[pos(n)], E[pos(n)] >


def _check_fp32(model: torch.nn.Module) -> None:
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise AttributionError(
            f"attribution needs float32 weights (METHODS §7: bf16/fp16 gradients tie the column maxima); "
            f"the model is {dtype}. Load it with --dtype float32."
        )


def input_embeddings(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """E: (seq_len, d_model) leaf tensor of input embeddings, fp32."""
    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        E = model.get_input_embeddings()(ids.to(device)[None])[0]
    return E.detach().float()


def response_log_probs(
    model: torch.nn.Module, E: torch.Tensor, ids: torch.Tensor, first_resp: int
) -> torch.Tensor:
    """log p_j for every response token j: logits at position first_resp - 1 + j. Shape (resp_len,)."""
    logits = model(inputs_embeds=E[None]).logits[0]  # (seq_len, vocab)
    targets = ids[first_resp:].to(logits.device)
    logp = logits[first_resp - 1 : -1].float().log_softmax(-1)
    return logp.gather(-1, targets[:, None])[:, 0]


def _positions(enc: PromptEncoding) -> slice:
    start = len(enc.prefix_ids)
    return slice(start, start + len(enc.prompt_ids))


def _reverse_pass(
    model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int]
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, slice]:
    """The shared forward of both reverse-mode paths: zeroed I (prompt_len, resp_len), the leaf E
    (seq_len, d_model), log p (resp_len,) with its graph, and the prompt positions."""
    ids = build_sequence(enc, response_ids)
    pos = _positions(enc)
    I = np.zeros((len(enc.prompt_ids), len(response_ids)), dtype=np.float32)
    E = input_embeddings(model, ids).requires_grad_(True)
    logp = response_log_probs(model, E, ids, pos.stop) if len(response_ids) else E.new_zeros(0)
    return I, E, logp, pos


def importance_loop(model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int]) -> np.ndarray:
    """Reference: one backward pass per response token (the authors' loop). Returns I (prompt_len, resp_len).

    The gradient of log p_j is scaled by p_j, which is exactly dp_j (chain rule) and avoids
    underflow in the probability's own gradient.
    """
    M = len(response_ids)
    if M == 0:
        return np.zeros((len(enc.prompt_ids), 0), dtype=np.float32)
    I, E, logp, pos = _reverse_pass(model, enc, response_ids)
    for j in range(M):
        (g,) = torch.autograd.grad(logp[j], E, retain_graph=j < M - 1)
        I[:, j] = (torch.exp(logp[j].detach()) * (g[pos] * E[pos].detach()).sum(-1)).cpu().numpy()
    return I


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_chunked(n_items: int, chunk: int, work: Callable[[int, int], None], what: str) -> None:
    """Call ``work(start, stop)`` over [0, n_items) in chunks, halving the chunk on OOM and continuing."""
    start = 0
    while start < n_items:
        stop = min(n_items, start + chunk)
        try:
            work(start, stop)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            if chunk == 1:
                raise AttributionOOMError(f"{what}: out of memory even with a chunk of 1") from exc
            chunk = max(1, chunk // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = stop


def default_chunk(model: torch.nn.Module, seq_len: int) -> int:
    """Rows per batched pass, sized to free accelerator memory (one activation set ~ seq_len x d x layers)."""
    param = next(model.parameters())
    if param.device.type != "cuda":
        return 64
    free, _ = torch.cuda.mem_get_info(param.device)
    cfg = model.config
    per_row = 4 * seq_len * cfg.hidden_size * max(1, cfg.num_hidden_layers) * 16  # bytes, generous factor
    return int(max(1, min(512, free // 2 // max(per_row, 1))))


def importance_vjp(
    model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int], chunk: int | None = None
) -> np.ndarray:
    """Reverse mode: ONE forward pass, then batched vector-Jacobian products over response tokens.

    Row j of the cotangent batch is the one-hot e_j, so grad row j = d log p_j / dE; multiplied by
    p_j it is d p_j / dE. Returns I (prompt_len, resp_len).
    """
    M = len(response_ids)
    if M == 0:
        return np.zeros((len(enc.prompt_ids), 0), dtype=np.float32)
    I, E, logp, pos = _reverse_pass(model, enc, response_ids)
    p = torch.exp(logp.detach())
    E_prompt = E[pos].detach()  # (prompt_len, d_model)

    def work(start: int, stop: int) -> None:
        eye = torch.zeros(stop - start, M, device=logp.device)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        (g,) = torch.autograd.grad(logp, E, grad_outputs=eye, is_grads_batched=True, retain_graph=True)
        block = (g[:, pos] * E_prompt[None]).sum(-1) * p[start:stop, None]  # (chunk, prompt_len)
        I[:, start:stop] = block.T.cpu().numpy()

    run_chunked(M, chunk or default_chunk(model, E.shape[0]), work, "batched VJP")
    return I


def importance_jvp(
    model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int], chunk: int | None = None
) -> np.ndarray:
    """Forward mode: N Jacobian-vector products over scalar gates g_n on the prompt embeddings.

    E'_n = g_n E_n with g = 1, so  d p_j / d g_n = < d p_j / d E_n , E_n > = I[n, j]  (METHODS §1.3
    implementation note). One JVP with tangent e_n gives row n. Cheaper than reverse mode when
    prompt_len << resp_len. Fused SDPA kernels have no forward AD, so the math kernel is forced.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ids = build_sequence(enc, response_ids)
    M = len(response_ids)
    N = len(enc.prompt_ids)
    pos = _positions(enc)
    I = np.zeros((N, M), dtype=np.float32)
    if M == 0:
        return I
    E = input_embeddings(model, ids)
    targets = ids[pos.stop :].to(E.device)

    def p_of_gates(gates: torch.Tensor) -> torch.Tensor:
        scale = torch.ones(E.shape[0], device=E.device, dtype=E.dtype)
        scale = torch.cat([scale[: pos.start], gates, scale[pos.stop :]])
        logits = model(inputs_embeds=(E * scale[:, None])[None]).logits[0]
        logp = logits[pos.stop - 1 : -1].float().log_softmax(-1).gather(-1, targets[:, None])[:, 0]
        return torch.exp(logp)  # (resp_len,)

    ones = torch.ones(N, device=E.device)

    def work(start: int, stop: int) -> None:
        tangents = torch.zeros(stop - start, N, device=E.device)
        tangents[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            _, rows = torch.func.vmap(lambda t: torch.func.jvp(p_of_gates, (ones,), (t,)))(tangents)
        I[start:stop] = rows.cpu().numpy()

    run_chunked(N, chunk or default_chunk(model, len(ids)), work, "batched JVP")
    return I


def choose_mode(mode: str, prompt_len: int, resp_len: int) -> str:
    """auto: forward mode when it needs clearly fewer passes (N < M / 2), else reverse (METHODS §1.3)."""
    if mode not in MODES:
        raise ValueError(f"unknown attribution mode {mode!r}; choose one of {MODES}")
    if mode != "auto":
        return mode
    return "jvp" if 2 * prompt_len < resp_len else "vjp"


def raw_importance(
    model: torch.nn.Module,
    enc: PromptEncoding,
    response_ids: Sequence[int],
    mode: str = "auto",
    chunk: int | None = None,
    instance_id: str = "?",
) -> np.ndarray:
    """I (prompt_len, resp_len) by the chosen mode; raises NonFiniteAttributionError on NaN/inf."""
    _check_fp32(model)
    chosen = choose_mode(mode, len(enc.prompt_ids), len(response_ids))
    if chosen == "loop":
        I = importance_loop(model, enc, response_ids)
    elif chosen == "vjp":
        I = importance_vjp(model, enc, response_ids, chunk)
    else:
        I = importance_jvp(model, enc, response_ids, chunk)
    if not np.isfinite(I).all():
        bad = int((~np.isfinite(I)).sum())
        raise NonFiniteAttributionError(
            f"instance {instance_id!r}: {bad} of {I.size} gradient x input entries are NaN/inf "
            f"(check the checkpoint's weights and run attribution in float32)"
        )
    return I


# ---------------------------------------------------------------------------------------------
# Normalisation and scoring (§1.4 - §1.6)


def normalise(I: np.ndarray, L: int = 10, b: int = 0) -> np.ndarray:
    """Paper eq. 2, per column j:  Ĩ = max(I,0) / (max_n max(I,0) + 1e-7);  S = ceil(L Ĩ);  S = 0 where S <= b.

    Returns integer levels 0..L, dtype uint8, shape (prompt_len, resp_len).
    """
    pos = np.maximum(np.asarray(I, dtype=np.float64), 0.0)
    if pos.size == 0:
        return np.zeros(pos.shape, dtype=np.uint8)
    tilde = pos / (pos.max(axis=0, keepdims=True) + 1e-7)
    S = np.ceil(L * tilde)
    S[S <= b] = 0
    return S.astype(np.uint8)


def cut(S: np.ndarray, b: int) -> np.ndarray:
    """Apply the b cut to levels already quantised with b = 0 (the released format)."""
    S = np.asarray(S)
    return np.where(S > b, S, 0)


def is_levels(S: np.ndarray, L: int = 10) -> bool:
    """True when a matrix already holds integer levels 0..L (the authors' loader check, §6)."""
    S = np.asarray(S)
    if S.size == 0:
        return True
    return bool(np.all(S == np.round(S)) and S.min() >= 0 and S.max() <= L)


def density(S: np.ndarray, p: float = 4.0) -> np.ndarray:
    """§1.5:  a_n = ||S_n||_1 / (||S_n||_p + 1e-9),  0 for an all-zero row. Shape (prompt_len,)."""
    S = np.abs(np.asarray(S, dtype=np.float64))
    if S.shape[1] == 0:
        return np.zeros(S.shape[0])
    l1 = S.sum(axis=1)
    lp = (S**p).sum(axis=1) ** (1.0 / p)
    return np.where(l1 > 0, l1 / (lp + 1e-9), 0.0)


def normalised_density(a: np.ndarray) -> np.ndarray:
    """§1.6:  â_n = a_n / (max_n' a_n' + 1e-9)  — the instance's best prompt token becomes 1."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return a
    return a / (a.max() + 1e-9)


def instruction_score(a_hat: np.ndarray, mask: np.ndarray) -> float:
    """§1.6:  score = Σ_{n ∈ Inst} â_n / log2(2 + |Inst|)  (DCG-like discount by span size)."""
    mask = np.asarray(mask, dtype=bool)
    k = int(mask.sum())
    if k == 0:
        return 0.0
    return float(a_hat[mask].sum() / math.log2(2 + k))


def instance_score(S0: np.ndarray, mask: np.ndarray, b: int = 7, p: float = 4.0) -> float:
    """Score of one instance from its b = 0 levels S0. An empty response scores 0 (§1.6)."""
    S0 = np.asarray(S0)
    if S0.shape[1] == 0:
        return 0.0
    return instruction_score(normalised_density(density(cut(S0, b), p)), mask)


# ---------------------------------------------------------------------------------------------
# Position profile (paper Appendix B.3)

_SENTENCE_END = re.compile(r"[.!?:]$")


def sentence_ids(tokens: Sequence[str]) -> np.ndarray:
    """Sentence index of each prompt token: a sentence ends after a token ending in . ! ? : or a newline."""
    out = np.zeros(len(tokens), dtype=int)
    sid = 0
    for n, tok in enumerate(tokens):
        out[n] = sid
        text = tok.replace("▁", " ").replace("Ġ", " ").strip()
        if _SENTENCE_END.search(text) or tok in ("<0x0A>", "Ċ", "\n") or "\n" in tok:
            sid += 1
    return out


def position_profile(a_hat: np.ndarray, tokens: Sequence[str], mask: np.ndarray | None = None) -> np.ndarray:
    """Share of normalised density in each quarter of its sentence (Appendix B.3). Shape (4,), sums to 1.

    Token n of a sentence with k tokens falls in quarter floor(4 n / k). With ``mask`` only those
    tokens (e.g. instruction sentences) count. All-zero density gives zeros.
    """
    a_hat = np.asarray(a_hat, dtype=np.float64)
    keep = np.ones(len(tokens), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    sids = sentence_ids(tokens)
    shares = np.zeros(4)
    for sid in np.unique(sids):
        idx = np.flatnonzero(sids == sid)
        quarters = (4 * np.arange(len(idx))) // len(idx)
        for q, n in zip(quarters, idx):
            if keep[n]:
                shares[q] += a_hat[n]
    total = shares.sum()
    return shares / total if total > 0 else shares


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


# ---------------------------------------------------------------------------------------------
# Results and the public entry point


@dataclass(frozen=True)
class InstanceAttribution:
    """One prompt's attribution: S0 are the b = 0 levels (prompt_len, resp_len), as in the release."""

    id: str
    source: str
    prompt_tokens: tuple[str, ...]
    response_tokens: tuple[str, ...]
    instruction_mask: np.ndarray  # (prompt_len,) bool
    S0: np.ndarray  # (prompt_len, resp_len) uint8 levels 0..L
    response_ids: tuple[int, ...] = ()
    response_text: str = ""

    @property
    def n_response_tokens(self) -> int:
        return int(self.S0.shape[1])

    def score(self, b: int = 7, p: float = 4.0) -> float:
        return instance_score(self.S0, self.instruction_mask, b, p)

    def a_hat(self, b: int = 7, p: float = 4.0) -> np.ndarray:
        return normalised_density(density(cut(self.S0, b), p))


@dataclass(frozen=True)
class ImportanceResult:
    """Attribution of one model over a prompt set; ``label`` names the model (or replay file)."""

    label: str
    instances: tuple[InstanceAttribution, ...]
    config: ImportanceConfig = field(default_factory=ImportanceConfig)

    @property
    def ids(self) -> list[str]:
        return [inst.id for inst in self.instances]

    @property
    def sources(self) -> list[str]:
        return [inst.source for inst in self.instances]

    @property
    def scores(self) -> np.ndarray:
        return np.array([inst.score(self.config.b, self.config.p) for inst in self.instances])

    def profile(self, instruction_only: bool = True) -> np.ndarray:
        """Mean position profile over instances with any density (Appendix B.3). Shape (4,)."""
        rows = []
        for inst in self.instances:
            a_hat = inst.a_hat(self.config.b, self.config.p)
            prof = position_profile(a_hat, inst.prompt_tokens, inst.instruction_mask if instruction_only else None)
            if prof.sum() > 0:
                rows.append(prof)
        return np.mean(rows, axis=0) if rows else np.zeros(4)

    def with_config(self, config: ImportanceConfig) -> "ImportanceResult":
        return replace(self, config=config)


def attribute_instance(
    model: torch.nn.Module,
    tokenizer,
    prompt: Prompt,
    enc: PromptEncoding,
    response_ids: Sequence[int],
    config: ImportanceConfig,
) -> InstanceAttribution:
    """Raw I for one prompt and its response, quantised to b = 0 levels for storage."""
    I = raw_importance(model, enc, response_ids, config.mode, config.chunk_size, prompt.id)
    return InstanceAttribution(
        id=prompt.id,
        source=prompt.source,
        prompt_tokens=enc.prompt_tokens,
        response_tokens=tuple(tokenizer.convert_ids_to_tokens(list(response_ids))),
        instruction_mask=enc.instruction_mask,
        S0=normalise(I, config.L, 0),
        response_ids=tuple(int(i) for i in response_ids),
        response_text=tokenizer.decode(list(response_ids), skip_special_tokens=True),
    )


def run_importance(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Prompt],
    config: ImportanceConfig = ImportanceConfig(),
    label: str = "model",
    progress: Callable[[str, int, int], None] | None = None,
) -> ImportanceResult:
    """Probe 1 end to end: greedy own responses, then gradient x input attribution per prompt.

    ``progress(stage, done, total)`` is called after each generation batch and each instance.
    """
    _check_fp32(model)
    encodings = [encode_prompt(tokenizer, pr, config.chat_template) for pr in prompts]
    done = {"n": 0}

    def gen_progress(k: int) -> None:
        done["n"] += k
        if progress is not None:
            progress("generate", done["n"], len(prompts))

    responses = generate_responses(
        model, tokenizer, encodings, config.max_new_tokens, config.generation_batch_size, gen_progress
    )
    instances = []
    grad_ctx = torch.enable_grad() if not torch.is_grad_enabled() else nullcontext()
    with grad_ctx:
        for k, (pr, enc, resp) in enumerate(zip(prompts, encodings, responses)):
            instances.append(attribute_instance(model, tokenizer, pr, enc, resp, config))
            if progress is not None:
                progress("attribute", k + 1, len(prompts))
    return ImportanceResult(label=label, instances=tuple(instances), config=config)


# ---------------------------------------------------------------------------------------------
# Storage: a result <-> (JSON meta, numeric arrays) for the result cache; no pickle


def to_storage(result: ImportanceResult) -> tuple[dict, dict[str, np.ndarray]]:
    """Split a result into JSON-able meta and numeric arrays keyed ``<id>/S0`` and ``<id>/mask``."""
    meta = {
        "label": result.label,
        "instances": [
            {
                "id": inst.id,
                "source": inst.source,
                "prompt_tokens": list(inst.prompt_tokens),
                "response_tokens": list(inst.response_tokens),
                "response_ids": list(inst.response_ids),
                "response_text": inst.response_text,
            }
            for inst in result.instances
        ],
    }
    arrays: dict[str, np.ndarray] = {}
    for inst in result.instances:
        arrays[f"{inst.id}/S0"] = np.asarray(inst.S0, dtype=np.uint8)
        arrays[f"{inst.id}/mask"] = np.asarray(inst.instruction_mask, dtype=np.uint8)
    return meta, arrays


def from_storage(meta: dict, arrays: dict[str, np.ndarray], config: ImportanceConfig) -> ImportanceResult:
    """Exact inverse of :func:`to_storage`."""
    instances = []
    for rec in meta["instances"]:
        instances.append(
            InstanceAttribution(
                id=rec["id"],
                source=rec["source"],
                prompt_tokens=tuple(rec["prompt_tokens"]),
                response_tokens=tuple(rec["response_tokens"]),
                instruction_mask=np.asarray(arrays[f"{rec['id']}/mask"], dtype=bool),
                S0=np.asarray(arrays[f"{rec['id']}/S0"], dtype=np.uint8),
                response_ids=tuple(rec.get("response_ids", ())),
                response_text=rec.get("response_text", ""),
            )
        )
    return ImportanceResult(label=meta["label"], instances=tuple(instances), config=config)
