"""Per-architecture adapters (as data) and TransformerLens-style named weight views.

Conventions (STYLE.md "Weight views have written conventions"):

* Every view is used as ``x @ W``: a row vector ``x`` of size ``d_model`` times the view.
* The head axis comes before ``d_model``: ``W_Q(layer)`` is ``(n_heads, d_model, d_head)``.
* Views are fresh, detached float tensors (``float32`` unless asked otherwise) on the model's
  device. Editing a view never changes the model.
* Nothing is folded or centred silently. The pre-attention norm gain is a separate view
  (:meth:`WeightViews.attn_norm_gain`) and folding it is the explicit helper
  :func:`fold_norm_gain` (METHODS.md §2.2). Biases (Qwen2 q/k biases, GPT-2 LayerNorm and
  projection biases) are exposed but never applied: the method ignores them (METHODS.md §7).

Axis vocabulary used in the shape comments: ``n_layers``, ``n_heads`` (query heads H),
``n_kv_heads`` (key/value heads H_kv), ``d_model`` (D), ``d_head`` (d'), ``d_mlp`` (D_ff),
``d_vocab``.

Reading order: errors -> :class:`ArchitectureAdapter` -> ``ADAPTERS`` (the data) ->
:func:`get_adapter` -> :func:`fold_norm_gain` -> :class:`WeightViews`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------
# Errors


class ArchitectureError(ValueError):
    """A model does not have the modules its architecture adapter describes."""


class UnsupportedArchitectureError(ArchitectureError):
    """No adapter is registered for a model's HF architecture class."""


# ---------------------------------------------------------------------------------------------
# Adapters: one small frozen record per family


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where one HF architecture keeps the weights the probes read.

    Module paths are dotted ``get_submodule`` paths. ``layers`` is relative to the model; the
    attention, MLP and norm paths are relative to one decoder layer; ``embed`` / ``unembed`` are
    relative to the model.

    ``weight_layout`` says how a projection's ``.weight`` is stored:
    ``"out_in"`` for ``nn.Linear`` (``(out_features, in_features)``, so ``x @ W`` needs a transpose)
    and ``"in_out"`` for GPT-2's ``Conv1D`` (already ``(in_features, out_features)``).

    Head counts are read from the config attributes named here (``n_kv_heads_attr=None`` means
    no GQA: H_kv = H). ``d_head`` is derived from the q projection width / H, so families whose
    ``head_dim`` is not ``d_model / H`` (Gemma) are handled.

    The ``*_bias`` flags record which biases the family has by default (a Llama config with
    ``attention_bias=True`` has q/k biases too; :attr:`WeightViews.has_qk_bias` reads the
    loaded modules).
    """

    family: str
    layers: str
    attn_norm: str
    o: str
    up: str
    down: str
    embed: str
    unembed: str
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv_fused: str | None = None  # one projection producing [q | k | v] along its output axis
    gate: str | None = None  # gated MLPs (SwiGLU / GeGLU); None for GPT-2's plain MLP
    weight_layout: Literal["out_in", "in_out"] = "out_in"
    n_heads_attr: str = "num_attention_heads"
    n_kv_heads_attr: str | None = "num_key_value_heads"
    norm_gain_offset: float = 0.0  # Gemma RMSNorm multiplies by (1 + weight)
    qk_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = False


_LLAMA_LIKE = dict(
    layers="model.layers",
    attn_norm="input_layernorm",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    up="mlp.up_proj",
    gate="mlp.gate_proj",
    down="mlp.down_proj",
    embed="model.embed_tokens",
    unembed="lm_head",
)

ADAPTERS: Mapping[str, ArchitectureAdapter] = MappingProxyType({
    "LlamaForCausalLM": ArchitectureAdapter(family="llama", **_LLAMA_LIKE),
    "MistralForCausalLM": ArchitectureAdapter(family="mistral", **_LLAMA_LIKE),
    "Qwen2ForCausalLM": ArchitectureAdapter(family="qwen2", qk_bias=True, **_LLAMA_LIKE),
    "GemmaForCausalLM": ArchitectureAdapter(family="gemma", norm_gain_offset=1.0, **_LLAMA_LIKE),
    "Gemma2ForCausalLM": ArchitectureAdapter(family="gemma2", norm_gain_offset=1.0, **_LLAMA_LIKE),
    "GPT2LMHeadModel": ArchitectureAdapter(
        family="gpt2",
        layers="transformer.h",
        attn_norm="ln_1",
        qkv_fused="attn.c_attn",
        o="attn.c_proj",
        up="mlp.c_fc",
        down="mlp.c_proj",
        embed="transformer.wte",
        unembed="lm_head",
        weight_layout="in_out",
        n_heads_attr="n_head",
        n_kv_heads_attr=None,
        qk_bias=True,
        o_bias=True,
        mlp_bias=True,
        norm_bias=True,
    ),
})
"""HF architecture class name -> adapter (read-only at run time: add entries here, in the source)."""


def get_adapter(architecture: str) -> ArchitectureAdapter:
    """The adapter for an HF architecture class name, e.g. ``"LlamaForCausalLM"``.

    Raises :class:`UnsupportedArchitectureError` naming the architecture and the supported ones.
    """
    try:
        return ADAPTERS[architecture]
    except KeyError:
        supported = ", ".join(sorted(ADAPTERS))
        raise UnsupportedArchitectureError(
            f"unsupported architecture {architecture!r}; supported architectures: {supported}. "
            "To support it, add an adapter entry for it to ADAPTERS in probes/architectures.py."
        ) from None


# ---------------------------------------------------------------------------------------------
# Explicit norm folding (METHODS.md §2.2)


def fold_norm_gain(W: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Fold a norm gain into a read weight: ``W * g[:, None]`` along the ``d_model`` axis.

    METHODS.md §2.2: ``Wq = q_proj.weight^T * g[:, None]`` with ``g`` the *pre-attention* norm
    gain of the same layer (:meth:`WeightViews.attn_norm_gain`, which already includes Gemma's
    ``1 +``). Then ``normalise(x) @ fold_norm_gain(W, g) == (normalise(x) * g) @ W``, where
    ``normalise`` is the norm without its gain (and without a LayerNorm bias, which the method
    ignores).

    W:    (..., d_model, d_out), e.g. ``W_Q(layer)`` (n_heads, d_model, d_head)
    gain: (d_model,)
    returns a new tensor of W's shape; neither input is modified.
    """
    if gain.ndim != 1 or W.ndim < 2 or W.shape[-2] != gain.shape[0]:
        raise ValueError(
            f"fold_norm_gain expects W of shape (..., d_model, d_out) and gain of shape (d_model,); "
            f"got W {tuple(W.shape)} and gain {tuple(gain.shape)}"
        )
    return W * gain.to(W.dtype)[:, None]


