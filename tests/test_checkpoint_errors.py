"""Loading and pairing errors: each message must name its cause (and the valid values, where any)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from builders import DEFAULT_WORDS, save_checkpoint, tiny_gpt2, tiny_llama, tiny_model, word_tokenizer
from torch.testing import assert_close

from shiftcheck.probes.models import loading as ckpt_module
from shiftcheck.probes.models.architectures import ADAPTERS, UnsupportedArchitectureError, WeightViews, get_adapter
from shiftcheck.probes.models.loading import (
    CheckpointError,
    LoadOptions,
    PairMismatchError,
    check_tokenizer,
    load_checkpoint,
    resolve_device,
    resolve_dtype,
    validate_pair,
)

# --- paths and files -----------------------------------------------------------------------


def test_missing_local_path(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(CheckpointError, match="checkpoint not found") as info:
        load_checkpoint(missing)
    assert str(missing) in str(info.value)


def test_missing_relative_path_does_not_go_to_the_hub(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the hub must not be contacted for a path")

    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", no_network)
    with pytest.raises(CheckpointError, match="checkpoint not found: .*definitely_missing_dir"):
        load_checkpoint("./definitely_missing_dir/model")


def test_path_to_a_file_is_not_a_checkpoint(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(file)


def test_folder_without_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no config.json") as info:
        load_checkpoint(tmp_path)
    assert "PEFT adapter" in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "overwrite_header"])
def test_corrupt_safetensors_names_the_file(tmp_path, damage):
    path = tiny_llama(tmp_path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 16 + data[16:])
    with pytest.raises(CheckpointError, match="corrupt safetensors file") as info:
        load_checkpoint(path)
    assert str(weights) in str(info.value)


def test_only_pytorch_bin_is_refused_without_unpickling(tmp_path, monkeypatch):
    path = tiny_llama(tmp_path)
    model = tiny_model("llama", vocab_size=len(word_tokenizer()))
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(CheckpointError, match="only safetensors are accepted") as info:
        load_checkpoint(path)
    assert "pytorch_model.bin" in str(info.value) and "safe_serialization=True" in str(info.value)


def test_folder_without_any_weights(tmp_path):
    path = tiny_llama(tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model weights \(\*\.safetensors\)"):
        load_checkpoint(path)


def test_hub_failure_names_the_id_and_the_hub(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", offline)
    with pytest.raises(CheckpointError, match="hub may be unreachable") as info:
        load_checkpoint("some-org/some-model", LoadOptions(revision="v1.0"))
    assert "'some-org/some-model'" in str(info.value) and "'v1.0'" in str(info.value)


def test_trust_remote_code_is_passed_only_when_asked(tmp_path, monkeypatch):
    import transformers

    seen: list[dict] = []
    original = transformers.AutoConfig.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", spy)
    path = tiny_llama(tmp_path)
    load_checkpoint(path)
    n_plain = len(seen)  # AutoTokenizer also reads the config
    load_checkpoint(path, LoadOptions(trust_remote_code=True))
    assert "trust_remote_code" not in seen[0]
    assert not any(kwargs.get("trust_remote_code") for kwargs in seen[:n_plain])
    assert seen[n_plain]["trust_remote_code"] is True


# --- architectures ---------------------------------------------------------------------------


def _tiny_opt(tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    tok = word_tokenizer()
    config = OPTConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        word_embed_proj_dim=32, max_position_embeddings=64,
    )
    model = OPTForCausalLM(config)
    return model, save_checkpoint(model, tok, tmp_path / "opt")


def test_unsupported_architecture_is_named_with_the_supported_list(tmp_path, monkeypatch):
    model, path = _tiny_opt(tmp_path)

    def no_weights(*args, **kwargs):
        raise AssertionError("weights must not be read for an unsupported architecture")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_weights)
    with pytest.raises(CheckpointError, match="OPTForCausalLM") as info:
        load_checkpoint(path)
    assert isinstance(info.value, UnsupportedArchitectureError)
    for name in ("LlamaForCausalLM", "GPT2LMHeadModel", "Qwen2ForCausalLM", "ADAPTERS", "probes/architectures.py"):
        assert name in str(info.value)
    with pytest.raises(UnsupportedArchitectureError, match="OPTForCausalLM"):
        WeightViews(model)


def test_adapter_registry_is_read_only():
    with pytest.raises(TypeError):
        ADAPTERS["OPTForCausalLM"] = get_adapter("LlamaForCausalLM")  # type: ignore[index]


# --- device and dtype --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "cpu:0", "mps", ""])
def test_bad_device_strings_list_the_accepted_values(bad):
    with pytest.raises(CheckpointError, match="accepted values: auto, cpu, cuda, cuda:N"):
        resolve_device(bad)
    with pytest.raises(CheckpointError, match="unknown device"):
        LoadOptions(device=bad)


def test_cuda_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CheckpointError, match="CUDA is not available"):
        resolve_device("cuda:7")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")


def test_cuda_index_beyond_device_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CheckpointError, match=r"only 1 CUDA device\(s\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize("bad", ["float8", "fp64", "half-ish", ""])
def test_bad_dtype_lists_the_accepted_values(bad):
    with pytest.raises(CheckpointError, match="unknown dtype .*accepted values: float32, fp32, float16"):
        LoadOptions(dtype=bad)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("fp32", torch.float32), ("float16", torch.float16), ("BF16", torch.bfloat16), ("auto", "auto")],
)
def test_dtype_aliases(spec, expected):
    assert resolve_dtype(spec) == expected


# --- tokenizers ----------------------------------------------------------------------------


def test_slow_tokenizer_is_refused():
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(CheckpointError, match="slow tokenizer .*offset"):
        check_tokenizer(SlowTokenizer(), None, origin="somewhere")


def test_tokenizer_json_disagreeing_with_loaded_vocab(tmp_path):
    path = tiny_llama(tmp_path)
    data = json.loads((path / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["sea"], vocab["cat"] = vocab["cat"], vocab["sea"]  # the loaded tokenizer keeps the old ids
    other = tmp_path / "other_tokenizer.json"
    other.write_text(json.dumps(data))
    ckpt = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not match") as info:
        check_tokenizer(ckpt.tokenizer, other, origin=str(path))
    assert "'sea'" in str(info.value) and "'cat'" in str(info.value)


# --- pairs -----------------------------------------------------------------------------------


def test_identical_pair_is_accepted(tmp_path):
    base = load_checkpoint(tiny_llama(tmp_path, seed=0))
    tuned = load_checkpoint(tiny_llama(tmp_path, seed=1))
    info = validate_pair(base, tuned)
    assert info.shared_vocab == len(base.tokenizer) and info.warnings == ()


def test_mismatched_tokenizers_list_tokens_with_both_ids(tmp_path):
    base = load_checkpoint(tiny_llama(tmp_path, seed=0))
    shuffled = list(reversed(DEFAULT_WORDS))
    tuned = load_checkpoint(tiny_llama(tmp_path, seed=1, vocab=shuffled, name="reversed"))
    with pytest.raises(PairMismatchError, match="tokenizers differ") as info:
        validate_pair(base, tuned)
    message = str(info.value)
    n_moved = sum(a != b for a, b in zip(DEFAULT_WORDS, shuffled, strict=True))
    assert f"{n_moved} token(s)" in message
    first = DEFAULT_WORDS[0]
    assert f"'{first}': base=4 tuned={4 + len(DEFAULT_WORDS) - 1}" in message
    assert len([line for line in message.splitlines() if "base=" in line]) == 10  # capped at 10


def test_base_token_missing_in_tuned(tmp_path):
    base = load_checkpoint(tiny_llama(tmp_path, seed=0))
    words = [w if w != "poem" else "haiku" for w in DEFAULT_WORDS]
    tuned = load_checkpoint(tiny_llama(tmp_path, seed=1, vocab=words, name="haiku"))
    with pytest.raises(PairMismatchError, match="2 token\\(s\\)") as info:
        validate_pair(base, tuned)
    assert "'poem': base=24 tuned=missing" in str(info.value)
    assert "'haiku': base=missing tuned=24" in str(info.value)


def _tuned_with_added_special_token(tmp_path):
    tok = word_tokenizer()
    tok.add_tokens(["<|im_end|>"], special_tokens=True)
    model = tiny_model("llama", vocab_size=len(word_tokenizer()), seed=5)
    model.resize_token_embeddings(len(tok))
    return save_checkpoint(model, tok, tmp_path / "tuned_added")


def test_tuned_adding_a_special_token_is_accepted_with_a_warning(tmp_path):
    base = load_checkpoint(tiny_llama(tmp_path, seed=0))
    tuned = load_checkpoint(_tuned_with_added_special_token(tmp_path))
    assert tuned.views.d_vocab == base.views.d_vocab + 1
    info = validate_pair(base, tuned)
    assert info.shared_vocab == len(base.tokenizer) == base.views.d_vocab
    joined = "\n".join(info.warnings)
    assert "'<|im_end|>'" in joined and "embedding rows differ" in joined
    # the reverse direction (base has a token the tuned lacks) is a mismatch
    with pytest.raises(PairMismatchError, match="tokenizers differ"):
        validate_pair(tuned, base)


def test_different_eos_is_a_warning_and_listed(tmp_path):
    base = load_checkpoint(tiny_llama(tmp_path, seed=0))
    tok = word_tokenizer()
    tok.add_tokens(["<|im_end|>"], special_tokens=True)
    tok.eos_token = "<|im_end|>"
    model = tiny_model("llama", vocab_size=len(tok), seed=6)
    tuned = load_checkpoint(save_checkpoint(model, tok, tmp_path / "tuned_eos"))
    info = validate_pair(base, tuned)
    assert any("EOS: base='</s>'" in w and "'<|im_end|>'" in w for w in info.warnings)


def test_mismatched_sizes_list_every_difference(tmp_path):
    base = load_checkpoint(tiny_llama(tmp_path, gqa=True))
    tok = word_tokenizer()
    tuned_model = tiny_model("llama", vocab_size=len(tok), gqa=False, intermediate_size=48)
    tuned = load_checkpoint(save_checkpoint(tuned_model, tok, tmp_path / "wider"))
    with pytest.raises(PairMismatchError) as info:
        validate_pair(base, tuned)
    message = str(info.value)
    assert "n_kv_heads: base=2 tuned=4" in message
    assert "d_mlp: base=64 tuned=48" in message
    assert "n_layers" not in message


def test_different_architectures(tmp_path):
    base = load_checkpoint(tiny_llama(tmp_path))
    tuned = load_checkpoint(tiny_gpt2(tmp_path))
    with pytest.raises(PairMismatchError, match="architecture: base=LlamaForCausalLM tuned=GPT2LMHeadModel"):
        validate_pair(base, tuned)


# --- PEFT adapters ---------------------------------------------------------------------------


def _lora_adapter(base_path, directory):
    peft = pytest.importorskip("peft", reason="LoRA merge test needs the optional dependency peft")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_path, use_safetensors=True)
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    lora = peft.get_peft_model(model, config)
    lora.save_pretrained(directory, safe_serialization=True)
    return lora.merge_and_unload()


def test_lora_adapter_is_merged_into_the_views(tmp_path):
    base_path = tiny_llama(tmp_path)
    merged = _lora_adapter(base_path, tmp_path / "lora")
    base = load_checkpoint(base_path)
    tuned = load_checkpoint(base_path, LoadOptions(adapter=str(tmp_path / "lora")))
    expected = WeightViews(merged)
    assert_close(tuned.views.W_Q(1), expected.W_Q(1))
    assert_close(tuned.views.W_out(0), expected.W_out(0))
    assert not torch.equal(tuned.views.W_Q(1), base.views.W_Q(1))
    assert tuned.architecture == "LlamaForCausalLM"


def test_adapter_without_peft_installed(tmp_path, monkeypatch):
    base_path = tiny_llama(tmp_path)
    _lora_adapter(base_path, tmp_path / "lora")
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(CheckpointError, match="peft is not installed"):
        load_checkpoint(base_path, LoadOptions(adapter=str(tmp_path / "lora")))


def test_missing_adapter_folder(tmp_path):
    with pytest.raises(CheckpointError, match="adapter not found"):
        load_checkpoint(tiny_llama(tmp_path), LoadOptions(adapter=str(tmp_path / "nope")))


def test_checkpoint_module_has_no_print():
    import inspect

    assert "print(" not in inspect.getsource(ckpt_module)


def test_out_of_memory_on_the_device_is_a_checkpoint_error_with_the_size(tmp_path, monkeypatch):
    import torch

    from shiftcheck.probes.models.loading import CheckpointError, load_checkpoint

    path = tiny_llama(tmp_path)

    def no_room(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 26.00 GiB")

    monkeypatch.setattr(torch.nn.Module, "to", no_room)
    with pytest.raises(CheckpointError, match=r"out of memory moving .* GiB of weights\) to cpu"):
        load_checkpoint(str(path))
