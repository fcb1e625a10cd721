"""Build, cache and resolve the miniature world: base model, three tunes and eval prompts.

Layout of a built world (every model directory loads with ``from_pretrained``)::

    out/base/        LlamaForCausalLM pretrained on the base corpus (also "null")
    out/good/        base tuned on prompt -> instruction-following response
    out/bad-copy/    base tuned on the same prompts -> copy of the context (ignores instruction)
    out/bad-cpt/     base trained further on the base corpus, same steps as good, no instructions
    out/prompts.jsonl  held-out eval prompts (METHODS.md §6) with instruction spans
    out/world.json     config, accuracies, timings, code version, fingerprint

A build writes into a temporary sibling directory and renames it at the end, so an interrupted
build never leaves a half world behind.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, LlamaConfig

from shiftcheck.probes.world import corpus
from shiftcheck.probes.world.spec import ALIASES, MODEL_NAMES, WORLD_SOURCE, WorldSpecError, parse_world_spec  # noqa: F401
from shiftcheck.probes.world.tokenizer import BOS, EOS, PAD, build_tokenizer, check_round_trip, encode_words
from shiftcheck.probes.world.train import TrainConfig, deterministic_torch, greedy_responses, init_model, train

SCHEMA_VERSION = 1
TIMING_FIELDS = ("seconds",)  # world.json fields that differ between identical builds
_SOURCES = ("corpus.py", "tokenizer.py", "train.py", "build.py")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a world. Same config -> same bytes (same machine and torch)."""

    seed: int = 0
    hidden_size: int = 96
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    min_context: int = 2
    max_context: int = 4
    prompt_share: float = 0.85  # share of prompt-layout documents in the base corpus
    copy_share: float = 0.5  # share of base-corpus answers that copy the context
    pretrain_steps: int = 2000
    tune_steps: int = 600  # good, bad-copy and bad-cpt all use this many steps
    batch_size: int = 64
    pretrain_lr: float = 3e-3
    tune_lr: float = 3e-3
    warmup: int = 50
    eval_per_family: int = 8
    eval_max_new_tokens: int = 24
    # One thread: the same bytes on any machine, and no collapse when another process shares the
    # cores (measured: two OpenMP threads on two busy cores ran 70x slower, 2.2 s per step).
    num_threads: int = 1


@dataclass(frozen=True)
class WorldManifest:
    root: Path
    config: WorldConfig
    code_version: str
    fingerprint: str
    accuracy: dict[str, float]  # exact match of each model's greedy response vs the reference
    seconds: dict[str, float]

    def model_dir(self, name: str) -> Path:
        return self.root / ALIASES[_check_name(name)]

    @property
    def prompts_path(self) -> Path:
        return self.root / "prompts.jsonl"


def code_version() -> str:
    """sha256 of the world's source files; part of the cache key, so code changes rebuild."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _SOURCES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()


def fingerprint(root: Path) -> str:
    """sha256 over every file's relative path and bytes, except world.json (it holds timings)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "world.json"):
        h.update(str(path.relative_to(root)).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _check_name(name: str) -> str:
    if name not in ALIASES:
        raise WorldSpecError(f"unknown world model {name!r}; valid names: {', '.join(ALIASES)}")
    return name


def _rng(config: WorldConfig, stream: str) -> np.random.Generator:
    """An independent generator per stream, derived from the seed and the stream's name."""
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return np.random.default_rng(np.random.SeedSequence([config.seed, key]))


def _model_config(config: WorldConfig, vocab_size: int, ids: dict[str, int]) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        attention_dropout=0.0,
    )


