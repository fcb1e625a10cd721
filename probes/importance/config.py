"""Probe 1 configuration; imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

CODE_VERSION = "importance-3"  # bump when any number probe 1 produces changes
# 3: the batched VJP and JVP stop at the final hidden state (attribution.py); equal to the loop to
#    float tolerance, which can still move a ceil level of a stored matrix


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
    dtype: str = "float32"  # weight storage dtype; the maths is always float32 (precision.py)
    chunk_size: int | None = None  # response tokens (vjp) or prompt tokens (jvp) per pass; None = sized to memory
    # bytes one batched pass may use (--attribution-memory; memory.py); None: 1 GiB on a CPU, half the
    # free memory on CUDA. Like chunk_size it is NOT in cache_config: it only sets how many rows share a
    # pass, and rows are independent (each row's gradient is its own vmapped backward or JVP), so the
    # numbers agree across budgets to float rounding (tests/test_attribution_seam.py); keying it would
    # recompute every cached matrix when a user with a smaller machine lowers it.
    attribution_memory: int | None = None

    def cache_config(self) -> dict:
        """The fields that change the stored matrices (b and p act at analysis time). The mode is
        included because paths agree only to float tolerance, which can move a ceil level."""
        return {"L": self.L, "max_new_tokens": self.max_new_tokens, "chat_template": self.chat_template,
                "mode": self.mode, "dtype": self.dtype}


MODES = ("auto", "vjp", "jvp", "loop")
