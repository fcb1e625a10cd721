"""Tiny CUDA helpers that are safe to call on CPU-only machines."""

from __future__ import annotations

import torch


def cuda_available() -> bool:
    """True when PyTorch can use at least one CUDA device."""
    return torch.cuda.is_available()


def free_memory_bytes(device: str | torch.device) -> int | None:
    """Free memory of a CUDA device in bytes (``torch.cuda.mem_get_info``); None for CPU or without CUDA.

    ``"cuda"`` without an index means the current CUDA device.
    """
    device = torch.device(device)
    if device.type != "cuda" or not cuda_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, _total = torch.cuda.mem_get_info(index)
    return int(free)
