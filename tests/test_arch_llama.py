"""Weight views of the Llama family (Llama, Mistral, Qwen2, Gemma) against the modules' own forward.

Each check runs the HF module on a random input and compares with ``x @ view`` so a wrong
transpose, head split or GQA mapping fails (torch.testing.assert_close).
"""

from __future__ import annotations

import pytest
import torch
from builders import tiny_llama, tiny_model
from torch.testing import assert_close
from transformers.models.llama.modeling_llama import repeat_kv

from shiftcheck.probes.models.architectures import ADAPTERS, WeightViews, fold_norm_gain
from shiftcheck.probes.models.loading import LoadOptions, load_checkpoint


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_checkpoint(tiny_llama(tmp_path_factory.mktemp("llama"), gqa=True, seed=0))


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_round_trip_dimensions_and_shapes(llama):
    v = llama.views
    assert llama.architecture == "LlamaForCausalLM"
    assert not llama.model.training
    assert (v.n_layers, v.n_heads, v.n_kv_heads, v.d_model, v.d_head, v.d_mlp) == (2, 4, 2, 32, 8, 64)
    assert v.d_vocab == len(llama.tokenizer)
    assert v.W_Q(1).shape == (4, 32, 8)
    assert v.W_K(1).shape == (4, 32, 8)
    assert v.W_K(1, expand_gqa=False).shape == (2, 32, 8)
    assert v.W_out(1).shape == (64, 32)
    assert v.W_E.shape == (v.d_vocab, 32)
    assert v.W_U.shape == (32, v.d_vocab)
    assert v.attn_norm_gain(0).shape == (32,)
    assert not v.tied and not v.has_qk_bias


def test_views_are_detached_float_copies(llama):
    v = llama.views
    W = v.W_Q(0)
    assert W.dtype == torch.float32 and not W.requires_grad
    W.zero_()
    assert v.W_Q(0).abs().sum() > 0  # editing a view never edits the model


@pytest.mark.parametrize("layer", [0, 1])
def test_W_Q_head_h_gives_q_proj_columns_of_head_h(llama, layer):
    attn = llama.model.model.layers[layer].self_attn
    v = llama.views
    x = _x(5, v.d_model, seed=layer)
    with torch.no_grad():
        q = attn.q_proj(x).view(5, v.n_heads, v.d_head)  # HF splits heads exactly like this
    W_Q = v.W_Q(layer)
    for h in range(v.n_heads):
        assert_close(x @ W_Q[h], q[:, h, :])


