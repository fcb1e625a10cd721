"""Weight views of GPT-2: fused ``c_attn`` split into q/k/v and ``Conv1D`` (in x out) orientation."""

from __future__ import annotations

import pytest
import torch
from builders import tiny_gpt2
from torch.testing import assert_close

from shiftcheck.probes.models.architectures import fold_norm_gain
from shiftcheck.probes.models.loading import load_checkpoint


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return load_checkpoint(tiny_gpt2(tmp_path_factory.mktemp("gpt2"), seed=0))


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_round_trip_dimensions_and_shapes(gpt2):
    v = gpt2.views
    assert gpt2.architecture == "GPT2LMHeadModel"
    assert (v.n_layers, v.n_heads, v.n_kv_heads, v.d_model, v.d_head, v.d_mlp) == (2, 4, 4, 32, 8, 128)
    assert v.W_Q(0).shape == v.W_K(0).shape == v.W_K(0, expand_gqa=False).shape == (4, 32, 8)
    assert v.W_out(0).shape == (128, 32)
    assert v.W_E.shape == (v.d_vocab, 32) and v.W_U.shape == (32, v.d_vocab)
    assert v.has_qk_bias and v.attn_norm_bias(0) is not None


@pytest.mark.parametrize("layer", [0, 1])
def test_fused_c_attn_split_matches_attention_q_and_k(gpt2, layer):
    attn = gpt2.model.transformer.h[layer].attn
    v = gpt2.views
    x = _x(1, 5, v.d_model, seed=layer)
    with torch.no_grad():
        q, k, _ = attn.c_attn(x).split(attn.split_size, dim=2)  # exactly as GPT2Attention.forward
        q = q.view(1, 5, v.n_heads, v.d_head)[0]
        k = k.view(1, 5, v.n_heads, v.d_head)[0]
    W_Q, W_K, b_Q, b_K = v.W_Q(layer), v.W_K(layer), v.b_Q(layer), v.b_K(layer)
    for h in range(v.n_heads):
        assert_close(x[0] @ W_Q[h] + b_Q[h], q[:, h])
        assert_close(x[0] @ W_K[h] + b_K[h], k[:, h])


def test_fold_norm_gain_with_layernorm(gpt2):
    """ln_1(x) = unit(x) * g + beta; the folded view covers the g part, the bias is left out (§7)."""
    block = gpt2.model.transformer.h[0]
    v = gpt2.views
    x = _x(5, v.d_model, seed=2)
    unit = torch.nn.functional.layer_norm(x, (v.d_model,), eps=block.ln_1.eps)
    with torch.no_grad():
        q = block.attn.c_attn(block.ln_1(x))[:, : v.d_model].view(5, v.n_heads, v.d_head)
    folded = fold_norm_gain(v.W_Q(0), v.attn_norm_gain(0))
    beta, b_Q = v.attn_norm_bias(0), v.b_Q(0)
    for h in range(v.n_heads):
        assert_close(unit @ folded[h] + beta @ v.W_Q(0)[h] + b_Q[h], q[:, h])


def test_W_out_rows_are_c_proj_value_vectors(gpt2):
    mlp = gpt2.model.transformer.h[1].mlp
    x = _x(5, gpt2.views.d_model, seed=3)
    with torch.no_grad():
        expected = mlp(x)  # eval mode: dropout off
        hidden = mlp.act(mlp.c_fc(x))  # (5, d_mlp)
    assert_close(hidden @ gpt2.views.W_out(1) + mlp.c_proj.bias.detach(), expected)
    assert_close(x @ gpt2.views.W_in(1) + mlp.c_fc.bias.detach(), mlp.c_fc(x).detach())
    assert gpt2.views.W_gate(1) is None


def test_tied_embeddings(gpt2):
    v = gpt2.views
    assert v.tied
    assert_close(v.W_U, v.W_E.T)
    h = _x(3, v.d_model, seed=4)
    with torch.no_grad():
        logits = gpt2.model.lm_head(h)
    assert_close(h @ v.W_U, logits)


def test_W_O_orientation(gpt2):
    attn = gpt2.model.transformer.h[0].attn
    v = gpt2.views
    z = _x(5, v.d_model, seed=5)
    with torch.no_grad():
        out = attn.c_proj(z)
    W_O = v.W_O(0)
    per_head = z.view(5, v.n_heads, v.d_head)
    assert_close(sum(per_head[:, h] @ W_O[h] for h in range(v.n_heads)) + attn.c_proj.bias.detach(), out)
