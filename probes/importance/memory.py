"""How many rows one batched attribution pass carries, from a memory budget (``--attribution-memory``).

A row is one cotangent (reverse mode: one response token) or one tangent (forward mode: one prompt
token). Both batched paths stop at the final hidden state h (attribution.py, "the unembedding seam"),
so a row's cost is set by the trunk alone, and the vocabulary enters only the per-instance part.

The estimate, float32 (4 bytes), with S = seq_len, D = d_model, F = d_ff, H = query heads,
L = layers, M = resp_len, V = vocab:

    row bytes    VJP: 4 * S * (8 D + 4 F + 3 H S)       JVP: 4 * S * (20 D + 10 F + 4 H S)
    base bytes   VJP: 4 * S * L * (10 D + 4 F + 2 H S) + 64 MiB      JVP: 64 MiB
    head bytes   4 * (4 M V + 2 S V)

    chunk = (budget - base) // row, within [1, cap];  peak ≈ base + max(head, chunk × row)

Why one layer, not L, per row: the rows share the saved forward (unbatched), and a row's batched
gradient (or tangent) lives only while one layer is being differentiated; autograd frees it as it
moves down. Inside a layer the largest live set is the residual stream and q/k/v/o (D terms), the
MLP's up/gate/act/down (F terms) and the attention scores and probabilities with their gradient or
tangent (H S terms); forward mode holds each intermediate's primal and tangent at once, hence its
larger constants. Reverse mode's base is its one forward graph (shared by all rows); 64 MiB is the
autograd/functorch runtime a first pass maps in. The head's logits on the M response rows (the
cotangent G, ×4 buffers) and the check of the seam on S rows (×2) come and go before the rows
start, so they meet the rows' memory in a max, not a sum; they are per instance and not chunked (the
loop holds as much). The constants are upper estimates fitted to peaks measured at S = 71 and S = 271
(docs/BENCHMARKS.md, "Attribution memory"). A budget below base + one row cannot be honoured: the
pass then carries one row, the loop's footprint. ``cap`` bounds the chunk from above: 512 on CUDA; on a CPU 16 (batching past it gains nothing
measurable) and fewer when a pass would be long, because progress is reported once per pass and the
suite must show progress at least every 10 s. A pass's length is estimated from its matmul work,
deterministically (a measured clock would make the chunking, and so the float rounding, vary from
run to run):

    row FLOP   VJP: S·L·(8D² + 6DF + 4SD)      JVP: 1.5 × that
    cpu cap    clamp(PASS_FLOP // row FLOP, 1, 16),   PASS_FLOP = 1.5e11

Measured single-threaded on the shared box: 25 to 28 GFLOP/s for reverse-mode rows (the issue's
random Llama and SmolLM2), so a pass is about 5 to 6 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BYTES = 4  # the maths is float32 whatever the storage dtype (precision.py)
CPU_BUDGET = 1 << 30  # default on a CPU: 1 GiB above the loaded model
CPU_CAP = 16  # rows per pass on a CPU (docs/BENCHMARKS.md: chunk 16 vs 64 changes CPU time by a few %)
PASS_FLOP = 150e9  # about 5-6 s of one CPU thread: a pass reports progress well inside 10 s
CUDA_CAP = 512


@dataclass(frozen=True)
class Dims:
    """The shape of one attribution: the model's sizes and the sequence's."""

    seq_len: int
    resp_len: int
    d_model: int
    d_ff: int
    n_heads: int
    n_layers: int
    vocab: int


def dims_of(config: Any, seq_len: int, resp_len: int) -> Dims | None:
    """Read a transformers config (GPT-2's aliases resolve through ``attribute_map``); None when a
    size is missing (a non-transformers model: the chunk then falls back to the cap)."""
    try:
        d = int(config.hidden_size)
        return Dims(seq_len=seq_len, resp_len=resp_len, d_model=d,
                    d_ff=int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d),
                    n_heads=int(config.num_attention_heads), n_layers=int(config.num_hidden_layers),
                    vocab=int(config.vocab_size))
    except (AttributeError, TypeError, ValueError):
        return None


RUNTIME = 64 << 20  # the autograd/functorch runtime a first pass maps in


def row_bytes(d: Dims, path: str, through_logits: bool = False) -> int:
    """One row of a batched pass. ``through_logits``: the fallback paths that batch the head too
    (a (seq_len, vocab) gradient or tangent per row, ×3: logits, log-softmax, the head's input grad)."""
    S, D, F, HS = d.seq_len, d.d_model, d.d_ff, d.n_heads * d.seq_len
    trunk = BYTES * S * ((20 * D + 10 * F + 4 * HS) if path == "jvp" else (8 * D + 4 * F + 3 * HS))
    return trunk + (3 * BYTES * S * d.vocab if through_logits else 0)


def base_bytes(d: Dims, path: str) -> int:
    """What a pass holds whatever its chunk: the runtime, and reverse mode's one forward graph."""
    if path == "jvp":
        return RUNTIME
    return RUNTIME + BYTES * d.seq_len * d.n_layers * (10 * d.d_model + 4 * d.d_ff + 2 * d.n_heads * d.seq_len)


def head_bytes(d: Dims) -> int:
    """The head's logits before the rows start: M rows for the cotangent (×4), S rows for the seam check (×2)."""
    return BYTES * (4 * d.resp_len * d.vocab + 2 * d.seq_len * d.vocab)


def peak_bytes(d: Dims, path: str, chunk: int, through_logits: bool = False) -> int:
    """The estimated peak above the loaded model of one attribution at ``chunk`` rows per pass."""
    return base_bytes(d, path) + max(head_bytes(d), chunk * row_bytes(d, path, through_logits))


def row_flop(d: Dims, path: str) -> float:
    """Matmul work of one row: a reverse row is one trunk backward to the input (about one forward),
    a forward-mode row one tangent forward (measured about 1.5 × a reverse row)."""
    S, L, D, F = d.seq_len, d.n_layers, d.d_model, d.d_ff
    reverse = S * L * (8 * D * D + 6 * D * F + 4 * S * D)
    return 1.5 * reverse if path == "jvp" else float(reverse)


def cpu_cap(d: Dims | None, path: str) -> int:
    """Rows per pass on a CPU: at most CPU_CAP, and few enough that a pass is about PASS_FLOP."""
    if d is None:
        return CPU_CAP
    return int(max(1, min(CPU_CAP, PASS_FLOP // row_flop(d, path))))


def chunk_for_budget(d: Dims | None, path: str, budget: int, cap: int, through_logits: bool = False) -> int:
    """Rows per pass so that base + chunk × row stays within ``budget`` bytes; within [1, cap]."""
    if d is None:
        return cap
    free = budget - base_bytes(d, path)
    return max(1, min(cap, free // row_bytes(d, path, through_logits)))