# ---------------------------------------------------------------------------------------------
# Named views


class WeightViews:
    """TransformerLens-style read-only views of a loaded HF causal LM (``x @ W`` convention).

    Built from the model itself (looked up in ``ADAPTERS`` by ``type(model).__name__``); the
    model is referenced, not copied, and every call returns a fresh ``dtype`` copy.

    Dimensions: ``n_layers, n_heads, n_kv_heads, d_model, d_head, d_mlp, d_vocab`` (ints).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        self.architecture: str = type(model).__name__
        self.adapter: ArchitectureAdapter = get_adapter(self.architecture)
        self.dtype = dtype
        self._model = model
        self._layers = self._module(model, self.adapter.layers)
        config = model.config
        self.n_layers: int = len(self._layers)
        self.n_heads: int = int(getattr(config, self.adapter.n_heads_attr))
        kv_attr = self.adapter.n_kv_heads_attr
        n_kv = getattr(config, kv_attr, None) if kv_attr is not None else None
        self.n_kv_heads: int = int(n_kv) if n_kv is not None else self.n_heads
        embed = self._module(model, self.adapter.embed).weight  # (d_vocab, d_model)
        self.d_vocab: int = int(embed.shape[0])
        self.d_model: int = int(embed.shape[1])
        self.d_head: int = self._q_width(0) // self.n_heads
        self.d_mlp: int = int(self._in_out(self._layer_module(0, self.adapter.down).weight).shape[0])
        self._check_shapes()

    # -- module access ------------------------------------------------------------------------

    def _module(self, root: nn.Module, path: str) -> nn.Module:
        try:
            return root.get_submodule(path)
        except AttributeError:
            raise ArchitectureError(
                f"{self.architecture}: the adapter expects a module at {path!r}, which this model lacks; "
                "fix the entry in ADAPTERS (probes/architectures.py)"
            ) from None

    def _layer_module(self, layer: int, path: str) -> nn.Module:
        if not 0 <= layer < len(self._layers):
            raise IndexError(f"layer {layer} out of range: the model has {len(self._layers)} layers (0-based)")
        return self._module(self._layers[layer], path)

    def _in_out(self, weight: torch.Tensor) -> torch.Tensor:
        """A projection weight as (in_features, out_features), so that ``x @ W`` applies it."""
        return weight.t() if self.adapter.weight_layout == "out_in" else weight

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(self.dtype).clone()

    def _q_width(self, layer: int) -> int:
        """n_heads * d_head: output width of the q projection."""
        if self.adapter.qkv_fused is not None:
            fused = self._in_out(self._layer_module(layer, self.adapter.qkv_fused).weight)
            return int(fused.shape[1]) // 3  # GPT-2: [q | k | v], no GQA
        return int(self._in_out(self._layer_module(layer, self.adapter.q).weight).shape[1])

    def _check_shapes(self) -> None:
        if self.n_heads <= 0 or self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            raise ArchitectureError(
                f"{self.architecture}: n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.d_head * self.n_heads != self._q_width(0):
            raise ArchitectureError(
                f"{self.architecture}: q projection width {self._q_width(0)} is not n_heads={self.n_heads} x d_head"
            )

    def _projection(self, layer: int, which: Literal["q", "k", "v"]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight (d_model, n*d_head) and bias (n*d_head,) or None, in ``x @ W + b`` form."""
        if self.adapter.qkv_fused is not None:
            module = self._layer_module(layer, self.adapter.qkv_fused)
            index = "qkv".index(which)
            W = self._in_out(module.weight).chunk(3, dim=1)[index]  # (d_model, d_model) each
            b = module.bias.chunk(3)[index] if module.bias is not None else None
            return W, b
        module = self._layer_module(layer, getattr(self.adapter, which))
        return self._in_out(module.weight), module.bias

    def _split_heads(self, W: torch.Tensor, n: int) -> torch.Tensor:
        """(d_model, n*d_head) -> (n, d_model, d_head): head h owns columns h*d_head:(h+1)*d_head."""
        return W.reshape(W.shape[0], n, self.d_head).permute(1, 0, 2)

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        """(n_kv_heads, ...) -> (n_heads, ...): query head h uses kv head h // (H / H_kv)."""
        return t.repeat_interleave(self.n_heads // self.n_kv_heads, dim=0)

    # -- attention ----------------------------------------------------------------------------

    def W_Q(self, layer: int) -> torch.Tensor:
        """Query weights, (n_heads, d_model, d_head): ``x @ W_Q[h]`` is head h's query (no bias)."""
        W, _ = self._projection(layer, "q")
        return self._view(self._split_heads(W, self.n_heads))

    def W_K(self, layer: int, expand_gqa: bool = True) -> torch.Tensor:
        """Key weights, (n_heads, d_model, d_head); with ``expand_gqa=False`` (n_kv_heads, d_model, d_head).

        Expanded: row h is kv head ``h // (n_heads / n_kv_heads)`` (``repeat_interleave``, as HF's
        ``repeat_kv``; METHODS.md §2.2 and §7 "GQA").
        """
        W, _ = self._projection(layer, "k")
        heads = self._split_heads(W, self.n_kv_heads)  # (n_kv_heads, d_model, d_head)
        return self._view(self._expand(heads) if expand_gqa else heads)

    def W_V(self, layer: int, expand_gqa: bool = True) -> torch.Tensor:
        """Value weights, (n_heads, d_model, d_head) (or n_kv_heads rows unexpanded), like :meth:`W_K`."""
        W, _ = self._projection(layer, "v")
        heads = self._split_heads(W, self.n_kv_heads)
        return self._view(self._expand(heads) if expand_gqa else heads)

    def W_O(self, layer: int) -> torch.Tensor:
        """Output weights, (n_heads, d_head, d_model): ``z_h @ W_O[h]`` is head h's write to the residual."""
        W = self._in_out(self._layer_module(layer, self.adapter.o).weight)  # (n_heads*d_head, d_model)
        return self._view(W.reshape(self.n_heads, self.d_head, W.shape[1]))

    def b_Q(self, layer: int) -> torch.Tensor | None:
        """Query bias, (n_heads, d_head), or None when the model has none. Never applied by the views."""
        _, b = self._projection(layer, "q")
        return None if b is None else self._view(b.reshape(self.n_heads, self.d_head))

    def b_K(self, layer: int, expand_gqa: bool = True) -> torch.Tensor | None:
        """Key bias, (n_heads, d_head) (or (n_kv_heads, d_head) unexpanded), or None."""
        _, b = self._projection(layer, "k")
        if b is None:
            return None
        heads = b.reshape(self.n_kv_heads, self.d_head)
        return self._view(self._expand(heads) if expand_gqa else heads)

    @property
    def has_qk_bias(self) -> bool:
        """Whether the loaded q projection has a bias (Qwen2, GPT-2; Llama only with attention_bias)."""
        return self.b_Q(0) is not None

    def attn_norm_gain(self, layer: int) -> torch.Tensor:
        """Effective gain of the pre-attention norm, (d_model,).

        Llama/Mistral/Qwen2 RMSNorm and GPT-2 ``ln_1``: the stored ``weight``. Gemma/Gemma2 RMSNorm
        computes ``normalise(x) * (1 + weight)``, so this returns ``1 + weight`` (the adapter's
        ``norm_gain_offset``). Fold it with :func:`fold_norm_gain` (METHODS.md §2.2).
        """
        norm = self._layer_module(layer, self.adapter.attn_norm)
        return self._view(norm.weight) + self.adapter.norm_gain_offset

    def attn_norm_bias(self, layer: int) -> torch.Tensor | None:
        """Bias of the pre-attention norm, (d_model,), or None (RMSNorm). The method ignores it (§7)."""
        bias = getattr(self._layer_module(layer, self.adapter.attn_norm), "bias", None)
        return None if bias is None else self._view(bias)

    # -- MLP ----------------------------------------------------------------------------------

    def W_in(self, layer: int) -> torch.Tensor:
        """MLP input ("up") weights, (d_model, d_mlp)."""
        return self._view(self._in_out(self._layer_module(layer, self.adapter.up).weight))

    def W_gate(self, layer: int) -> torch.Tensor | None:
        """MLP gate weights, (d_model, d_mlp), or None for ungated MLPs (GPT-2)."""
        if self.adapter.gate is None:
            return None
        return self._view(self._in_out(self._layer_module(layer, self.adapter.gate).weight))

    def W_out(self, layer: int) -> torch.Tensor:
        """MLP output ("down") weights, (d_mlp, d_model): row i is FFN value vector i (METHODS.md §3.1).

        HF Llama ``down_proj.weight`` is (d_model, d_mlp) and is transposed; GPT-2's ``Conv1D``
        ``mlp.c_proj.weight`` is already (d_mlp, d_model). The MLP output is ``act_hidden @ W_out``.
        """
        return self._view(self._in_out(self._layer_module(layer, self.adapter.down).weight))

    # -- embeddings ---------------------------------------------------------------------------

    @property
    def W_E(self) -> torch.Tensor:
        """Input embedding, (d_vocab, d_model). Raw rows: Gemma's sqrt(d_model) scaling is not applied."""
        return self._view(self._module(self._model, self.adapter.embed).weight)

    @property
    def W_U(self) -> torch.Tensor:
        """Output embedding, (d_model, d_vocab): ``h @ W_U`` are the logits (``lm_head.weight`` transposed)."""
        return self._view(self._module(self._model, self.adapter.unembed).weight.t())

    @property
    def tied(self) -> bool:
        """True when input and output embeddings are the same tensor (GPT-2, Gemma, tied small models)."""
        embed = self._module(self._model, self.adapter.embed).weight
        unembed = self._module(self._model, self.adapter.unembed).weight
        return embed is unembed or (embed.shape == unembed.shape and embed.data_ptr() == unembed.data_ptr())

    def __repr__(self) -> str:
        return (
            f"WeightViews({self.architecture}: n_layers={self.n_layers}, n_heads={self.n_heads}, "
            f"n_kv_heads={self.n_kv_heads}, d_model={self.d_model}, d_head={self.d_head}, "
            f"d_mlp={self.d_mlp}, d_vocab={self.d_vocab}, tied={self.tied})"
        )
