"""Raw importance I = gradient x input (METHODS §1.3): the per-token loop (reference), batched
reverse mode (VJP) and batched forward mode (JVP), chunked to memory.

Axis vocabulary: ``prompt_len`` (N), ``resp_len`` (M), ``seq_len`` (BOS + N + M), ``d_model`` (D).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from shiftcheck.probes.importance.config import MODES
from shiftcheck.probes.importance.precision import fp32_compute
from shiftcheck.probes.importance.errors import AttributionError, AttributionOOMError, NonFiniteAttributionError
from shiftcheck.probes.importance.tokens import PromptEncoding, build_sequence

# ---------------------------------------------------------------------------------------------
# Raw importance I (§1.3):  I[n, j] = < d p_j / d E[pos(n)], E[pos(n)] >


def _check_fp32(model: torch.nn.Module) -> None:
    """Storage may be float32, bfloat16 or float16 (maths is float32 under :func:`fp32_compute`);
    anything else cannot carry gradients."""
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise AttributionError(
            f"attribution needs float32 gradients (METHODS §7: bf16/fp16 gradients tie the column maxima); "
            f"weights stored as {dtype} cannot be upcast for it. Load with --dtype float32 or bfloat16."
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


def _raw(model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int], chosen: str,
         chunk: int | None) -> np.ndarray:
    if chosen == "loop":
        return importance_loop(model, enc, response_ids)
    if chosen == "vjp":
        return importance_vjp(model, enc, response_ids, chunk)
    return importance_jvp(model, enc, response_ids, chunk)


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
    try:
        with fp32_compute(model):
            I = _raw(model, enc, response_ids, chosen, chunk)
    except AttributionOOMError as exc:
        raise AttributionOOMError(
            f"instance {instance_id!r}, attribution forward/backward pass ({chosen}, {len(enc.prompt_ids)} prompt x "
            f"{len(response_ids)} response tokens): {exc}; lower --max-new-tokens, free the device, or run on "
            "another one") from exc
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_oom(exc):
            raise
        raise AttributionOOMError(
            f"instance {instance_id!r}: out of memory in the attribution forward pass ({chosen}); lower "
            "--max-new-tokens, free the device, or run on another one") from exc
    if not np.isfinite(I).all():
        bad = int((~np.isfinite(I)).sum())
        raise NonFiniteAttributionError(
            f"instance {instance_id!r}: {bad} of {I.size} gradient x input entries are NaN/inf "
            f"(check the checkpoint's weights and run attribution in float32)"
        )
    return I
