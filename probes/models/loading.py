"""Load a base or tuned checkpoint safely and check that a base/tuned pair is comparable.

What loading guarantees (each failure is a :class:`CheckpointError` whose message names the cause):

* weights come from ``*.safetensors`` only (``use_safetensors=True``; pickles are never loaded);
  a corrupt file is named before ``transformers`` sees it;
* a local path that does not exist fails as ``checkpoint not found: <path>`` without any network
  call; anything else is treated as a hub id (``from_pretrained`` with ``revision``);
* the tokenizer is a fast tokenizer (offsets are required by METHODS.md §1.7) and reproduces its
  own ``tokenizer.json`` (WORLD_NOTES.md: with transformers 5 a word-level tokenizer saved beside a
  Qwen2 config reloads as ``Qwen2Tokenizer`` with wrong ids);
* the model is in ``eval()`` mode on the requested device and dtype, an optional PEFT adapter is
  merged into the weights, and :class:`~probes.architectures.WeightViews` are attached.

:func:`validate_pair` then checks METHODS.md's implicit precondition that both models share the
architecture, the shapes and the token ids that the probes compare.

Reading order: errors and options -> device/dtype parsing -> local pre-flight checks ->
tokenizer checks -> :func:`load_checkpoint` -> :func:`validate_pair`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shiftcheck.probes.models.architectures import UnsupportedArchitectureError, WeightViews, get_adapter
from shiftcheck.probes.models.fingerprint import looks_like_path

# ---------------------------------------------------------------------------------------------
# Errors and options


class CheckpointError(ValueError):
    """A checkpoint could not be loaded or used; base class of all loading errors."""


class PairMismatchError(CheckpointError):
    """Base and tuned checkpoints cannot be compared (shapes or tokenizers differ)."""


class UnsupportedCheckpointArchitectureError(CheckpointError, UnsupportedArchitectureError):
    """The checkpoint's architecture has no adapter (catchable as either parent)."""


DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "auto": "auto",  # the dtype stored in the checkpoint's config
}
DEVICE_SPECS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...)"
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_dtype(spec: str) -> torch.dtype | str:
    """A dtype name (see ``DTYPES``, case-insensitive) -> torch dtype; ``"auto"`` stays ``"auto"``."""
    try:
        return DTYPES[spec.strip().lower()]
    except (KeyError, AttributeError):
        raise CheckpointError(f"unknown dtype {spec!r}; accepted values: {', '.join(DTYPES)}") from None


