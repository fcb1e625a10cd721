"""Raw importance I = gradient x input (METHODS §1.3): the per-token loop (reference), batched
reverse mode (VJP) and batched forward mode (JVP), both batched from the final hidden state (the
unembedding seam below) and chunked to a memory budget (memory.py).

Axis vocabulary: ``prompt_len`` (N), ``resp_len`` (M), ``seq_len`` (BOS + N + M), ``d_model`` (D).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

import shiftcheck.probes.importance.memory as memory
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


def importance_loop(model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int],
                    rows_done: Callable[[int], None] | None = None) -> np.ndarray:
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
        if rows_done is not None:
            rows_done(1)
    return I


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


RowsDone = Callable[[int], None]  # called with the number of rows a finished pass covered


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


def default_budget(model: torch.nn.Module) -> tuple[int, int]:
    """(budget bytes, rows cap) when ``--attribution-memory`` is not given: half the accelerator's
    free memory on CUDA (what the chunk was sized from before), 1 GiB on a CPU (before, a CPU pass
    took 64 rows whatever they cost, 6.4 GB on the issue's shape; a shared box's RAM is not ours to
    take, and at the shipped shapes the CPU rows cap binds before 1 GiB does; memory.py)."""
    param = next(model.parameters())
    if param.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(param.device)
        return free // 2, memory.CUDA_CAP
    return memory.CPU_BUDGET, memory.CPU_CAP


def pick_chunk(model: torch.nn.Module, seq_len: int, resp_len: int, path: str, chunk: int | None,
               budget: int | None, through_logits: bool = False) -> int:
    """An explicit chunk wins; else rows per pass from ``budget`` bytes (default: :func:`default_budget`),
    on a CPU also short enough to report progress often (memory.cpu_cap)."""
    if chunk:
        return chunk
    default, cap = default_budget(model)
    dims = memory.dims_of(getattr(model, "config", None), seq_len, resp_len)
    if next(model.parameters()).device.type != "cuda":
        cap = memory.cpu_cap(dims, path)
    return memory.chunk_for_budget(dims, path, default if budget is None else budget, cap, through_logits)


def default_chunk(model: torch.nn.Module, seq_len: int) -> int:
    """Rows per batched reverse pass at the default budget (kept for callers of the old name)."""
    return pick_chunk(model, seq_len, seq_len, "vjp", None, None)


# ---------------------------------------------------------------------------------------------
# The unembedding seam. log p_j depends on the final hidden state h (after the final norm) only
# through the head at position N + j:
#
#     d log p_j / d h_{N+j} = W_U^T (onehot(t_j) - softmax_j) =: G_j,   zero at every other position.
#
# So both batched paths stop at h: reverse mode pulls back G_j placed at position N + j alone, and
# forward mode contracts the tangent of h_{N+j} with G_j. No (seq_len, vocab) tensor is batched;
# the head runs once per instance, on the M response rows. Batching the whole backward from log p
# instead (``vjp_through_logits``) expands every row to a dense (seq_len, vocab) gradient and
# multiplies the head over all seq_len positions although one is non-zero: on the shape
# that was 2.2 GB per tensor at a chunk of 64 (docs/BENCHMARKS.md).


def _seam(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(trunk: E -> h, head: h -> logits) of a transformers causal LM; None for any other model."""
    trunk = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if trunk is None or trunk is model or head is None:
        return None
    return trunk, head


def final_hidden(trunk: torch.nn.Module, E: torch.Tensor) -> torch.Tensor:
    """h: (seq_len, d_model), the hidden states the head reads (the trunk applies the final norm)."""
    return trunk(inputs_embeds=E[None]).last_hidden_state[0]


def head_cotangent(head: torch.nn.Module, h_rows: torch.Tensor, targets: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, log p): G (resp_len, d_model) = d log p_j / d h_j, by autograd through the head on the M
    rows only (equal to W_U^T (onehot - softmax) for a linear head, and right for a biased one), and
    log p (resp_len,)."""
    h = h_rows.detach().requires_grad_(True)
    with torch.enable_grad():
        logp = head(h).float().log_softmax(-1).gather(-1, targets[:, None])[:, 0]
        (G,) = torch.autograd.grad(logp.sum(), h)
    return G, logp.detach()


def _seam_holds(head: torch.nn.Module, h_rows: torch.Tensor, logits_rows: torch.Tensor) -> bool:
    """Does head(h) give the model's own logits? False for models that transform logits after the
    head (soft-capping, logit scales) or whose h is not what the head reads: those take the
    through-logits paths, which are exact for any model."""
    with torch.no_grad():
        got = head(h_rows.detach()).float()
    ref = logits_rows.detach().float()
    return bool((got - ref).abs().max() <= 1e-4 * (ref.abs().max() + 1e-6))


def hidden_and_logits(model: torch.nn.Module, E: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of the whole model: h (seq_len, d_model), its last hidden state with the graph to
    E (in transformers' causal LMs the final-normed state the head reads; :func:`_seam_holds` checks
    it), and the model's own logits on ``rows``, detached."""
    out = model(inputs_embeds=E[None], output_hidden_states=True)
    return out.hidden_states[-1][0], out.logits[0, rows].detach()