def test_W_K_expansion_matches_hf_repeat_kv(llama):
    attn = llama.model.model.layers[0].self_attn
    v = llama.views
    x = _x(5, v.d_model, seed=3)
    with torch.no_grad():
        k = attn.k_proj(x).view(1, 5, v.n_kv_heads, v.d_head).transpose(1, 2)  # (1, n_kv_heads, 5, d_head)
        k_per_query_head = repeat_kv(k, v.n_heads // v.n_kv_heads)[0]  # (n_heads, 5, d_head)
    W_K = v.W_K(0)
    W_K_kv = v.W_K(0, expand_gqa=False)
    for h in range(v.n_heads):
        assert_close(x @ W_K[h], k_per_query_head[h])
        assert_close(W_K[h], W_K_kv[h // (v.n_heads // v.n_kv_heads)])
    assert not torch.equal(W_K_kv[0], W_K_kv[1])  # the mapping is not trivially satisfied


def test_fold_norm_gain_reproduces_q_of_normed_input(llama):
    """METHODS §2.2: q_proj(input_layernorm(x)) == rms_normalise(x) @ fold(W_Q, g)."""
    layer = llama.model.model.layers[1]
    v = llama.views
    x = _x(5, v.d_model, seed=4)
    with torch.no_grad():
        q = layer.self_attn.q_proj(layer.input_layernorm(x)).view(5, v.n_heads, v.d_head)
    unit = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + layer.input_layernorm.variance_epsilon)
    folded = fold_norm_gain(v.W_Q(1), v.attn_norm_gain(1))
    for h in range(v.n_heads):
        assert_close(unit @ folded[h], q[:, h, :])
    with pytest.raises(ValueError, match="d_model"):
        fold_norm_gain(v.W_Q(1), torch.ones(v.d_model + 1))


def test_W_out_rows_are_ffn_value_vectors(llama):
    mlp = llama.model.model.layers[0].mlp
    x = _x(5, llama.views.d_model, seed=5)
    with torch.no_grad():
        expected = mlp(x)
        hidden = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)  # (5, d_mlp)
    assert_close(hidden @ llama.views.W_out(0), expected)
    assert_close(mlp.act_fn(x @ llama.views.W_gate(0)) * (x @ llama.views.W_in(0)) @ llama.views.W_out(0), expected)


def test_W_U_gives_lm_head_logits_and_W_E_the_embedding(llama):
    v = llama.views
    h = _x(5, v.d_model, seed=6)
    ids = torch.tensor([1, 4, 7, 9])
    with torch.no_grad():
        logits = llama.model.lm_head(h)
        embedded = llama.model.model.embed_tokens(ids)
    assert_close(h @ v.W_U, logits)
    assert_close(v.W_E[ids], embedded)


def test_W_O_and_W_V_orientation(llama):
    attn = llama.model.model.layers[0].self_attn
    v = llama.views
    x = _x(5, v.d_model, seed=7)
    z = _x(5, v.n_heads * v.d_head, seed=8)
    with torch.no_grad():
        out = attn.o_proj(z)
        val = attn.v_proj(x).view(5, v.n_kv_heads, v.d_head)
    per_head = z.view(5, v.n_heads, v.d_head)
    W_O = v.W_O(0)
    assert_close(sum(per_head[:, h] @ W_O[h] for h in range(v.n_heads)), out)
    assert_close(x @ v.W_V(0)[3], val[:, 3 // 2])


def test_without_gqa_kv_heads_equal_query_heads(tmp_path):
    ckpt = load_checkpoint(tiny_llama(tmp_path, gqa=False, seed=1))
    assert ckpt.views.n_kv_heads == ckpt.views.n_heads == 4
    assert_close(ckpt.views.W_K(0), ckpt.views.W_K(0, expand_gqa=False))


def test_load_options_dtype_bf16_gives_float32_views(tmp_path):
    ckpt = load_checkpoint(tiny_llama(tmp_path), LoadOptions(dtype="bf16"))
    assert ckpt.model.dtype == torch.bfloat16
    assert ckpt.views.W_Q(0).dtype == torch.float32


# --- other families through the same Llama-like adapter ------------------------------------


@pytest.mark.parametrize("family", ["mistral", "qwen2", "gemma"])
def test_llama_like_families_q_and_k(family):
    model = tiny_model(family, seed=2)
    v = WeightViews(model)
    attn = model.model.layers[0].self_attn
    x = _x(5, v.d_model, seed=9)
    with torch.no_grad():
        q = attn.q_proj(x).view(5, v.n_heads, v.d_head)
        k = attn.k_proj(x).view(5, v.n_kv_heads, v.d_head)
    b_Q, b_K = v.b_Q(0), v.b_K(0)
    for h in range(v.n_heads):
        q_view = x @ v.W_Q(0)[h] + (b_Q[h] if b_Q is not None else 0)
        k_view = x @ v.W_K(0)[h] + (b_K[h] if b_K is not None else 0)
        assert_close(q_view, q[:, h])
        assert_close(k_view, k[:, h // 2])
    assert v.has_qk_bias == ADAPTERS[type(model).__name__].qk_bias == (family == "qwen2")


def test_mistral_loads_through_load_checkpoint(tmp_path):
    from builders import save_checkpoint, word_tokenizer

    tok = word_tokenizer()
    path = save_checkpoint(tiny_model("mistral", vocab_size=len(tok)), tok, tmp_path / "mistral")
    ckpt = load_checkpoint(path)
    assert ckpt.architecture == "MistralForCausalLM"
    assert ckpt.views.W_K(0).shape == (4, 32, 8)


def test_gemma_gain_is_one_plus_weight_and_head_dim_is_read_from_weights():
    model = tiny_model("gemma", seed=3)
    v = WeightViews(model)
    norm = model.model.layers[0].input_layernorm
    assert v.d_head == 16 and v.W_Q(0).shape == (4, 32, 16)  # head_dim != d_model / n_heads
    assert_close(v.attn_norm_gain(0), 1.0 + norm.weight.detach())
    x = _x(5, v.d_model, seed=10)
    unit = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    with torch.no_grad():
        q = model.model.layers[0].self_attn.q_proj(norm(x)).view(5, v.n_heads, v.d_head)
    folded = fold_norm_gain(v.W_Q(0), v.attn_norm_gain(0))
    assert_close(unit @ folded[2], q[:, 2])
    assert v.tied


def test_qwen2_with_word_tokenizer_is_refused_not_silently_wrong(tmp_path):
    """WORLD_NOTES.md: AutoTokenizer rebuilds a word-level tokenizer saved beside a Qwen2 config."""
    from builders import save_checkpoint, word_tokenizer

    from shiftcheck.probes.models.loading import CheckpointError

    tok = word_tokenizer()
    path = save_checkpoint(tiny_model("qwen2", vocab_size=len(tok)), tok, tmp_path / "qwen2")
    with pytest.raises(CheckpointError, match="does not reproduce its tokenizer.json"):
        load_checkpoint(path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; CPU machines check the CPU path")
def test_load_on_cuda_keeps_views_on_the_model_device(tmp_path):
    ckpt = load_checkpoint(tiny_llama(tmp_path), LoadOptions(device="cuda:0"))
    assert ckpt.model.device.type == "cuda"
    assert ckpt.views.W_Q(0).device.type == "cuda"
