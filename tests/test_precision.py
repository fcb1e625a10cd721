"""bfloat16 storage with float32 maths (METHODS §7): the upcast is exact and always undone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from builders import tiny_model
from shiftcheck.probes.importance import AttributionError, PromptEncoding, normalise, raw_importance
from shiftcheck.probes.importance.precision import fp32_compute


def _instances(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        prompt = tuple(int(i) for i in rng.integers(4, 30, 8))
        yield PromptEncoding((1,), prompt, tuple(map(str, prompt)), np.ones(8, bool), ""), \
            [int(i) for i in rng.integers(4, 30, 16)]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("mode", ["loop", "vjp", "jvp"])
def test_bf16_storage_gives_the_float32_maths_of_the_same_weights(family, mode):
    stored = tiny_model(family, seed=1).eval().to(torch.bfloat16)
    upcast = copy.deepcopy(stored).float()  # the same (rounded) weights held in float32
    for enc, resp in _instances(4):
        np.testing.assert_array_equal(normalise(raw_importance(stored, enc, resp, mode)),
                                      normalise(raw_importance(upcast, enc, resp, mode)))
    assert next(stored.parameters()).dtype == torch.bfloat16  # storage untouched


def test_bf16_storage_agrees_with_the_original_float32_model_on_almost_every_level():
    original = tiny_model("llama", seed=0).eval()
    stored = copy.deepcopy(original).to(torch.bfloat16)
    agree = [float((normalise(raw_importance(original, enc, resp, "jvp")) ==
                    normalise(raw_importance(stored, enc, resp, "jvp"))).mean()) for enc, resp in _instances(10)]
    assert np.mean(agree) >= 0.98, agree  # measured 0.991 (jvp) and 0.987 (vjp): weight rounding, not maths


def test_the_patch_is_removed_even_when_the_body_raises():
    model = tiny_model("llama", seed=0).eval().to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="boom"), fp32_compute(model):
        assert any("forward" in vars(m) for m in model.modules())
        raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in model.modules())


def test_weights_that_cannot_carry_gradients_are_refused_with_the_reason():
    model = tiny_model("llama", seed=0).eval()
    for p in model.parameters():
        p.data = p.data.to(torch.float64)
    enc, resp = next(_instances(1))
    with pytest.raises(AttributionError, match="float32 gradients"):
        raw_importance(model, enc, resp, "vjp")
