"""Errors of probe 1 (attribution); each message names the instance."""

from __future__ import annotations


class AttributionError(RuntimeError):
    """Attribution of one instance could not be computed; the message names the instance."""


class AttributionOOMError(AttributionError):
    """Out of memory even with a chunk of one response token."""


class NonFiniteAttributionError(AttributionError):
    """The gradient x input matrix holds NaN or inf (usually fp16/bf16 weights or a broken checkpoint)."""
