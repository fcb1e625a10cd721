"""Building the embedded world: determinism, atomic and resumable writes, reload through the normal
loading path, tokenizer offsets, world spec strings, and the shipped seed-0 world. Uses a tiny config
(a few training steps) so the whole file runs in seconds; the verdict table of the shipped world is
in test_world_verdicts.py."""

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
from shiftcheck.probes.world.floor import base_density
from shiftcheck.probes.world.train import TrainConfig
from shiftcheck.probes.world.build import (
    MODEL_NAMES,
    WorldConfig,
    build_world,
    ensure_world,
    fingerprint,
    load_manifest,
    parse_world_spec,
    resolve_world,
    shipped_root,
    staging_dir,
    world_prompts_path,
)

# The tiny worlds' bases (12 steps) sit at the density floor; their builds rightly warn. The floor
# warning itself is tested with planted scores below (pytest.warns sees it despite this filter).
pytestmark = pytest.mark.filterwarnings("ignore::shiftcheck.probes.world.floor.BaseFloorWarning")

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
    assert data["config"] == json.loads(json.dumps(dataclasses.asdict(TINY)))
    assert load_manifest(root).config == TINY, "base_followed must come back as a tuple"
    floor = data["base_density"]
    assert floor["n_prompts"] == data["n_prompts"] == 7 * TINY.eval_per_family
    assert 0.0 <= floor["zero_share"] <= 1.0 and floor["mean"] >= 0.0 and floor["std"] >= 0.0
    assert load_manifest(root).base_density.near_floor == floor["near_floor"]
    assert data["code_version"] == world_build.code_version()
    assert set(data["accuracy"]) == set(MODEL_NAMES)
    assert all(0.0 <= v <= 1.0 for v in data["accuracy"].values())
    assert {"base", "good", "bad-copy", "bad-cpt", "eval", "total"} <= set(data["seconds"])
    for name in MODEL_NAMES:
        assert (root / name / "model.safetensors").is_file()
        assert not list((root / name).glob("*.bin")), "weights must be safetensors only"
    assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name], "temporary build dirs left behind"
    assert not staging_dir(root).exists(), "the staging area must become the world"
    assert not (root / "build.json").exists()


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


class Crash(RuntimeError):
    pass


def trained_models(lines: list[str]) -> list[str]:
    return [line.split(":")[0] for line in lines if line.endswith(" steps") and ": training " in line]


def reused_models(lines: list[str]) -> list[str]:
    return [line.split(":")[0] for line in lines if "staged by an earlier build, reusing it" in line]


def crash_on_train_call(monkeypatch, n: int, cfgs: list | None = None) -> None:
    """Make the ``n``-th call of ``train`` (1 = base, 2 = good, 3 = bad-copy, 4 = bad-cpt) crash."""
    real = world_build.train
    calls = []

    def train(model, sample, cfg, *args, **kwargs):
        calls.append(cfg)
        if cfgs is not None:
            cfgs.append(cfg)
        if len(calls) == n:
            raise Crash(f"simulated kill in train call {n}")
        return real(model, sample, cfg, *args, **kwargs)

    monkeypatch.setattr(world_build, "train", train)


