"""Issues 12/13: light pair checks (no weights), big-model options, shards, hub commit pinning, PEFT pickles."""

from __future__ import annotations

import types

import pytest
import torch
from builders import save_checkpoint, tiny_gpt2, tiny_llama, tiny_model, word_tokenizer

from shiftcheck.probes import runner as session
from shiftcheck.probes.cache import ResultCache
from shiftcheck.probes.models.fingerprint import fingerprint_checkpoint, looks_like_path
from shiftcheck.probes.models.loading import (
    CheckpointError,
    LoadOptions,
    PairMismatchError,
    inspect_checkpoint,
    load_checkpoint,
    validate_pair,
)


@pytest.fixture
def no_weights(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("weights must not be loaded")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)


def test_inspect_matches_the_loaded_checkpoint(tmp_path):
    path = tiny_llama(tmp_path)
    loaded = load_checkpoint(path).info
    light = inspect_checkpoint(path)
    fields = ("architecture", "n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp", "d_vocab")
    assert [getattr(light, f) for f in fields] == [getattr(loaded, f) for f in fields]


def test_incompatible_pair_fails_without_loading_weights(tmp_path, no_weights):
    llama, gpt2 = inspect_checkpoint(tiny_llama(tmp_path)), inspect_checkpoint(tiny_gpt2(tmp_path))
    with pytest.raises(PairMismatchError, match="architecture: base=LlamaForCausalLM tuned=GPT2LMHeadModel"):
        validate_pair(llama, gpt2)
    tok = word_tokenizer()
    qwen2 = save_checkpoint(tiny_model("qwen2", vocab_size=len(tok)), tok, tmp_path / "qwen2")
    with pytest.raises(CheckpointError):  # a Qwen2 with a word tokenizer is refused at its tokenizer check
        inspect_checkpoint(qwen2)


def test_pair_runner_check_refuses_an_incompatible_pair(tmp_path, no_weights):
    cache = ResultCache(tmp_path / "cache")
    base = session.resolve_ref("base", str(tiny_llama(tmp_path)), cache.root)
    tuned = session.resolve_ref("tuned", str(tiny_gpt2(tmp_path)), cache.root)
    with pytest.raises(PairMismatchError, match="architecture"):
        session.PairRunner(base, tuned, LoadOptions(), cache).check()


def _spy_model_kwargs(monkeypatch) -> list[dict]:
    import transformers

    seen: list[dict] = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(dict(kwargs))
        kwargs.pop("device_map", None), kwargs.pop("low_cpu_mem_usage", None)
        return original(*args, **kwargs)

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", spy)
    return seen


def test_big_model_options_reach_from_pretrained(tmp_path, monkeypatch):
    seen = _spy_model_kwargs(monkeypatch)
    moved = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append(a) or self)
    options = LoadOptions(device_map="cpu", low_cpu_mem_usage=True, attn_implementation="eager")
    load_checkpoint(tiny_llama(tmp_path), options)
    assert seen[0]["device_map"] == "cpu" and seen[0]["low_cpu_mem_usage"] is True
    assert seen[0]["attn_implementation"] == "eager" and moved == []
    load_checkpoint(tiny_llama(tmp_path))
    assert not {"device_map", "low_cpu_mem_usage", "attn_implementation"} & set(seen[1])


def test_unknown_attn_implementation_lists_the_valid_values():
    with pytest.raises(CheckpointError, match="eager, sdpa"):
        LoadOptions(attn_implementation="flash")


def test_sharded_safetensors_load_and_fingerprint(tmp_path):
    tok = word_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    path = tmp_path / "sharded"
    path.mkdir()
    model.save_pretrained(path, safe_serialization=True, max_shard_size="50KB")
    tok.save_pretrained(path)
    shards = sorted(path.glob("*.safetensors"))
    assert len(shards) > 1
    ckpt = load_checkpoint(path)
    torch.testing.assert_close(ckpt.views.W_Q(1), type(ckpt.views)(model).W_Q(1))
    first = fingerprint_checkpoint(str(path), memo_dir=tmp_path / "memo")
    assert fingerprint_checkpoint(str(path), memo_dir=tmp_path / "memo") == first
    data = bytearray(shards[-1].read_bytes())
    data[-1] ^= 1
    shards[-1].write_bytes(bytes(data))
    assert fingerprint_checkpoint(str(path), memo_dir=tmp_path / "memo") != first


def test_hub_ref_pins_the_resolved_commit(tmp_path, monkeypatch):
    import huggingface_hub
    import transformers

    sha = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, revision=None: types.SimpleNamespace(sha=sha))
    ref = session.resolve_ref("base", "some-org/some-model", tmp_path, revision="main")
    assert ref.revision == sha and ref.fingerprint == f"hub:some-org/some-model@{sha}"
    config = tiny_model("llama").config
    seen: list[dict] = []
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: seen.append(k) or config)

    def no_download(*args, **kwargs):
        seen.append(kwargs)
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_download)
    runner = session.PairRunner(ref, ref, LoadOptions(), ResultCache(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=sha):
        load_checkpoint(ref.location, runner.options_for(ref))
    assert [k.get("revision") for k in seen] == [sha, sha]


def test_pickled_peft_adapter_is_refused_without_unpickling(tmp_path, monkeypatch):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    torch.save({"w": torch.zeros(2)}, adapter / "adapter_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    with pytest.raises(CheckpointError, match="adapter_model.bin") as info:
        load_checkpoint(tiny_llama(tmp_path), LoadOptions(adapter=str(adapter)))
    assert "safe_serialization=True" in str(info.value)


def test_gguf_names_are_paths_and_missing_files_are_named(tmp_path):
    assert looks_like_path("model.gguf") and not looks_like_path("org/name")
    with pytest.raises(CheckpointError, match="GGUF checkpoint not found"):
        load_checkpoint(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 16)
    with pytest.raises(CheckpointError, match="corrupt GGUF file"):
        inspect_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found in"):
        load_checkpoint(tmp_path, LoadOptions(gguf_file="other.gguf"))
