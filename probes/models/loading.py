"""Load a base or tuned checkpoint safely, inspect one without its weights, and check that a
base/tuned pair is comparable.

What loading guarantees (each failure is a :class:`CheckpointError` whose message names the cause):

* weights come from ``*.safetensors`` (``use_safetensors=True``, sharded or not) or from a GGUF
  file (dequantised to the requested dtype, see :mod:`~probes.models.gguf`); pickles are never
  loaded; a corrupt file is named before ``transformers`` sees it;
* a local path that does not exist fails as ``checkpoint not found: <path>`` without any network
  call; anything else is treated as a hub id (``from_pretrained`` with ``revision``);
* the tokenizer is a fast tokenizer (offsets are required by METHODS.md §1.7) and reproduces its
  own ``tokenizer.json``, or for a GGUF the vocabulary stored in the file (WORLD_NOTES.md: with
  transformers 5 a word-level tokenizer saved beside a Qwen2 config reloads as ``Qwen2Tokenizer``
  with wrong ids); see :mod:`~probes.models.tokenizer_checks`;
* the model is in ``eval()`` mode on the requested device (or placed by ``device_map``) and dtype,
  an optional PEFT adapter is merged into the weights, and :class:`~probes.architectures.WeightViews`
  are attached.

:func:`inspect_checkpoint` reads the same config and tokenizer (same checks) and builds the model on
the ``meta`` device, so :func:`validate_pair` (:mod:`~probes.models.pairs`) can refuse an
incompatible pair on every run without reading a weight.

Reading order: errors and options -> device/dtype parsing -> local pre-flight checks -> sources ->
:func:`inspect_checkpoint` -> :func:`load_checkpoint`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shiftcheck.probes.models.architectures import UnsupportedArchitectureError, WeightViews, get_adapter
from shiftcheck.probes.models.errors import CheckpointError, PairMismatchError
from shiftcheck.probes.models.fingerprint import looks_like_path
from shiftcheck.probes.models.gguf import check_gguf_file, check_gguf_tokenizer, folded_gguf_bars, gguf_location
from shiftcheck.probes.models.gguf_once import GgufParse, parsed_once
from shiftcheck.probes.models.pairs import CheckpointInfo, PairInfo, validate_pair
from shiftcheck.probes.models.tokenizer_checks import PROBE_TEXT, check_tokenizer

__all__ = [
    "PROBE_TEXT", "Checkpoint", "CheckpointError", "CheckpointInfo", "LoadOptions", "PairInfo", "PairMismatchError",
    "UnsupportedCheckpointArchitectureError", "check_tokenizer", "inspect_checkpoint", "load_checkpoint",
    "resolve_device", "resolve_dtype", "validate_pair",
]

# ---------------------------------------------------------------------------------------------
# Errors and options


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
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


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
    gguf_file: str | None = None  # name of a .gguf file inside the checkpoint directory (or hub repo)
    device_map: str | None = None  # e.g. "auto": transformers/accelerate place the layers; no .to(device)
    low_cpu_mem_usage: bool = False  # passed to from_pretrained only when True
    attn_implementation: str | None = None  # see ATTN_IMPLEMENTATIONS; None: the transformers default

    def __post_init__(self) -> None:
        resolve_dtype(self.dtype)
        _parse_device(self.device)
        if self.attn_implementation is not None and self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise CheckpointError(
                f"unknown attn_implementation {self.attn_implementation!r}; accepted values: "
                f"{', '.join(ATTN_IMPLEMENTATIONS)} (or None for the transformers default)"
            )
        if self.device_map is not None and (not isinstance(self.device_map, str) or not self.device_map.strip()):
            raise CheckpointError(
                f"device_map must be a non-empty string such as 'auto', 'cpu' or 'cuda:0', got {self.device_map!r}"
            )


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
        pickles = ", ".join(sorted(p.name for pattern in _PICKLE_PATTERNS for p in path.glob(pattern)))
        found = f"only pickled weights ({pickles}), never loaded since unpickling can run code" if pickles else \
            "no adapter_model.safetensors"
        raise CheckpointError(
            f"adapter {path} has {found}; only safetensors adapters are accepted. Convert once in a trusted "
            "environment: load the adapter (PeftModel.from_pretrained(base_model, path)) and "
            "save_pretrained(path, safe_serialization=True)"
        )
    for file in weights:
        _check_safetensors_file(file)
    return path




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


def _dtype_keyword() -> str:
    """transformers >= 4.56 takes ``dtype=``; older versions only ``torch_dtype=``."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


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


# ---------------------------------------------------------------------------------------------
# Sources: where config, tokenizer and weights come from