def test_failed_build_leaves_no_world_and_no_temporaries(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise Crash("simulated crash")

    monkeypatch.setattr(world_build, "check_round_trip", boom)
    with pytest.raises(Crash):
        build_world(TINY, tmp_path / "w")
    assert not (tmp_path / "w").exists()
    staged = staging_dir(tmp_path / "w")
    assert sorted(p.name for p in tmp_path.iterdir()) == [staged.name]
    assert sorted(p.name for p in staged.iterdir()) == ["base", "build.json"], "only whole models are staged"


def test_killed_build_resumes_at_the_first_missing_model(tmp_path, monkeypatch, tiny_worlds):
    out = tmp_path / "w"
    cfgs: list = []
    crash_on_train_call(monkeypatch, 3, cfgs)  # killed while training bad-copy
    with pytest.raises(Crash):
        build_world(TINY, out)
    monkeypatch.undo()
    staged = staging_dir(out)
    # the eval prompts are written with the base: the floor check scores the base on them
    assert sorted(p.name for p in staged.iterdir() if not p.name.startswith(".")) == [
        "base", "build.json", "good", "prompts.jsonl"]
    # a stale temporary of a build killed while saving
    stale = staged / ".bad-copy.tmp-dead1234"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")

    lines: list[str] = []
    cfgs.clear()
    crash_on_train_call(monkeypatch, 0, cfgs)  # never crashes; records the configs
    manifest = build_world(TINY, out, progress=lines.append)
    assert trained_models(lines) == ["bad-copy", "bad-cpt"]
    assert reused_models(lines) == ["base", "good"]
    assert any(".bad-copy.tmp-dead1234" in line for line in lines)
    assert not stale.exists() and not staged.exists()
    # the resumed world has the bytes of an uninterrupted build
    assert file_hashes(out) == file_hashes(tiny_worlds["a"])
    assert manifest.fingerprint == load_manifest(tiny_worlds["a"]).fingerprint
    assert json.loads((out / "world.json").read_text())["resumed"] == ["base", "good"]
    # continued pretraining: constant at the pretraining end lr, no re-warm
    copy_cfg, cpt_cfg = cfgs
    assert copy_cfg.lr == TINY.tune_lr and copy_cfg.warmup == TINY.warmup
    end_of_pretraining = TINY.pretrain_lr * TrainConfig(1, 1, 1.0, 0).min_lr_ratio
    assert cpt_cfg.lr == TINY.cpt_lr == pytest.approx(end_of_pretraining)
    assert cpt_cfg.warmup == 0 and cpt_cfg.min_lr_ratio == 1.0


def test_deleted_tune_is_the_only_model_trained_again(tmp_path, monkeypatch, tiny_worlds):
    out = tmp_path / "w"

    def boom(*args, **kwargs):
        raise Crash("simulated kill during evaluation")

    monkeypatch.setattr(world_build, "exact_match", boom)
    with pytest.raises(Crash):
        build_world(TINY, out)
    monkeypatch.undo()
    staged = staging_dir(out)
    assert {"base", "good", "bad-copy", "bad-cpt"} <= {p.name for p in staged.iterdir()}
    import shutil

    shutil.rmtree(staged / "good")
    lines: list[str] = []
    build_world(TINY, out, progress=lines.append)
    assert trained_models(lines) == ["good"]
    assert reused_models(lines) == ["base", "bad-copy", "bad-cpt"]
    assert file_hashes(out) == file_hashes(tiny_worlds["a"])


def test_staging_of_another_config_is_discarded(tmp_path, monkeypatch):
    out = tmp_path / "w"
    crash_on_train_call(monkeypatch, 2)
    with pytest.raises(Crash):
        build_world(TINY, out)
    monkeypatch.undo()
    lines: list[str] = []
    other = dataclasses.replace(TINY, pretrain_steps=TINY.pretrain_steps + 1)
    build_world(other, out, progress=lines.append)
    assert any("discarding" in line for line in lines)
    assert trained_models(lines) == list(MODEL_NAMES)
    assert load_manifest(out).config == other


def follow_rate(family: str, follow_share: float, followed: frozenset[str], n: int = 2000) -> float:
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(n):
        task = corpus.sample_task(rng, 2, 5, family=family)
        hits += corpus.base_answer(rng, task, 0.5, follow_share, followed) == list(task.response)
    return hits / n


def test_base_corpus_always_follows_its_followed_families_and_no_others():
    followed = frozenset(WorldConfig().base_followed)
    assert followed and followed < set(corpus.FAMILIES)
    for family in corpus.FAMILIES:
        rate = follow_rate(family, WorldConfig().follow_share, followed)
        if family in followed:
            assert rate == 1.0, family
        else:
            # only an instruction-blind answer that happens to match: a random named word equal to
            # the instruction's (1 in 24) in the family's own pattern (1 in 16 of the answers)
            assert rate < 0.02, (family, rate)


def test_follow_share_adds_random_following_to_the_other_families():
    rate = follow_rate("write", 0.15, frozenset({"give"}), n=4000)
    assert 0.13 < rate < 0.18  # 15 % by construction, plus the rare chance matches


def test_unknown_followed_family_is_refused():
    with pytest.raises(ValueError, match="unknown families"):
        WorldConfig(base_followed=("give", "summarise"))


# --- the base's density floor check (floor.py) ------------------------------------------------------

def test_a_base_at_zero_on_every_prompt_is_near_the_floor():
    floor = base_density(np.zeros(140))
    assert floor.near_floor and floor.zero_share == 1.0
    assert "WARNING" in floor.summary() and "100% at 0" in floor.summary()


def test_issue_19_floored_base_is_flagged_and_an_earlier_sound_base_is_not():
    # seed 7 of the earlier design: mean 0.008, most prompts at 0
    floored = np.r_[np.zeros(133), np.full(7, 0.16)]
    assert base_density(floored).near_floor
    # seed 0 of the earlier design: 81 % at 0, mean about 0.046
    sound = np.r_[np.zeros(113), np.full(27, 0.24)]
    assert not base_density(sound).near_floor
    assert "WARNING" not in base_density(sound).summary()


def test_a_high_mean_with_nearly_all_prompts_at_zero_is_still_near_the_floor():
    scores = np.r_[np.zeros(134), np.full(6, 1.0)]  # mean 0.043, 96 % at 0
    assert base_density(scores).mean > 0.03
    assert base_density(scores).near_floor


def test_floor_check_needs_scores():
    with pytest.raises(ValueError, match="at least one"):
        base_density(np.array([]))


def test_build_refuses_to_overwrite(tiny_worlds):
    with pytest.raises(FileExistsError, match="overwrite"):
        build_world(TINY, tiny_worlds["a"])


def test_cache_builds_once(tmp_path):
    first = ensure_world(tmp_path, seed=0, config=TINY)
    stamp = (first.root / "world.json").stat().st_mtime_ns
    again = ensure_world(tmp_path, seed=0, config=TINY)
    assert again.root == first.root
    assert (again.root / "world.json").stat().st_mtime_ns == stamp
    assert first.root.parent == tmp_path / "world"
    assert first.root.name.startswith(f"seed0-{world_build.code_version()[:12]}")


# --- the shipped seed-0 world ---------------------------------------------------------------------

SHIPPED = shipped_root(0)


def test_shipped_world_is_current_and_verifies():
    """The world code cannot change without re-shipping the world (and re-measuring VERDICTS.md)."""
    manifest = load_manifest(SHIPPED)
    assert manifest.code_version == world_build.code_version(), (
        "probes/world sources changed since the shipped world was built: rebuild it with "
        "`shiftcheck world build --seed 0 --threads 1 --out probes/world/shipped/seed0 --force` "
        "and re-measure probes/world/VERDICTS.md")
    assert manifest.config == WorldConfig(seed=0)
    assert fingerprint(SHIPPED) == manifest.fingerprint
    allowed = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json"}
    for name in MODEL_NAMES:
        assert {p.name for p in (SHIPPED / name).iterdir()} <= allowed
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 6 * 2**20
    assert manifest.accuracy["good"] >= 0.9, "good must follow instructions"


def test_world_specs_resolve_to_the_shipped_world_without_building(tmp_path, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("the shipped world must not be built")

    monkeypatch.setattr(world_build, "build_world", no_build)
    for name in ("base", "good", "bad-copy", "bad-cpt"):
        assert resolve_world(name, tmp_path) == SHIPPED / name
    assert resolve_world("null", tmp_path) == SHIPPED / "base"
    assert world_prompts_path(tmp_path) == SHIPPED / "prompts.jsonl"
    assert ensure_world(tmp_path, 0, progress=lambda msg: None).root == SHIPPED
    assert ensure_world(tmp_path, 0, config=WorldConfig(seed=0)).root == SHIPPED
    assert not (tmp_path / "world").exists()
    with pytest.raises(ValueError, match="valid names: base, null, good, bad-copy, bad-cpt"):
        resolve_world("great", tmp_path)


def test_other_seeds_and_configs_are_built_into_the_cache(tmp_path, monkeypatch):
    calls = []

    def fake_build(config, out, progress=None, overwrite=False):
        calls.append((config, Path(out)))
        raise Crash("stop")

    monkeypatch.setattr(world_build, "build_world", fake_build)
    with pytest.raises(Crash):
        resolve_world("good", tmp_path, seed=1)
    with pytest.raises(Crash):
        ensure_world(tmp_path, 0, config=dataclasses.replace(WorldConfig(), tune_steps=7))
    assert [c.seed for c, _ in calls] == [1, 0]
    assert all(out.parent == tmp_path / "world" for _, out in calls)


def test_damaged_or_stale_shipped_world(tmp_path, monkeypatch):
    import shutil

    shutil.copytree(SHIPPED, tmp_path / "shipped" / "seed0")
    monkeypatch.setattr(world_build, "SHIPPED_DIR", tmp_path / "shipped")
    assert world_build.shipped_world(0).root == tmp_path / "shipped" / "seed0"
    prompts = tmp_path / "shipped" / "seed0" / "prompts.jsonl"
    prompts.write_text(prompts.read_text() + "\n")
    with pytest.raises(ValueError, match="fingerprint"):
        world_build.shipped_world(0)
    monkeypatch.setattr(world_build, "code_version", lambda: "0" * 64)
    assert world_build.shipped_world(0) is None, "a world shipped by other code is not used"
    assert world_build.shipped_world(3) is None


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


def test_the_light_world_spec_module_agrees_with_the_builder():
    """spec.py (imported by the plugin at collection, no torch) mirrors build.py's names; build.py's
    bytes are part of the shipped world's code version, so the two are kept in step by this test."""
    from shiftcheck.probes.world import build, spec

    assert (spec.ALIASES, spec.MODEL_NAMES, spec.WORLD_SOURCE) == (build.ALIASES, build.MODEL_NAMES, build.WORLD_SOURCE)
    for text in ("world:good", "world:null@seed=3", "not-a-world", "/models/x"):
        assert spec.parse_world_spec(text) == build.parse_world_spec(text)
    for bad in ("world:excellent", "world:good@seed=x"):
        with pytest.raises(ValueError):
            spec.parse_world_spec(bad)
        with pytest.raises(ValueError):
            build.parse_world_spec(bad)


def test_build_records_the_base_density_and_warns_near_the_floor(tmp_path, monkeypatch):
    """A planted floored base (the build's own scoring replaced by known scores): the build warns and
    world.json says near_floor; a base off the floor gives no warning."""
    from shiftcheck.probes.world.floor import BaseFloorWarning

    floored = base_density(np.r_[np.zeros(13), 0.1])
    monkeypatch.setattr(world_build, "score_base", lambda root: floored)
    with pytest.warns(BaseFloorWarning, match="near the density floor"):
        manifest = build_world(TINY, tmp_path / "floored")
    assert manifest.base_density == floored
    assert json.loads((tmp_path / "floored" / "world.json").read_text())["base_density"]["near_floor"] is True

    sound = base_density(np.r_[np.zeros(9), np.full(5, 0.3)])
    monkeypatch.setattr(world_build, "score_base", lambda root: sound)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", BaseFloorWarning)
        manifest = build_world(TINY, tmp_path / "sound")
    assert manifest.base_density == sound and not manifest.base_density.near_floor
