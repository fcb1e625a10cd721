"""Build, cache and resolve the miniature world: base model, three tunes and eval prompts.

Layout of a built world (every model directory loads with ``from_pretrained``)::

    out/base/        LlamaForCausalLM pretrained on the base corpus (also "null")
    out/good/        base tuned on prompt -> instruction-following response
    out/bad-copy/    base tuned on the same prompts -> copy of the context (ignores instruction)
    out/bad-cpt/     base trained further on the base corpus (same steps as good, constant at the
                     lr pretraining ended at): no more instruction signal than the base had
    out/prompts.jsonl  held-out eval prompts (METHODS.md §6) with instruction spans
    out/world.json     config, accuracies, the base's density (floor check), timings, code
                       version, fingerprint

A build stages its work in ``.<out>.staging/`` beside ``out``: the base first, then each tune, each
written to a ``.<name>.tmp-*`` directory and renamed into place when whole. A killed build resumes
at the first missing model; stale temporary directories are removed by the next build. When every
model and ``world.json`` are written, the staging directory is renamed to ``out``, so a reader sees
either no world or a whole one.

The seed-0 world of the default config is shipped as package data (``shipped/seed0``):
``world:NAME`` resolves to it without building. World bytes depend on the machine's float kernels
and the thread count, so a world built elsewhere has its own fingerprint and its own verdicts; the
shipped world is the one whose verdicts CI checks (VERDICTS.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, LlamaConfig

from shiftcheck.probes.world import corpus
from shiftcheck.probes.world.floor import BaseDensity, BaseFloorWarning, base_density
from shiftcheck.probes.world.tokenizer import BOS, EOS, PAD, UNK, build_tokenizer, check_round_trip, encode_words
from shiftcheck.probes.world.train import TrainConfig, deterministic_torch, greedy_responses, init_model, train

SCHEMA_VERSION = 1
WORLD_SOURCE = "world"
MODEL_NAMES = ("base", "good", "bad-copy", "bad-cpt")
ALIASES = {"base": "base", "null": "base", "good": "good", "bad-copy": "bad-copy", "bad-cpt": "bad-cpt"}
TIMING_FIELDS = ("seconds", "resumed")  # world.json fields that differ between identical builds
_SOURCES = ("corpus.py", "tokenizer.py", "train.py", "build.py", "floor.py")


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
    max_context: int = 5
    prompt_share: float = 0.85  # share of prompt-layout documents in the base corpus
    # Families whose instructions the base corpus always follows: the base depends on the
    # instruction on a fixed share of prompts, so it is off the density floor on every seed, and
    # continued pretraining has nothing left to learn there (issue 19). The two families closest to
    # copying (append W; replace the first word by W), as a base follows the simplest instructions.
    base_followed: tuple[str, ...] = ("give", "make")
    # Share of the other families' base-corpus answers that follow the instruction anyway; the rest
    # are instruction-blind (copy_share of them copy the context). 0: measured, a random share left
    # the greedy base near the floor on some seeds (it copies whenever copying is likelier) and
    # gave continued pretraining an instruction signal to learn (bad-cpt passed, issue 19).
    follow_share: float = 0.0
    copy_share: float = 0.5  # share of instruction-blind base-corpus answers that copy the context
    pretrain_steps: int = 2000
    tune_steps: int = 600  # good, bad-copy and bad-cpt all use this many steps
    batch_size: int = 64
    pretrain_lr: float = 3e-3
    tune_lr: float = 3e-3  # good and bad-copy: warm-up to this lr, cosine decay
    # bad-cpt continues pretraining at the lr pretraining ended at (pretrain_lr * min_lr_ratio),
    # constant, no re-warm: what continued pretraining of a released base usually does.
    cpt_lr: float = 3e-4
    warmup: int = 50
    eval_per_family: int = 20
    eval_max_new_tokens: int = 24
    # One thread: the same bytes on any machine, and no collapse when another process shares the
    # cores (measured: two OpenMP threads on two busy cores ran 70x slower, 2.2 s per step).
    num_threads: int = 1

    def __post_init__(self) -> None:
        unknown = [f for f in self.base_followed if f not in corpus.FAMILIES]
        if unknown:
            raise ValueError(f"base_followed names unknown families {unknown}; families: "
                             f"{', '.join(corpus.FAMILIES)}")


@dataclass(frozen=True)
class WorldManifest:
    root: Path
    config: WorldConfig
    code_version: str
    fingerprint: str
    accuracy: dict[str, float]  # exact match of each model's greedy response vs the reference
    seconds: dict[str, float]

    # The base's instance scores on the eval prompts (floor check, floor.py); None for worlds
    # written before the check existed.
    base_density: BaseDensity | None = None

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
        raise ValueError(f"unknown world model {name!r}; valid names: {', '.join(ALIASES)}")
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
            "source": WORLD_SOURCE,  # one group: 20 prompts per family are too few to test each alone
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
    followed = frozenset(config.base_followed)

    def sample(rng: np.random.Generator):
        prompt, answer = corpus.pretraining_document(rng, config.min_context, config.max_context,
                                                     config.prompt_share, config.copy_share,
                                                     config.follow_share, held_out, followed)
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


def score_base(root: Path, max_new_tokens: int = 32) -> BaseDensity:
    """The base's instance scores on the eval prompts in ``root`` (each on its own greedy response,
    b = 7, as the verdicts), summarised for the floor check."""
    from transformers import AutoTokenizer

    from shiftcheck.probes.importance import ImportanceConfig, run_importance
    from shiftcheck.probes.prompts import load_prompts

    prompts = load_prompts(root / "prompts.jsonl")
    model = _load_staged(root / "base")
    tokenizer = AutoTokenizer.from_pretrained(root / "base")
    scores = run_importance(model, tokenizer, prompts, ImportanceConfig(max_new_tokens=max_new_tokens),
                            label="base").scores
    return base_density(scores)


def staging_dir(out: Path) -> Path:
    """Where a build of ``out`` stages its models until the world is whole: ``.<out>.staging``."""
    out = Path(out)
    return out.parent / f".{out.name}.staging"


def _remove_stale_temporaries(staging: Path, out: Path) -> list[Path]:
    """Remove ``.<name>.tmp-*`` directories left by killed builds (in the staging area, and the
    whole-world temporaries of earlier versions beside ``out``); returns what was removed."""
    stale = [p for p in staging.glob(".*.tmp-*")] + [p for p in out.parent.glob(f".{out.name}.tmp-*")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def _write_atomic(staging: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Write directory ``staging/name`` through a ``.<name>.tmp-*`` directory and a rename."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=staging))
    try:
        write(tmp)
        final = staging / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _load_staged(path: Path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32).eval()


def _stage_stamp(config: WorldConfig) -> dict:
    stamp = {"schema_version": SCHEMA_VERSION, "config": dataclasses.asdict(config),
             "code_version": code_version(), "torch_version": torch.__version__}
    return json.loads(json.dumps(stamp))  # as read back from build.json (tuples become lists)


def _build_into(config: WorldConfig, staging: Path, log: Callable[[str], None],
                seconds: dict[str, float], save_seconds: Callable[[], None]) -> dict:
    """Build what ``staging`` lacks, model by model; returns the world.json payload minus the
    fingerprint. Each model is saved whole before the next is trained; a model already staged is
    reused. Tunes always start from the base as saved and reloaded, so a resumed build gives the
    same bytes as an uninterrupted one."""
    vocab = corpus.vocabulary()
    ids = {w: i for i, w in enumerate(vocab)}
    tokenizer = build_tokenizer(vocab)
    bos, eos, pad = ids[BOS], ids[EOS], ids[PAD]
    lo, hi = config.min_context, config.max_context
    generation = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False)

    tasks = corpus.eval_tasks(_rng(config, "eval"), config.eval_per_family, lo, hi)
    held_out = frozenset(t.prompt for t in tasks)

    def logger(stage: str):
        return lambda step, loss: log(f"{stage}: step {step} loss {loss:.3f}")

    def save(model) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            model.generation_config = generation
            _save(model, tokenizer, tmp)
        return write

    resumed = []
    if (staging / "base" / "model.safetensors").is_file():
        log("base: staged by an earlier build, reusing it")
        resumed.append("base")
    else:
        log(f"base: training {config.pretrain_steps} steps")
        t0 = time.perf_counter()
        base = init_model(_model_config(config, len(vocab), ids), seed=config.seed)
        pre_cfg = TrainConfig(config.pretrain_steps, config.batch_size, config.pretrain_lr, config.warmup)
        train(base, pretrain_sampler(config, ids, held_out), pre_cfg, _rng(config, "pretrain"), pad,
              logger("base"))
        _write_atomic(staging, "base", save(base))
        seconds["base"] = time.perf_counter() - t0
        save_seconds()
        del base
    check_round_trip(staging / "base", tokenizer, [t.prompt for t in tasks[:8]] + ["write : . answer"])
    records = _prompt_records(tasks)
    _write_text_atomic(staging / "prompts.jsonl", "".join(json.dumps(rec) + "\n" for rec in records))
    t0 = time.perf_counter()
    floor = score_base(staging)
    seconds["base-density"] = time.perf_counter() - t0
    log(floor.summary())

    tune_cfg = TrainConfig(config.tune_steps, config.batch_size, config.tune_lr, config.warmup)
    # Continued pretraining: constant at the lr pretraining ended at, no warm-up (no re-warm).
    cpt_cfg = TrainConfig(config.tune_steps, config.batch_size, config.cpt_lr, warmup=0, min_lr_ratio=1.0)
    for name, sample, cfg in (("good", tune_sampler(config, ids, held_out, "good"), tune_cfg),
                              ("bad-copy", tune_sampler(config, ids, held_out, "copy"), tune_cfg),
                              ("bad-cpt", pretrain_sampler(config, ids, held_out), cpt_cfg)):
        if (staging / name / "model.safetensors").is_file():
            log(f"{name}: staged by an earlier build, reusing it")
            resumed.append(name)
            continue
        log(f"{name}: training {cfg.steps} steps")
        t0 = time.perf_counter()
        model = _load_staged(staging / "base")
        train(model, sample, cfg, _rng(config, f"tune-{name}"), pad, logger(name))
        _write_atomic(staging, name, save(model))
        seconds[name] = time.perf_counter() - t0
        save_seconds()
        del model

    t0 = time.perf_counter()
    accuracy = {name: float(exact_match(_load_staged(staging / name), tasks, ids,
                                        config.eval_max_new_tokens).mean())
                for name in MODEL_NAMES}
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
        "base_density": floor.to_dict(),
        "seconds": seconds,
        "resumed": resumed,
    }


def build_world(config: WorldConfig, out: Path, progress: Callable[[str], None] | None = None,
                overwrite: bool = False) -> WorldManifest:
    """Build the world for ``config`` into ``out`` and return its manifest.

    Models are staged one by one in :func:`staging_dir` (base, good, bad-copy, bad-cpt), each
    written atomically; a build killed part-way resumes at the first missing model when called
    again with the same config (a staging area of another config or code version is discarded).
    ``out`` appears, whole, by a rename at the end. The base is scored on the eval prompts as soon
    as it is staged (``manifest.base_density``, logged to ``progress``); a base near the density
    floor (floor.py) gives a :class:`BaseFloorWarning`: its world is no fair negative control.
    Refuses to replace an existing ``out`` unless ``overwrite``. ``progress`` receives log lines,
    e.g. ``"good: training 600 steps"`` or ``"base: staged by an earlier build, reusing it"``. One
    builder per ``out`` at a time (:func:`ensure_world` holds a lock).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --force) to rebuild it")
    log = progress or (lambda msg: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out)
    staging.mkdir(exist_ok=True)
    for path in _remove_stale_temporaries(staging, out):
        log(f"removed {path.name}, left by an interrupted build")
    stamp = _stage_stamp(config)
    stamp_path = staging / "build.json"
    seconds: dict[str, float] = {}
    if stamp_path.is_file():
        staged = json.loads(stamp_path.read_text())
        if staged.get("stamp") != stamp:
            log(f"discarding {staging.name}: staged by another config or code version")
            shutil.rmtree(staging)
            staging.mkdir()
        else:
            seconds.update(staged.get("seconds", {}))
    elif any(staging.iterdir()):
        shutil.rmtree(staging)
        staging.mkdir()

    def save_seconds() -> None:
        _write_text_atomic(stamp_path, json.dumps({"stamp": stamp, "seconds": seconds}, indent=2) + "\n")

    save_seconds()
    start = time.perf_counter()
    with deterministic_torch(config.num_threads):
        payload = _build_into(config, staging, log, seconds, save_seconds)
    payload["seconds"]["total"] = time.perf_counter() - start
    stamp_path.unlink()
    floor = BaseDensity(**{k: payload["base_density"][k] for k in ("mean", "std", "zero_share", "n_prompts")})
    if floor.near_floor:
        warnings.warn(floor.summary(), BaseFloorWarning, stacklevel=2)
    payload["fingerprint"] = fingerprint(staging)
    _write_text_atomic(staging / "world.json", json.dumps(payload, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
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
    config = dict(data["config"])
    if "base_followed" in config:
        config["base_followed"] = tuple(config["base_followed"])  # JSON has lists
    floor = data.get("base_density")
    return WorldManifest(Path(root), WorldConfig(**config), data["code_version"],
                         data["fingerprint"], data["accuracy"], data["seconds"],
                         None if floor is None else BaseDensity(floor["mean"], floor["std"],
                                                                floor["zero_share"], floor["n_prompts"]))


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


SHIPPED_DIR = Path(__file__).parent / "shipped"


def shipped_root(seed: int = 0) -> Path:
    """Where the shipped world of ``seed`` (default config) lives in the package: ``shipped/seed{seed}``."""
    return SHIPPED_DIR / f"seed{seed}"


def shipped_world(seed: int = 0) -> WorldManifest | None:
    """The shipped world of ``seed`` for the default config, or None when none is shipped, or the one
    shipped was built by other world code (then it is stale and the world is built instead).

    Raises ValueError when the shipped files do not match their recorded fingerprint (a damaged
    install): silently using other weights would change every verdict."""
    root = shipped_root(seed)
    if not (root / "world.json").is_file():
        return None
    manifest = load_manifest(root)
    if manifest.config != WorldConfig(seed=seed) or manifest.code_version != code_version():
        return None
    if fingerprint(root) != manifest.fingerprint:
        raise ValueError(f"the shipped world in {root} does not match its recorded fingerprint; "
                         "reinstall shiftcheck")
    return manifest


def ensure_world(cache_dir: Path, seed: int = 0, progress: Callable[[str], None] | None = None,
                 config: WorldConfig | None = None) -> WorldManifest:
    """The world for ``seed`` (default config unless ``config``): the shipped world when there is
    one for it, else built into the cache once.

    Concurrent callers (pytest-xdist workers) wait on a file lock, and the winner's atomic rename
    means a reader sees either no world or a whole one; a build killed part-way resumes.
    """
    from filelock import FileLock

    if config is not None and config.seed != seed:
        raise ValueError(f"config.seed={config.seed} differs from seed={seed}")
    if config is None or config == WorldConfig(seed=seed):
        shipped = shipped_world(seed)
        if shipped is not None:
            return shipped
    root = world_root(cache_dir, seed, config)
    if not (root / "world.json").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root) + ".lock"):
            if not (root / "world.json").is_file():
                build_world(config or WorldConfig(seed=seed), root, progress, overwrite=True)
    return load_manifest(root)


