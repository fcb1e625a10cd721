"""Errors of checkpoint loading and pairing (re-exported by :mod:`~probes.models.loading`).

No torch import here, so that light modules (:mod:`~probes.models.gguf`, fingerprints) can raise them.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint could not be loaded or used; base class of all loading errors."""


class PairMismatchError(CheckpointError):
    """Base and tuned checkpoints cannot be compared (shapes or tokenizers differ)."""