def _rows(enc: PromptEncoding, seq_len: int) -> slice:
    """Positions whose hidden state predicts the response tokens: N + j for j < M (BOS shifts by one)."""
    return slice(_positions(enc).stop - 1, seq_len - 1)


def vjp_through_logits(
    model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int], chunk: int | None = None,
    budget: int | None = None, rows_done: RowsDone | None = None,
) -> np.ndarray:
    """Reverse mode batched from log p (one-hot cotangents on log p, the whole backward vmapped).
    Exact for any model; the fallback of :func:`importance_vjp` and the "before" of its benchmark."""
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
        if rows_done is not None:
            rows_done(stop - start)

    run_chunked(M, pick_chunk(model, E.shape[0], M, "vjp", chunk, budget, through_logits=True), work,
                "batched VJP")
    return I


def importance_vjp(
    model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int], chunk: int | None = None,
    budget: int | None = None, rows_done: RowsDone | None = None,
) -> np.ndarray:
    """Reverse mode: ONE forward pass (h and the logits that check the seam), then batched
    vector-Jacobian products from h to E.

    Row r of the cotangent batch is G_j at position N + j and zero elsewhere, so grad row r =
    d log p_j / dE; multiplied by p_j it is d p_j / dE. ``rows_done(k)`` after each pass of k
    response tokens. Returns I (prompt_len, resp_len).
    """
    M = len(response_ids)
    seam = _seam(model)
    if M == 0 or seam is None:
        return vjp_through_logits(model, enc, response_ids, chunk, budget, rows_done)
    trunk, head = seam
    ids = build_sequence(enc, response_ids)
    pos, rows = _positions(enc), _rows(enc, len(ids))
    E = input_embeddings(model, ids).requires_grad_(True)
    h, logits_rows = hidden_and_logits(model, E, rows)  # h (seq_len, d_model), with its graph to E
    if not _seam_holds(head, h[rows], logits_rows):
        del h
        return vjp_through_logits(model, enc, response_ids, chunk, budget, rows_done)
    G, logp = head_cotangent(head, h[rows], ids[pos.stop :].to(h.device))
    p = torch.exp(logp)
    E_prompt = E[pos].detach()  # (prompt_len, d_model)
    I = np.zeros((len(enc.prompt_ids), M), dtype=np.float32)

    def work(start: int, stop: int) -> None:
        k = torch.arange(stop - start)
        cotangent = h.new_zeros(stop - start, *h.shape)  # (chunk, seq_len, d_model), one non-zero row each
        cotangent[k, rows.start + start + k] = G[start:stop].to(h.dtype)
        (g,) = torch.autograd.grad(h, E, grad_outputs=cotangent, is_grads_batched=True, retain_graph=True)
        block = (g[:, pos] * E_prompt[None]).sum(-1) * p[start:stop, None]  # (chunk, prompt_len)
        I[:, start:stop] = block.T.cpu().numpy()
        if rows_done is not None:
            rows_done(stop - start)

    run_chunked(M, pick_chunk(model, len(ids), M, "vjp", chunk, budget), work, "batched VJP")
    return I


def _gated(E: torch.Tensor, pos: slice, gates: torch.Tensor) -> torch.Tensor:
    """E with prompt row n scaled by gates[n] (the other rows by 1)."""
    one = torch.ones(E.shape[0], device=E.device, dtype=E.dtype)
    return E * torch.cat([one[: pos.start], gates, one[pos.stop :]])[:, None]


