"""Half-precision storage, float32 maths (METHODS §7: attribution gradients must be fp32).

A checkpoint loaded in bfloat16/float16 keeps its weights in that dtype; while attribution runs,
every linear projection casts its own weight to the activations' dtype (float32) at the moment it
is used, so only the module being computed has a float32 copy. The input embeddings are float32
already (``input_embeddings``), norms promote to float32 by type promotion, so the whole forward
and its gradients are float32. Forward mode (JVP) keeps no copy after a module has run; reverse
mode keeps the copies its backward needs until the chunk's backward is done.

Half-precision *gradients* are never computed: there is no switch for that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F


def _linear_fp32(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.to(x.dtype)
    return F.linear(x, self.weight.to(x.dtype), bias)


def _conv1d_fp32(self, x: torch.Tensor) -> torch.Tensor:  # GPT-2's Conv1D: x @ W + b, W is (in, out)
    size_out = x.size()[:-1] + (self.nf,)
    out = torch.addmm(self.bias.to(x.dtype), x.view(-1, x.size(-1)), self.weight.to(x.dtype))
    return out.view(size_out)


def _layer_norm_fp32(self: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    weight = None if self.weight is None else self.weight.to(x.dtype)
    bias = None if self.bias is None else self.bias.to(x.dtype)
    return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


def storage_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@contextlib.contextmanager
def fp32_compute(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` in float32 whatever its storage dtype; a no-op for float32 weights. The patch is
    per instance and always removed on exit."""
    if storage_dtype(model) == torch.float32:
        yield
        return
    from transformers.pytorch_utils import Conv1D

    patched: list[torch.nn.Module] = []
    try:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.forward = _linear_fp32.__get__(module)
                patched.append(module)
            elif isinstance(module, torch.nn.LayerNorm):  # RMSNorms promote by themselves; LayerNorm does not
                module.forward = _layer_norm_fp32.__get__(module)
                patched.append(module)
            elif isinstance(module, Conv1D):
                module.forward = _conv1d_fp32.__get__(module)
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward
