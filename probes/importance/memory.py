"""How many rows one batched attribution pass carries, from a memory budget (``--attribution-memory``).

A row is one cotangent (reverse mode: one response token) or one tangent (forward mode: one prompt
token). Both batched paths stop at the final hidden state h (attribution.py, "the unembedding seam"),
so a row's cost is set by the trunk alone, and the vocabulary enters only the per-instance part.

The estimate, float32 (4 bytes), with S = seq_len, D = d_model, F = d_ff, H = query heads,
L = layers, M = resp_len, V = vocab:

    row bytes   = 4 * S * (8 D + 4 F + 3 H S)         both paths
    fixed bytes = 4 * S * L * (8 D + 3 F + 2 H S)     reverse mode: the one forward graph, shared by all rows
                + 4 * (4 M V + 2 S V)                 both: the head's logits on M rows (cotangent, ×4
                                                      buffers) and the check of the seam on S rows (×2)

Why one layer, not L, per row: the rows share the saved forward (unbatched), and a row's batched
gradient (or tangent) lives only while one layer is being differentiated; autograd frees it as it
moves down. Inside a layer the largest live set is the residual stream and q/k/v/o (≈ 8 D per
position), the MLP's up/gate/act/down (≈ 4 F) and the attention scores, probabilities and their
gradient or tangent (≈ 3 H S). The constants are an upper estimate checked against measured peaks
(docs/BENCHMARKS.md, "Attribution memory"); ``chunk = (budget − fixed) // row``, at least 1 (the
loop's footprint: a budget below one row cannot be honoured, and the pass then carries one row) and
at most ``cap`` (batching past it gains nothing measurable on a CPU, and smaller passes give
progress more often).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BYTES = 4  # the maths is float32 whatever the storage dtype (precision.py)
CPU_BUDGET = 1 << 30  # default on a CPU: 1 GiB above the loaded model
CPU_CAP = 16  # rows per pass on a CPU (docs/BENCHMARKS.md: chunk 16 vs 64 changes CPU time by a few %)
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


def row_bytes(d: Dims, through_logits: bool = False) -> int:
    """One row of a batched pass. ``through_logits``: the fallback paths that batch the head too
    (a (seq_len, vocab) gradient or tangent per row, ×3: logits, log-softmax, the head's input grad)."""
    trunk = BYTES * d.seq_len * (8 * d.d_model + 4 * d.d_ff + 3 * d.n_heads * d.seq_len)
    return trunk + (3 * BYTES * d.seq_len * d.vocab if through_logits else 0)


def fixed_bytes(d: Dims, path: str) -> int:
    """What a pass holds whatever its chunk: reverse mode's forward graph, and the head's logits."""
    head = BYTES * (4 * d.resp_len * d.vocab + 2 * d.seq_len * d.vocab)
    if path == "jvp":
        return head
    graph = BYTES * d.seq_len * d.n_layers * (8 * d.d_model + 3 * d.d_ff + 2 * d.n_heads * d.seq_len)
    return graph + head


def chunk_for_budget(d: Dims | None, path: str, budget: int, cap: int, through_logits: bool = False) -> int:
    """Rows per pass so that fixed + chunk × row stays within ``budget`` bytes; within [1, cap]."""
    if d is None:
        return cap
    free = budget - fixed_bytes(d, path)
    return max(1, min(cap, free // row_bytes(d, through_logits)))
