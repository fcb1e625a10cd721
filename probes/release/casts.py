"""Release-like copies of a checkpoint, for calibrating and proving the release gate: dtype casts
(bf16, fp16), int8 round-to-nearest (per output row, symmetric, stored de-quantised as float32, as
transformers de-quantises a GGUF), an exact re-save, and a weight interpolation between two
checkpoints of one architecture (the "half-strength" tune of issue 21)."""

from __future__ import annotations

import shutil
from pathlib import Path

CAST_KINDS = ("bf16", "fp16", "int8", "resave")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "chat_template.jinja"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def int8_rtn(weight):
    """Symmetric per-row int8 round-to-nearest, returned de-quantised (same dtype as ``weight``)."""
    import torch

    scale = weight.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0
    return (torch.round(weight / scale).clamp(-127, 127) * scale).to(weight.dtype)


def cast_checkpoint(src: str | Path, dst: str | Path, kind: str) -> Path:
    """Save ``src`` (a local HF folder) as ``kind`` (one of CAST_KINDS) into ``dst``."""
    import torch
    from transformers import AutoModelForCausalLM

    if kind not in CAST_KINDS:
        raise ValueError(f"cast kind {kind!r}: expected one of {CAST_KINDS}")
    src, dst = Path(src), Path(dst)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        if kind == "int8":
            for name, p in model.named_parameters():
                if p.ndim == 2:  # matrices (embeddings included); norms and biases stay float
                    p.copy_(int8_rtn(p))
        elif kind in ("bf16", "fp16"):
            model = model.to(torch.bfloat16 if kind == "bf16" else torch.float16)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, safe_serialization=True)
    _copy_tokenizer(src, dst)
    return dst


def interpolate(base: str | Path, tuned: str | Path, ratio: float, dst: str | Path) -> Path:
    """Weights ``base + ratio * (tuned - base)`` (ratio 1 = tuned), with the tuned tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    b = AutoModelForCausalLM.from_pretrained(Path(base), dtype=torch.float32)
    t = AutoModelForCausalLM.from_pretrained(Path(tuned), dtype=torch.float32)
    tb = dict(b.named_parameters())
    with torch.no_grad():
        for name, p in t.named_parameters():
            p.copy_(tb[name] + ratio * (p - tb[name]))
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    t.save_pretrained(dst, safe_serialization=True)
    _copy_tokenizer(Path(tuned), dst)
    return dst


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj")


def lora_merged(model, scale: float, rank: int = 8, relative: float = 0.1, seed: int = 0):
    """A copy of ``model`` (a Llama-like torch model, in memory) with a seeded LoRA merged at ``scale``
    times its configured scaling (peft ``set_scale``): 1 is the right merge; 4 misreads alpha / r the
    way a wrong merge script does; 0 forgets the adapter. Each adapter's B is rescaled so that B·A
    has ``relative`` times the RMS of the weight it adapts (a fine-tune-sized update), so the same
    seed gives the same update whatever the model."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=list(LORA_TARGETS))
        peft_model = get_peft_model(copy.deepcopy(model), config)
    with torch.no_grad():
        for module in peft_model.modules():
            if isinstance(module, LoraLayer):
                B, A = module.lora_B["default"].weight, module.lora_A["default"].weight
                B.mul_(relative * module.get_base_layer().weight.pow(2).mean().sqrt() / (B @ A).pow(2).mean().sqrt())
                module.set_scale("default", scale)
    return peft_model.merge_and_unload()