@dataclass(frozen=True)
class _Source:
    """A checked checkpoint spec: ``path`` is the local directory (None for a hub id), ``name`` what
    ``from_pretrained`` gets, ``gguf_file`` the GGUF file's name inside it, ``revision`` hub only."""

    spec: str
    path: Path | None
    name: str
    gguf_file: str | None
    revision: str | None
    trust_remote_code: bool

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by the config, tokenizer and model ``from_pretrained`` calls."""
        kwargs: dict[str, Any] = {}
        if self.revision is not None:
            kwargs["revision"] = self.revision
        if self.gguf_file is not None:
            kwargs["gguf_file"] = self.gguf_file
        if self.trust_remote_code:
            kwargs["trust_remote_code"] = True
        return kwargs


def _resolve_source(spec: str, options: LoadOptions) -> _Source:
    """Pre-flight checks of a local GGUF file or directory; hub ids pass through unchecked."""
    gguf = gguf_location(spec, options.gguf_file)
    if gguf is not None:
        directory, name = gguf
        check_gguf_file(directory / name)
        path, gguf_file = directory, name
    else:
        path, gguf_file = _local_directory(spec), options.gguf_file
        if path is not None:
            _preflight(path)
    revision = options.revision if path is None else None
    return _Source(spec, path, str(path) if path is not None else spec, gguf_file, revision, options.trust_remote_code)


def _source_error(exc: BaseException, src: _Source, what: str, path: Path | None = None) -> CheckpointError:
    path = path if path is not None else src.path
    if path is not None:
        return CheckpointError(f"could not load the {what} from {path}: {type(exc).__name__}: {exc}")
    at = f" at revision {src.revision!r}" if src.revision else ""
    return CheckpointError(
        f"could not load the {what} of {src.spec!r}{at} from the Hugging Face hub: {type(exc).__name__}: {exc}. "
        "The hub may be unreachable (offline machine), the id or revision may be wrong, or the repository "
        "may be gated or lack safetensors weights; pass a local checkpoint directory instead."
    )


def _load_config(src: _Source) -> Any:
    """The checkpoint's config; refuses an unsupported architecture before any weight is read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(src.name, **src.kwargs())
    except (OSError, ValueError) as exc:
        raise _source_error(exc, src, "config") from exc
    architecture = _causal_lm_class_name(config)
    if architecture is not None:
        _check_supported(architecture)  # before reading gigabytes of weights
    return config