def _save(model, tokenizer, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _prompt_records(tasks: list[corpus.Task]) -> list[dict]:
    records = []
    for i, task in enumerate(tasks):
        start, end = task.instruction_char_span
        records.append({
            "id": f"world_{i:04d}",
            "source": WORLD_SOURCE,  # one group: 8 prompts per family are too few to test each alone
            "subset": task.family,
            "prompt": task.prompt,
            "instruction_char_spans": [[start, end]],
            "instruction_spans": [task.prompt[start:end]],
            "reference": " ".join(task.response),
        })
    return records


def pretrain_sampler(config: WorldConfig, ids: dict[str, int], held_out: frozenset[str]):
    """Sampler of base-corpus examples (ids, loss mask) for :func:`train`.

    Loss on all of plain text, but only on the answer of prompt-layout documents: measured, the
    random prompt words otherwise drown the copy signal and the base does not learn to copy in
    the step budget.
    """
    bos, eos = ids[BOS], ids[EOS]

    def sample(rng: np.random.Generator):
        prompt, answer = corpus.pretraining_document(rng, config.min_context, config.max_context,
                                                     config.prompt_share, config.copy_share, held_out)
        p = [bos, *encode_words(ids, prompt)]
        r = [*encode_words(ids, answer), eos]
        return p + r, [0 if prompt else 1] * len(p) + [1] * len(r)
    return sample


def tune_sampler(config: WorldConfig, ids: dict[str, int], held_out: frozenset[str], kind: str):
    """Sampler of (prompt -> response) examples with loss on the response and EOS only."""
    bos, eos = ids[BOS], ids[EOS]

    def sample(rng: np.random.Generator):
        prompt, response = corpus.tuning_pair(rng, config.min_context, config.max_context, kind, held_out)
        p = [bos, *encode_words(ids, prompt)]
        r = [*encode_words(ids, response), eos]
        return p + r, [0] * len(p) + [1] * len(r)
    return sample


def exact_match(model, tasks: list[corpus.Task], ids: dict[str, int], max_new_tokens: int) -> np.ndarray:
    """Per task: does the model's greedy response equal the instruction-following reference?"""
    prompts = [[ids[BOS], *encode_words(ids, t.prompt.split())] for t in tasks]
    responses = greedy_responses(model, prompts, ids[EOS], max_new_tokens)
    return np.array([r == encode_words(ids, list(t.response)) for r, t in zip(responses, tasks)])


def _build_into(config: WorldConfig, tmp: Path, log: Callable[[str], None]) -> dict:
    """Build everything into ``tmp``; returns the world.json payload minus the fingerprint."""
    seconds: dict[str, float] = {}
    vocab = corpus.vocabulary()
    ids = {w: i for i, w in enumerate(vocab)}
    tokenizer = build_tokenizer(vocab)
    bos, eos, pad = ids[BOS], ids[EOS], ids[PAD]
    lo, hi = config.min_context, config.max_context

    tasks = corpus.eval_tasks(_rng(config, "eval"), config.eval_per_family, lo, hi)
    held_out = frozenset(t.prompt for t in tasks)

    def logger(stage: str):
        return lambda step, loss: log(f"{stage}: step {step} loss {loss:.3f}")

    t0 = time.perf_counter()
    base = init_model(_model_config(config, len(vocab), ids), seed=config.seed)
    pre_cfg = TrainConfig(config.pretrain_steps, config.batch_size, config.pretrain_lr, config.warmup)
    train(base, pretrain_sampler(config, ids, held_out), pre_cfg, _rng(config, "pretrain"), pad, logger("base"))
    seconds["base"] = time.perf_counter() - t0

    tune_cfg = TrainConfig(config.tune_steps, config.batch_size, config.tune_lr, config.warmup)
    models = {"base": base}
    for name, sample in (("good", tune_sampler(config, ids, held_out, "good")),
                         ("bad-copy", tune_sampler(config, ids, held_out, "copy")),
                         ("bad-cpt", pretrain_sampler(config, ids, held_out))):
        t0 = time.perf_counter()
        model = copy.deepcopy(base)
        train(model, sample, tune_cfg, _rng(config, f"tune-{name}"), pad, logger(name))
        models[name] = model
        seconds[name] = time.perf_counter() - t0

    generation = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False)
    for name, model in models.items():
        model.generation_config = generation
        _save(model, tokenizer, tmp / name)
    check_round_trip(tmp / "base", tokenizer, [t.prompt for t in tasks[:8]] + ["write : . answer"])

    records = _prompt_records(tasks)
    with (tmp / "prompts.jsonl").open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")

    t0 = time.perf_counter()
    accuracy = {name: float(exact_match(model, tasks, ids, config.eval_max_new_tokens).mean())
                for name, model in models.items()}
    seconds["eval"] = time.perf_counter() - t0
    return {
        "schema_version": SCHEMA_VERSION,
        "seed": config.seed,
        "config": dataclasses.asdict(config),
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "models": {name: name for name in MODEL_NAMES},
        "n_prompts": len(records),
        "accuracy": accuracy,
        "seconds": seconds,
    }