def resolve_world(name: str, cache_dir: Path, seed: int = 0) -> Path:
    """Checkpoint directory of world model ``name`` ("base", "null", "good", "bad-copy",
    "bad-cpt"): the shipped world for seed 0, else built into the cache on first use."""
    _check_name(name)
    return ensure_world(cache_dir, seed).model_dir(name)


def world_prompts_path(cache_dir: Path, seed: int = 0) -> Path:
    """The eval prompts JSONL of the world for ``seed`` (shipped for seed 0, else cached)."""
    return ensure_world(cache_dir, seed).prompts_path


def parse_world_spec(spec: str) -> tuple[str, int] | None:
    """``"world:good"`` -> ("good", 0); ``"world:good@seed=1"`` -> ("good", 1); others -> None."""
    if not spec.startswith("world:"):
        return None
    body = spec[len("world:"):]
    name, sep, option = body.partition("@")
    seed = 0
    if sep:
        key, eq, value = option.partition("=")
        if key != "seed" or not eq or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"bad world spec {spec!r}: expected 'world:NAME' or 'world:NAME@seed=INT'")
        seed = int(value)
    if name not in ALIASES:
        raise ValueError(f"unknown world model {name!r} in {spec!r}; valid names: {', '.join(ALIASES)}")
    return name, seed