def _jvp_rows(fn: Callable[[torch.Tensor], torch.Tensor], N: int, start: int, stop: int,
              device: torch.device) -> torch.Tensor:
    """d fn / d g_n at g = 1 for n in [start, stop): one vmapped JVP per one-hot gate tangent.
    Fused SDPA kernels have no forward AD, so the math kernel is forced."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tangents = torch.zeros(stop - start, N, device=device)
    tangents[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
    ones = torch.ones(N, device=device)
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        _, rows = torch.func.vmap(lambda t: torch.func.jvp(fn, (ones,), (t,)))(tangents)
    return rows


def jvp_through_logits(
    model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int], chunk: int | None = None,
    budget: int | None = None, rows_done: RowsDone | None = None,
) -> np.ndarray:
    """Forward mode carried through the head to p (a (seq_len, vocab) tangent per row). Exact for
    any model; the fallback of :func:`importance_jvp`."""
    ids = build_sequence(enc, response_ids)
    M, N, pos = len(response_ids), len(enc.prompt_ids), _positions(enc)
    I = np.zeros((N, M), dtype=np.float32)
    if M == 0:
        return I
    E = input_embeddings(model, ids)
    targets = ids[pos.stop :].to(E.device)

    def p_of_gates(gates: torch.Tensor) -> torch.Tensor:
        logits = model(inputs_embeds=_gated(E, pos, gates)[None]).logits[0]
        logp = logits[pos.stop - 1 : -1].float().log_softmax(-1).gather(-1, targets[:, None])[:, 0]
        return torch.exp(logp)  # (resp_len,)

    def work(start: int, stop: int) -> None:
        I[start:stop] = _jvp_rows(p_of_gates, N, start, stop, E.device).cpu().numpy()
        if rows_done is not None:
            rows_done(stop - start)

    run_chunked(N, pick_chunk(model, len(ids), M, "jvp", chunk, budget, through_logits=True), work,
                "batched JVP")
    return I


def importance_jvp(
    model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int], chunk: int | None = None,
    budget: int | None = None, rows_done: RowsDone | None = None,
) -> np.ndarray:
    """Forward mode: N Jacobian-vector products over scalar gates g_n on the prompt embeddings.

    E'_n = g_n E_n with g = 1, so  d p_j / d g_n = < d p_j / d E_n , E_n > = I[n, j]  (METHODS §1.3
    implementation note). One JVP with tangent e_n gives row n: the tangent of h_{N+j}, contracted
    with G_j (the unembedding seam) and scaled by p_j. Cheaper than reverse mode when
    prompt_len << resp_len. ``rows_done(k)`` after each pass of k prompt tokens.
    """
    M, N = len(response_ids), len(enc.prompt_ids)
    seam = _seam(model)
    if M == 0 or seam is None:
        return jvp_through_logits(model, enc, response_ids, chunk, budget, rows_done)
    trunk, head = seam
    ids = build_sequence(enc, response_ids)
    pos, rows = _positions(enc), _rows(enc, len(ids))
    E = input_embeddings(model, ids)
    with torch.no_grad():  # the tangents below run through the trunk: check the trunk's own h
        h_rows = final_hidden(trunk, E)[rows]
        logits_rows = model(inputs_embeds=E[None]).logits[0, rows]
    if not _seam_holds(head, h_rows, logits_rows):
        return jvp_through_logits(model, enc, response_ids, chunk, budget, rows_done)
    G, logp = head_cotangent(head, h_rows, ids[pos.stop :].to(E.device))
    p = torch.exp(logp)
    I = np.zeros((N, M), dtype=np.float32)

    def h_of_gates(gates: torch.Tensor) -> torch.Tensor:
        return final_hidden(trunk, _gated(E, pos, gates))[rows]  # (resp_len, d_model)

    def work(start: int, stop: int) -> None:
        dh = _jvp_rows(h_of_gates, N, start, stop, E.device)  # (chunk, resp_len, d_model)
        I[start:stop] = ((dh * G[None].to(dh.dtype)).sum(-1).float() * p[None]).cpu().numpy()
        if rows_done is not None:
            rows_done(stop - start)

    run_chunked(N, pick_chunk(model, len(ids), M, "jvp", chunk, budget), work, "batched JVP")
    return I


def choose_mode(mode: str, prompt_len: int, resp_len: int) -> str:
    """auto: forward mode when it needs clearly fewer passes (N < M / 2), else reverse (METHODS §1.3)."""
    if mode not in MODES:
        raise ValueError(f"unknown attribution mode {mode!r}; choose one of {MODES}")
    if mode != "auto":
        return mode
    return "jvp" if 2 * prompt_len < resp_len else "vjp"


def _raw(model: torch.nn.Module, enc: PromptEncoding, response_ids: Sequence[int], chosen: str,
         chunk: int | None, budget: int | None, progress: Callable[[float], None] | None) -> np.ndarray:
    if chosen == "loop":
        return importance_loop(model, enc, response_ids, progress)
    if chosen == "vjp":
        return importance_vjp(model, enc, response_ids, chunk, budget, progress)
    # a forward-mode pass covers prompt rows; each row is 1/N of every response token's column
    share = len(response_ids) / max(len(enc.prompt_ids), 1)
    return importance_jvp(model, enc, response_ids, chunk, budget,
                          None if progress is None else lambda k: progress(k * share))


def raw_importance(
    model: torch.nn.Module,
    enc: PromptEncoding,
    response_ids: Sequence[int],
    mode: str = "auto",
    chunk: int | None = None,
    instance_id: str = "?",
    budget: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """I (prompt_len, resp_len) by the chosen mode; raises NonFiniteAttributionError on NaN/inf.

    ``budget``: bytes one batched pass may use (memory.py; None: :func:`default_budget`).
    ``progress(k)``: called as work finishes, k in response tokens (a forward-mode pass over some
    prompt rows counts the same fraction of the response), summing to resp_len.
    """
    _check_fp32(model)
    chosen = choose_mode(mode, len(enc.prompt_ids), len(response_ids))
    try:
        with fp32_compute(model):
            I = _raw(model, enc, response_ids, chosen, chunk, budget, progress)
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