def build_world(config: WorldConfig, out: Path, progress: Callable[[str], None] | None = None,
                overwrite: bool = False) -> WorldManifest:
    """Build the world for ``config`` into ``out`` atomically and return its manifest.

    Refuses to replace an existing ``out`` unless ``overwrite``. ``progress`` receives log lines.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --force) to rebuild it")
    log = progress or (lambda msg: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        start = time.perf_counter()
        with deterministic_torch(config.num_threads):
            payload = _build_into(config, tmp, log)
        payload["seconds"]["total"] = time.perf_counter() - start
        payload["fingerprint"] = fingerprint(tmp)
        (tmp / "world.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_manifest(out)


def load_manifest(root: Path) -> WorldManifest:
    """Read ``root/world.json`` of a built world."""
    path = Path(root) / "world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a built world (no world.json); build it with "
                                "`shiftcheck world build --out DIR`")
    data = json.loads(path.read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {data.get('schema_version')} != {SCHEMA_VERSION}; rebuild")
    return WorldManifest(Path(root), WorldConfig(**data["config"]), data["code_version"],
                         data["fingerprint"], data["accuracy"], data["seconds"])


# --- cache and spec strings -----------------------------------------------------------------------

def world_root(cache_dir: Path, seed: int = 0, config: WorldConfig | None = None) -> Path:
    """Cache location of the world for ``seed`` under the current code version.

    The default config lives in ``seed{seed}-{code}``; any other config gets its own directory.
    """
    name = f"seed{seed}-{code_version()[:12]}"
    if config is not None and config != WorldConfig(seed=seed):
        blob = json.dumps(dataclasses.asdict(config), sort_keys=True).encode()
        name += "-cfg" + hashlib.sha256(blob).hexdigest()[:8]
    return Path(cache_dir) / "world" / name


def ensure_world(cache_dir: Path, seed: int = 0, progress: Callable[[str], None] | None = None,
                 config: WorldConfig | None = None) -> WorldManifest:
    """Build the world for ``seed`` (default config unless ``config``) into the cache once.

    Concurrent callers (pytest-xdist workers) wait on a file lock, and the winner's atomic rename
    means a reader sees either no world or a whole one.
    """
    from filelock import FileLock

    if config is not None and config.seed != seed:
        raise ValueError(f"config.seed={config.seed} differs from seed={seed}")
    root = world_root(cache_dir, seed, config)
    if not (root / "world.json").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root) + ".lock"):
            if not (root / "world.json").is_file():
                build_world(config or WorldConfig(seed=seed), root, progress, overwrite=True)
    return load_manifest(root)


def resolve_world(name: str, cache_dir: Path, seed: int = 0) -> Path:
    """Checkpoint directory of world model ``name`` ("base", "null", "good", "bad-copy",
    "bad-cpt"), building the world on first use."""
    _check_name(name)
    return ensure_world(cache_dir, seed).model_dir(name)


def world_prompts_path(cache_dir: Path, seed: int = 0) -> Path:
    """The eval prompts JSONL of the cached world for ``seed``, building it on first use."""
    return ensure_world(cache_dir, seed).prompts_path