def _parse_device(spec: str) -> tuple[str, int | None]:
    """Syntax check of a device string: (kind, index or None)."""
    match = _DEVICE_PATTERN.match(spec.strip().lower()) if isinstance(spec, str) else None
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise CheckpointError(f"unknown device {spec!r}; accepted values: {DEVICE_SPECS}")
    index = match.group(2)
    return match.group(1), (int(index) if index is not None else None)


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` -> ``cuda:0`` when CUDA is available else ``cpu``; ``"cpu"``; ``"cuda"`` (current
    CUDA device); ``"cuda:N"``. Raises :class:`CheckpointError` for other strings, and for CUDA
    devices when CUDA is unavailable or N is not below the device count.
    """
    kind, index = _parse_device(spec)
    if kind == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CheckpointError(f"device {spec!r} requested but CUDA is not available on this machine; use cpu or auto")
    count = torch.cuda.device_count()
    if index is None:
        index = torch.cuda.current_device()
    if index >= count:
        raise CheckpointError(
            f"device {spec!r} requested but only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", index)


@dataclass(frozen=True)
class LoadOptions:
    """How to load one checkpoint. Strings are validated on construction (devices: syntax only;
    availability is checked by :func:`resolve_device` at load time)."""

    revision: str | None = None  # hub revision (branch, tag or commit); ignored for local paths
    dtype: str = "float32"  # see DTYPES; attribution needs float32 (METHODS.md §7 "Precision")
    device: str = "cpu"  # see DEVICE_SPECS
    adapter: str | None = None  # PEFT adapter directory, merged into the weights (needs `peft`)
    trust_remote_code: bool = False  # passed to transformers only when True

    def __post_init__(self) -> None:
        resolve_dtype(self.dtype)
        _parse_device(self.device)


# ---------------------------------------------------------------------------------------------
# Local pre-flight checks (no network, no unpickling)


def _local_directory(spec: str) -> Path | None:
    """The local checkpoint directory for ``spec``, None for a hub id; raises when it is missing."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(
                f"checkpoint path is not a directory: {path} (expected a folder with config.json and *.safetensors)"
            )
        return path.resolve()
    if looks_like_path(spec):
        raise CheckpointError(f"checkpoint not found: {path}")
    return None


_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def _check_safetensors_file(file: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt"):
            pass  # opening parses the header and checks that the data covers the file
    except Exception as exc:  # SafetensorError, OSError, ...: all mean "unreadable"
        raise CheckpointError(f"corrupt safetensors file {file}: {exc}") from exc


def _preflight(path: Path) -> None:
    """Check a local checkpoint directory before transformers touches it."""
    if not (path / "config.json").is_file():
        hint = ""
        if (path / "adapter_config.json").is_file():
            hint = " It looks like a PEFT adapter: pass the base checkpoint as the spec and this folder as adapter."
        raise CheckpointError(f"no config.json in {path}: not a Hugging Face checkpoint directory.{hint}")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for pattern in _PICKLE_PATTERNS for p in path.glob(pattern))
        if pickles:
            raise CheckpointError(
                f"{path} has only pickled weights ({', '.join(pickles)}); only safetensors are accepted, because "
                "unpickling can run arbitrary code. Convert once in a trusted environment: "
                "AutoModelForCausalLM.from_pretrained(path, use_safetensors=False)"
                ".save_pretrained(path, safe_serialization=True)"
            )
        raise CheckpointError(f"no model weights (*.safetensors) in {path}")
    for file in weights:
        _check_safetensors_file(file)


def _adapter_directory(adapter: str) -> Path:
    """Check a PEFT adapter folder (exists, adapter_config.json, readable safetensors) and return it."""
    path = Path(adapter).expanduser().resolve()
    if not path.is_dir():
        raise CheckpointError(f"adapter not found: {path}")
    if not (path / "adapter_config.json").is_file():
        raise CheckpointError(f"no adapter_config.json in {path}: not a PEFT adapter directory")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(
            f"{path} has no adapter_model.safetensors; only safetensors adapters are accepted "
            "(save with save_pretrained(..., safe_serialization=True))"
        )
    for file in weights:
        _check_safetensors_file(file)
    return path


# ---------------------------------------------------------------------------------------------
# Tokenizer checks

PROBE_TEXT = "Write a short poem about the sea, then list three facts."


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()


def _vocab_sample_text(raw: Any, n: int = 32) -> str:
    """A text made of up to ``n`` ordinary vocabulary entries spread over the vocabulary.

    Decoded by the ``tokenizers`` library itself, so it consists of known tokens even for a
    word-level vocabulary where the English probe text is all unknown words.
    """
    special = set(raw.get_added_tokens_decoder())
    ids = [i for i in range(raw.get_vocab_size(with_added_tokens=False)) if i not in special]
    step = max(1, len(ids) // n)
    return raw.decode(ids[::step][:n], skip_special_tokens=True)


def check_tokenizer(tokenizer: Any, tokenizer_json: Path | None, origin: str) -> None:
    """Refuse a tokenizer whose ids cannot be trusted (see the module docstring).

    * must be fast (``is_fast``): offset mappings are needed for instruction spans (§1.7);
    * ``convert_tokens_to_ids(tokenize(t)) == tokenizer(t, add_special_tokens=False).input_ids``;
    * where ``tokenizer_json`` exists: same vocabulary and the same ids as
      ``tokenizers.Tokenizer.from_file(tokenizer_json)`` on a probe text and a vocabulary sample;
    * decoding the probe text gives the text back (up to whitespace and case) when no token is unknown.
    """
    name = type(tokenizer).__name__
    if not getattr(tokenizer, "is_fast", False):
        raise CheckpointError(
            f"tokenizer of {origin} is a slow tokenizer ({name}); a fast tokenizer is required because the "
            "probes need offset mappings. Provide a tokenizer.json (save a fast tokenizer with save_pretrained)."
        )
    texts = [PROBE_TEXT]
    raw = None
    if tokenizer_json is not None:
        from tokenizers import Tokenizer

        try:
            raw = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:
            raise CheckpointError(f"corrupt tokenizer file {tokenizer_json}: {exc}") from exc
        texts.append(_vocab_sample_text(raw))
        _check_same_vocab(tokenizer, raw, tokenizer_json, origin)
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        via_tokens = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
        if list(via_tokens) != list(ids):
            raise CheckpointError(
                f"tokenizer of {origin} ({name}) is inconsistent on {text!r}: tokenize+convert_tokens_to_ids "
                f"gives {via_tokens[:12]} but encoding gives {ids[:12]}"
            )
        if raw is not None:
            expected = raw.encode(text, add_special_tokens=False).ids
            if list(expected) != list(ids):
                raise CheckpointError(
                    f"tokenizer of {origin} does not reproduce its tokenizer.json: AutoTokenizer returned {name}, "
                    f"which encodes {text!r} as {ids[:12]}, but {tokenizer_json} gives {expected[:12]}. "
                    "transformers 5 rebuilds the tokenizer of some model types (e.g. Qwen2) from the vocabulary "
                    "alone (WORLD_NOTES.md), so every probe would use wrong token ids. Save a tokenizer of the "
                    "model family's own class, or a config whose model type keeps tokenizer.json (e.g. Llama)."
                )
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids
    if tokenizer.unk_token_id not in ids:
        decoded = tokenizer.decode(ids)
        if _squash(decoded) != _squash(PROBE_TEXT):
            raise CheckpointError(
                f"tokenizer of {origin} ({name}) does not decode its own ids: {PROBE_TEXT!r} -> {decoded!r}"
            )


def _check_same_vocab(tokenizer: Any, raw: Any, tokenizer_json: Path, origin: str) -> None:
    loaded = tokenizer.get_vocab()
    saved = raw.get_vocab(with_added_tokens=True)
    if loaded == saved:
        return
    differing = [
        f"{tok!r}: loaded={loaded.get(tok)} saved={saved.get(tok)}"
        for tok in sorted(set(loaded) | set(saved), key=lambda t: (saved.get(t, loaded.get(t)), t))
        if loaded.get(tok) != saved.get(tok)
    ]
    raise CheckpointError(
        f"tokenizer of {origin} ({type(tokenizer).__name__}, {len(loaded)} tokens) does not match {tokenizer_json} "
        f"({len(saved)} tokens); {len(differing)} tokens differ, e.g. {'; '.join(differing[:10])}"
    )


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``path`` is the local directory (None for a hub id); ``architecture`` is
    the HF class name (e.g. ``"LlamaForCausalLM"``)."""

    spec: str
    path: Path | None
    model: Any  # transformers PreTrainedModel, eval mode
    tokenizer: Any  # fast tokenizer (transformers TokenizersBackend / PreTrainedTokenizerFast)
    views: WeightViews
    options: LoadOptions
    architecture: str


def _causal_lm_class_name(config: Any) -> str | None:
    """The class name AutoModelForCausalLM will instantiate for ``config``, when it can be told."""
    auto_map = getattr(config, "auto_map", None) or {}
    if "AutoModelForCausalLM" in auto_map:
        return str(auto_map["AutoModelForCausalLM"]).rsplit(".", 1)[-1]
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - very old/new transformers layout
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = {}
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(getattr(config, "model_type", None))
    if isinstance(name, str):
        return name
    architectures = getattr(config, "architectures", None) or []
    return architectures[0] if architectures else None


def _check_supported(architecture: str) -> None:
    try:
        get_adapter(architecture)
    except UnsupportedArchitectureError as exc:
        raise UnsupportedCheckpointArchitectureError(str(exc)) from None


def _source_error(exc: BaseException, spec: str, path: Path | None, what: str, revision: str | None) -> CheckpointError:
    if path is not None:
        return CheckpointError(f"could not load the {what} from {path}: {type(exc).__name__}: {exc}")
    at = f" at revision {revision!r}" if revision else ""
    return CheckpointError(
        f"could not load the {what} of {spec!r}{at} from the Hugging Face hub: {type(exc).__name__}: {exc}. "
        "The hub may be unreachable (offline machine), the id or revision may be wrong, or the repository "
        "may be gated or lack safetensors weights; pass a local checkpoint directory instead."
    )


def _dtype_keyword() -> str:
    """transformers >= 4.56 takes ``dtype=``; older versions only ``torch_dtype=``."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _model_kwargs(options: LoadOptions, path: Path | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"use_safetensors": True, _dtype_keyword(): resolve_dtype(options.dtype)}
    if path is None and options.revision is not None:
        kwargs["revision"] = options.revision
    if options.trust_remote_code:
        kwargs["trust_remote_code"] = True
    return kwargs


def _merge_adapter(model: Any, directory: Path) -> Any:
    """Load a PEFT adapter onto ``model`` and merge it, so views and forward use the tuned weights."""
    try:
        from peft import PeftModel
    except ImportError:
        raise CheckpointError(
            f"adapter {str(directory)!r} given but the optional dependency peft is not installed: pip install peft "
            "(or shiftcheck[peft])"
        ) from None
    try:
        return PeftModel.from_pretrained(model, str(directory)).merge_and_unload()
    except Exception as exc:
        raise CheckpointError(f"could not apply the adapter {directory}: {type(exc).__name__}: {exc}") from exc


def _tokenizer_json(source: str, path: Path | None, revision: str | None) -> Path | None:
    """Where the tokenizer.json used for the check lives: the local folder or the hub cache (no network)."""
    if path is not None:
        candidate = path / "tokenizer.json"
        return candidate if candidate.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    cached = try_to_load_from_cache(source, "tokenizer.json", revision=revision)
    return Path(cached) if isinstance(cached, str) else None


def load_checkpoint(spec: str | os.PathLike[str], options: LoadOptions = LoadOptions()) -> Checkpoint:
    """Load a causal LM and its tokenizer from a local directory or a hub id (see module docstring).

    With ``options.adapter`` the PEFT adapter is merged into the weights, and the adapter folder's
    tokenizer is used when it has one. Raises :class:`CheckpointError` (or a subclass) on any problem.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = os.fspath(spec)
    device = resolve_device(options.device)
    path = _local_directory(spec)
    if path is not None:
        _preflight(path)
    adapter = _adapter_directory(options.adapter) if options.adapter is not None else None
    source = str(path) if path is not None else spec
    kwargs = _model_kwargs(options, path)
    remote = {"trust_remote_code": True} if options.trust_remote_code else {}
    revision = kwargs.get("revision")

    try:
        config = AutoConfig.from_pretrained(source, **({"revision": revision} if revision else {}), **remote)
    except (OSError, ValueError) as exc:
        raise _source_error(exc, spec, path, "config", revision) from exc
    architecture = _causal_lm_class_name(config)
    if architecture is not None:
        _check_supported(architecture)  # before reading gigabytes of weights

    try:
        model = AutoModelForCausalLM.from_pretrained(source, config=config, **kwargs)
    except Exception as exc:  # OSError, SafetensorError, size mismatches, ...
        raise _source_error(exc, spec, path, "model weights", revision) from exc
    if adapter is not None:
        model = _merge_adapter(model, adapter)
    architecture = type(model).__name__
    _check_supported(architecture)
    try:
        model.to(device)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "out of memory" not in str(exc).lower():
            raise
        n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        raise CheckpointError(
            f"out of memory moving {spec!r} ({n_bytes / 2**30:.1f} GiB of weights) to {device}; "
            "free the device, pick another with --device cuda:N, or run on --device cpu"
        ) from exc
    model.eval()

    tokenizer_source, tokenizer_path = source, path
    if adapter is not None and (adapter / "tokenizer.json").is_file():
        tokenizer_source, tokenizer_path = str(adapter), adapter
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_source, **({"revision": revision} if revision and tokenizer_path is None else {}), **remote
        )
    except Exception as exc:
        raise _source_error(exc, spec, tokenizer_path, "tokenizer", revision) from exc
    check_tokenizer(tokenizer, _tokenizer_json(tokenizer_source, tokenizer_path, revision), origin=tokenizer_source)

    return Checkpoint(
        spec=spec,
        path=path,
        model=model,
        tokenizer=tokenizer,
        views=WeightViews(model),
        options=options,
        architecture=architecture,
    )


# ---------------------------------------------------------------------------------------------
# Pair validation


@dataclass(frozen=True)
class PairInfo:
    """What the probes may compare. Token ids ``0 .. shared_vocab-1`` mean the same token in both
    tokenizers and have rows in both embedding matrices; ``warnings`` are tolerated differences."""

    shared_vocab: int
    warnings: tuple[str, ...]


_SHAPE_FIELDS = ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp")


def _shape_differences(base: Checkpoint, tuned: Checkpoint) -> list[str]:
    diffs = []
    if base.architecture != tuned.architecture:
        diffs.append(f"architecture: base={base.architecture} tuned={tuned.architecture}")
    for field in _SHAPE_FIELDS:
        b, t = getattr(base.views, field), getattr(tuned.views, field)
        if b != t:
            diffs.append(f"{field}: base={b} tuned={t}")
    return diffs


def _special_differences(base_tok: Any, tuned_tok: Any) -> list[str]:
    diffs = []
    for role in ("bos", "eos"):
        b = (getattr(base_tok, f"{role}_token"), getattr(base_tok, f"{role}_token_id"))
        t = (getattr(tuned_tok, f"{role}_token"), getattr(tuned_tok, f"{role}_token_id"))
        if b != t:
            diffs.append(f"{role.upper()}: base={b[0]!r} (id {b[1]}) tuned={t[0]!r} (id {t[1]})")
    return diffs


def validate_pair(base: Checkpoint, tuned: Checkpoint) -> PairInfo:
    """Check that ``tuned`` can be compared with ``base``.

    Raises :class:`PairMismatchError` when the architecture or any of n_layers, n_heads, n_kv_heads,
    d_model, d_head, d_mlp differ (every difference listed as ``field: base=.. tuned=..``), or when
    the tokenizers differ on the base vocabulary (a base token missing in tuned or mapped to another
    id, a tuned token inside the base id range, or different ids for the same text): "tokenizers
    differ", up to 10 tokens with both ids, the count, and any BOS/EOS differences.

    Tolerated with a warning: tuned adds tokens after the base vocabulary (e.g. chat special tokens
    or pad), resized embedding matrices, and different BOS/EOS tokens (chat models often end turns
    with their own EOS).
    """
    shape_diffs = _shape_differences(base, tuned)
    if shape_diffs:
        raise PairMismatchError("base and tuned checkpoints differ in shape:\n  " + "\n  ".join(shape_diffs))

    base_vocab, tuned_vocab = base.tokenizer.get_vocab(), tuned.tokenizer.get_vocab()
    base_size = len(base.tokenizer)
    differing = [
        f"{tok!r}: base={bid} tuned={tuned_vocab.get(tok, 'missing')}"
        for tok, bid in sorted(base_vocab.items(), key=lambda item: item[1])
        if tuned_vocab.get(tok) != bid
    ]
    differing += [
        f"{tok!r}: base=missing tuned={tid}"
        for tok, tid in sorted(tuned_vocab.items(), key=lambda item: item[1])
        if tok not in base_vocab and tid < base_size
    ]
    specials = _special_differences(base.tokenizer, tuned.tokenizer)
    if differing:
        lines = [f"tokenizers differ: {len(differing)} token(s) have different ids, e.g."]
        lines += [f"  {line}" for line in differing[:10]]
        lines += [f"  {line}" for line in specials]
        raise PairMismatchError("\n".join(lines))
    base_ids = base.tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids
    tuned_ids = tuned.tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids
    if list(base_ids) != list(tuned_ids):
        raise PairMismatchError(
            f"tokenizers differ: same vocabulary but {PROBE_TEXT!r} encodes as base={base_ids[:12]} "
            f"tuned={tuned_ids[:12]} (different merges or normalisation)"
        )

    shared = min(base_size, len(tuned.tokenizer), base.views.d_vocab, tuned.views.d_vocab)
    warnings = []
    added = sorted((tid, tok) for tok, tid in tuned_vocab.items() if tok not in base_vocab)
    if added:
        shown = ", ".join(f"{tok!r}={tid}" for tid, tok in added[:10])
        warnings.append(
            f"tuned tokenizer adds {len(added)} token(s) after the base vocabulary: {shown}; "
            f"probes use the shared token ids 0..{shared - 1}"
        )
    if base.views.d_vocab != tuned.views.d_vocab:
        warnings.append(
            f"embedding rows differ (resized): base={base.views.d_vocab} tuned={tuned.views.d_vocab}; "
            f"probes use the shared token ids 0..{shared - 1}"
        )
    warnings += [f"special token differs: {line}" for line in specials]
    return PairInfo(shared_vocab=shared, warnings=tuple(warnings))
