"""Probe 1 configuration; imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

CODE_VERSION = "importance-2"  # bump when any number probe 1 produces changes


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

    def cache_config(self) -> dict:
        """The fields that change the stored matrices (b and p act at analysis time). The mode is
        included because paths agree only to float tolerance, which can move a ceil level."""
        return {"L": self.L, "max_new_tokens": self.max_new_tokens, "chat_template": self.chat_template,
                "mode": self.mode, "dtype": self.dtype}


MODES = ("auto", "vjp", "jvp", "loop")