def _cached_hub_file(repo: str, filename: str, revision: str | None) -> Path | None:
    """A file of a hub repository from the local hub cache (no network), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    cached = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(cached) if isinstance(cached, str) else None


def _load_tokenizer(src: _Source, adapter: Path | None) -> Any:
    """The checked fast tokenizer: the adapter's when it has a tokenizer.json, else the checkpoint's."""
    from transformers import AutoTokenizer

    if adapter is not None and (adapter / "tokenizer.json").is_file():
        name, path, kwargs = str(adapter), adapter, {"trust_remote_code": True} if src.trust_remote_code else {}
    else:
        name, path, kwargs = src.name, src.path, src.kwargs()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except Exception as exc:
        raise _source_error(exc, src, "tokenizer", path) from exc
    if "gguf_file" not in kwargs:
        saved = path / "tokenizer.json" if path is not None else _cached_hub_file(name, "tokenizer.json", src.revision)
        check_tokenizer(tokenizer, saved if saved is not None and saved.is_file() else None, origin=name)
        return tokenizer
    file = path / src.gguf_file if path is not None else _cached_hub_file(name, src.gguf_file, src.revision)
    if file is None:
        raise CheckpointError(f"GGUF file {src.gguf_file!r} of {src.spec!r} is not in the hub cache; cannot check "
                              "its tokenizer. Download it and pass the local file instead.")
    check_gguf_tokenizer(tokenizer, file, origin=f"{name} ({src.gguf_file})")
    return tokenizer


def _info(spec: str, views: WeightViews, tokenizer: Any, config: Any = None,
          gguf: GgufParse | None = None) -> CheckpointInfo:
    return CheckpointInfo(
        spec=spec, architecture=views.architecture, n_layers=views.n_layers, n_heads=views.n_heads,
        n_kv_heads=views.n_kv_heads, d_model=views.d_model, d_head=views.d_head, d_mlp=views.d_mlp,
        d_vocab=views.d_vocab, tokenizer=tokenizer, config=config, gguf=gguf,
    )


def _gguf_parse(src: _Source) -> GgufParse | None:
    """A shared parse for a local GGUF file; a hub GGUF is left to transformers."""
    return GgufParse(src.path / src.gguf_file) if src.path is not None and src.gguf_file is not None else None


def _parsed_once(parse: GgufParse | None) -> contextlib.AbstractContextManager[None]:
    return parsed_once(parse) if parse is not None else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Inspecting and loading


def inspect_checkpoint(spec: str | os.PathLike[str], options: LoadOptions = LoadOptions()) -> CheckpointInfo:
    """Architecture, dimensions and checked tokenizer of a checkpoint, without loading its weights.

    Runs every check of :func:`load_checkpoint` that needs no weight (pre-flight, supported
    architecture, adapter folder, tokenizer) and builds the model from its config on the ``meta``
    device, whose parameters have shapes but no data. An adapter (LoRA) keeps the base shapes.
    """
    from transformers import AutoModelForCausalLM

    spec = os.fspath(spec)
    src = _resolve_source(spec, options)
    adapter = _adapter_directory(options.adapter) if options.adapter is not None else None
    parse = _gguf_parse(src)
    with _parsed_once(parse):
        config = _load_config(src)
        try:
            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(config, **({"trust_remote_code": True} if src.trust_remote_code else {}))
        except Exception as exc:
            raise _source_error(exc, src, "model skeleton (from its config)") from exc
        _check_supported(type(skeleton).__name__)
        tokenizer = _load_tokenizer(src, adapter)
    return _info(spec, WeightViews(skeleton), tokenizer, config, parse)


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

    @property
    def info(self) -> CheckpointInfo:
        """The same record :func:`inspect_checkpoint` gives, read from the loaded weights."""
        return _info(self.spec, self.views, self.tokenizer, self.model.config)


def _model_kwargs(src: _Source, options: LoadOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {_dtype_keyword(): resolve_dtype(options.dtype), **src.kwargs()}
    if src.gguf_file is None:
        kwargs["use_safetensors"] = True
    if options.device_map is not None:
        kwargs["device_map"] = options.device_map
    if options.low_cpu_mem_usage:
        kwargs["low_cpu_mem_usage"] = True
    if options.attn_implementation is not None:
        kwargs["attn_implementation"] = options.attn_implementation
    return kwargs


def _move(model: Any, spec: str, device: torch.device) -> None:
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


def load_checkpoint(spec: str | os.PathLike[str], options: LoadOptions = LoadOptions(),
                    known: CheckpointInfo | None = None,
                    progress: Callable[[int, int], None] | None = None) -> Checkpoint:
    """Load a causal LM and its tokenizer from a local directory, a GGUF file or a hub id (see the
    module docstring).

    With ``options.adapter`` the PEFT adapter is merged into the weights, and the adapter folder's
    tokenizer is used when it has one. With ``options.device_map`` transformers places the model and
    ``options.device`` is not used. ``known``, what :func:`inspect_checkpoint` returned for the same
    spec and options, supplies the config and the checked tokenizer, so a GGUF file's metadata is
    not parsed again (tens of seconds each time). ``progress(done, total)`` receives a GGUF file's
    de-quantisation progress in place of transformers' own bar. Raises :class:`CheckpointError` (or
    a subclass) on any problem.
    """
    from transformers import AutoModelForCausalLM

    spec = os.fspath(spec)
    device = resolve_device(options.device) if options.device_map is None else None
    src = _resolve_source(spec, options)
    adapter = _adapter_directory(options.adapter) if options.adapter is not None else None
    # the parse inspect_checkpoint made of a GGUF file, dropped once the weights are in
    parse = known.gguf if known is not None and known.gguf is not None else _gguf_parse(src)
    try:
        with _parsed_once(parse):
            # a copy: from_pretrained records dtype and attention choices on the config it is given
            config = copy.deepcopy(known.config) if known is not None and known.config is not None else _load_config(src)
            try:
                with folded_gguf_bars(progress):
                    model = AutoModelForCausalLM.from_pretrained(src.name, config=config, **_model_kwargs(src, options))
            except Exception as exc:  # OSError, SafetensorError, size mismatches, ...
                raise _source_error(exc, src, "model weights") from exc
            tokenizer = known.tokenizer if known is not None else _load_tokenizer(src, adapter)
    finally:
        if parse is not None:
            parse.release()
    if adapter is not None:
        model = _merge_adapter(model, adapter)
    architecture = type(model).__name__
    _check_supported(architecture)
    if device is not None:
        _move(model, spec, device)
    model.eval()
    return Checkpoint(spec=spec, path=src.path, model=model, tokenizer=tokenizer, views=WeightViews(model),
                      options=options, architecture=architecture)
