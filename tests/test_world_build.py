"""Building the embedded world: determinism, atomic writes, reload through the normal loading path,
tokenizer offsets, and world spec strings. Uses a tiny config (a few training steps) so the whole
file runs in seconds; the full-size verdict table is in test_world_verdicts.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import shiftcheck.probes.world.build as world_build
from shiftcheck.probes.prompts import load_prompts
from shiftcheck.probes.world import corpus
from shiftcheck.probes.world.build import (
    MODEL_NAMES,
    WorldConfig,
    build_world,
    ensure_world,
    load_manifest,
    parse_world_spec,
    resolve_world,
)

TINY = WorldConfig(
    seed=0, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
    pretrain_steps=12, tune_steps=6, batch_size=8, warmup=4, eval_per_family=2, eval_max_new_tokens=8,
)


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "world.json"}


def world_json_without_timings(root: Path) -> dict:
    data = json.loads((root / "world.json").read_text())
    for key in world_build.TIMING_FIELDS:
        data.pop(key)
    return data


@pytest.fixture(scope="module")
def tiny_worlds(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("worlds")
    out = {}
    for label, config in (("a", TINY), ("b", TINY), ("seed1", dataclasses.replace(TINY, seed=1))):
        build_world(config, base / label)
        out[label] = base / label
    return out


def test_same_seed_gives_identical_bytes(tiny_worlds):
    a, b = tiny_worlds["a"], tiny_worlds["b"]
    assert file_hashes(a) == file_hashes(b)
    assert world_json_without_timings(a) == world_json_without_timings(b)
    assert load_manifest(a).fingerprint == load_manifest(b).fingerprint


def test_other_seed_gives_other_weights_and_prompts(tiny_worlds):
    a, other = file_hashes(tiny_worlds["a"]), file_hashes(tiny_worlds["seed1"])
    assert a.keys() == other.keys()
    for name in MODEL_NAMES:
        assert a[f"{name}/model.safetensors"] != other[f"{name}/model.safetensors"]
    assert a["prompts.jsonl"] != other["prompts.jsonl"]
    assert load_manifest(tiny_worlds["a"]).fingerprint != load_manifest(tiny_worlds["seed1"]).fingerprint


def test_layout_and_world_json(tiny_worlds):
    root = tiny_worlds["a"]
    data = json.loads((root / "world.json").read_text())
    assert data["seed"] == 0
    assert data["config"] == dataclasses.asdict(TINY)
    assert data["code_version"] == world_build.code_version()
    assert set(data["accuracy"]) == set(MODEL_NAMES)
    assert all(0.0 <= v <= 1.0 for v in data["accuracy"].values())
    assert {"base", "good", "bad-copy", "bad-cpt", "eval", "total"} <= set(data["seconds"])
    for name in MODEL_NAMES:
        assert (root / name / "model.safetensors").is_file()
        assert not list((root / name).glob("*.bin")), "weights must be safetensors only"
    assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name], "temporary build dirs left behind"


def test_checkpoints_reload_through_auto_classes(tiny_worlds):
    root = tiny_worlds["a"]
    prompts = load_prompts(root / "prompts.jsonl")
    for name in MODEL_NAMES:
        model = AutoModelForCausalLM.from_pretrained(root / name, use_safetensors=True).eval()
        tok = AutoTokenizer.from_pretrained(root / name)
        assert type(model).__name__ == "LlamaForCausalLM"
        assert model.dtype == torch.float32
        for pr in prompts[:5]:
            ids = tok(pr.prompt).input_ids
            assert ids[0] == tok.bos_token_id == model.config.bos_token_id
            assert ids[1:] == tok(pr.prompt, add_special_tokens=False).input_ids
            assert tok.unk_token_id not in ids
            assert tok.decode(ids, skip_special_tokens=True) == pr.prompt
            logits = model(input_ids=torch.tensor([ids])).logits
            assert torch.isfinite(logits).all()
        assert tok.eos_token_id == model.config.eos_token_id
        assert tok.pad_token_id == model.config.pad_token_id


def test_reloaded_tokenizer_gives_the_training_ids(tiny_worlds):
    tok = AutoTokenizer.from_pretrained(tiny_worlds["a"] / "good")
    vocab = corpus.vocabulary()
    assert tok.convert_ids_to_tokens(list(range(len(vocab)))) == vocab
    rng = np.random.default_rng(7)
    for _ in range(20):
        task = corpus.sample_task(rng, 2, 4)
        expect = [vocab.index(w) for w in task.prompt.split()]
        assert tok(task.prompt, add_special_tokens=False).input_ids == expect


def test_offsets_map_instruction_spans_to_exactly_the_instruction_words(tiny_worlds):
    root = tiny_worlds["a"]
    tok = AutoTokenizer.from_pretrained(root / "base")
    prompts = load_prompts(root / "prompts.jsonl")
    assert len(prompts) == len(corpus.TASK_VERBS) * TINY.eval_per_family
    for pr in prompts:
        enc = tok(pr.prompt, return_offsets_mapping=True)
        tokens = tok.convert_ids_to_tokens(enc.input_ids)
        (start, end), = pr.instruction_char_spans
        inside = [t for t, (s, e) in zip(tokens, enc.offset_mapping) if e > s and s < end and e > start]
        assert inside == pr.instruction_spans[0].split()
        assert inside[0] in corpus.TASK_VERBS and pr.source == "world" and pr.subset == inside[0]
        assert not set(inside) & {":", ".", "answer", tok.bos_token}
        assert pr.prompt[end:].startswith(" :"), "the ':' after the instruction must stay outside the span"


def test_reference_is_the_instruction_following_answer(tiny_worlds):
    for pr in load_prompts(tiny_worlds["a"] / "prompts.jsonl"):
        instruction = pr.instruction_spans[0]
        named = [w for w in instruction.split() if w in corpus.NAMED]
        assert len(named) == 1
        assert named[0] in pr.reference.split(), "the named word must appear in the response"


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(world_build, "check_round_trip", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_world(TINY, tmp_path / "w")
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_to_overwrite(tiny_worlds):
    with pytest.raises(FileExistsError, match="overwrite"):
        build_world(TINY, tiny_worlds["a"])


def test_cache_builds_once_and_resolves_names(tmp_path, monkeypatch):
    first = ensure_world(tmp_path, seed=0, config=TINY)
    stamp = (first.root / "world.json").stat().st_mtime_ns
    again = ensure_world(tmp_path, seed=0, config=TINY)
    assert again.root == first.root
    assert (again.root / "world.json").stat().st_mtime_ns == stamp
    assert first.root.parent == tmp_path / "world"
    assert first.root.name.startswith(f"seed0-{world_build.code_version()[:12]}")
    # resolve_world maps names to directories of the cached default-config world
    monkeypatch.setattr(world_build, "world_root", lambda cache_dir, seed=0, config=None: first.root)
    assert resolve_world("null", tmp_path) == resolve_world("base", tmp_path) == first.root / "base"
    for name in ("good", "bad-copy", "bad-cpt"):
        assert resolve_world(name, tmp_path) == first.root / name
    with pytest.raises(ValueError, match="valid names: base, null, good, bad-copy, bad-cpt"):
        resolve_world("great", tmp_path)


@pytest.mark.parametrize("spec, expected", [
    ("world:good", ("good", 0)),
    ("world:null", ("null", 0)),
    ("world:bad-copy@seed=1", ("bad-copy", 1)),
    ("world:bad-cpt@seed=12", ("bad-cpt", 12)),
    ("meta-llama/Llama-2-7b-hf", None),
    ("/models/world:good", None),
])
def test_parse_world_spec(spec, expected):
    assert parse_world_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("world:great", "valid names: base, null, good, bad-copy, bad-cpt"),
    ("world:", "valid names"),
    ("world:good@seed=x", "world:NAME@seed=INT"),
    ("world:good@temp=1", "world:NAME@seed=INT"),
])
def test_parse_world_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_world_spec(spec)
