"""Pair validation: METHODS.md's implicit precondition that base and tuned share the architecture,
the shapes and the token ids that the probes compare.

Works on :class:`CheckpointInfo`, which :func:`~probes.models.loading.inspect_checkpoint` reads
without loading any weight, and which a loaded :class:`~probes.models.loading.Checkpoint` exposes
as ``.info``: one check, whether or not the weights are in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from shiftcheck.probes.models.errors import PairMismatchError
from shiftcheck.probes.models.tokenizer_checks import PROBE_TEXT


@dataclass(frozen=True)
class CheckpointInfo:
    """What pairing needs to know about a checkpoint: its HF architecture class, the dimensions of
    its weight views (same names as :class:`~probes.models.architectures.WeightViews`) and its
    checked fast tokenizer."""

    spec: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    tokenizer: Any
    config: Any = field(default=None, compare=False, repr=False)  # the parsed HF config, reused by a later load
    gguf: Any = field(default=None, compare=False, repr=False)  # a GGUF file's GgufParse, reused by that load


class HasInfo(Protocol):
    @property
    def info(self) -> CheckpointInfo: ...


@dataclass(frozen=True)
class PairInfo:
    """What the probes may compare. Token ids ``0 .. shared_vocab-1`` mean the same token in both
    tokenizers and have rows in both embedding matrices; ``warnings`` are tolerated differences."""

    shared_vocab: int
    warnings: tuple[str, ...]


SHAPE_FIELDS = ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp")


def _as_info(checkpoint: CheckpointInfo | HasInfo) -> CheckpointInfo:
    return checkpoint if isinstance(checkpoint, CheckpointInfo) else checkpoint.info


def _shape_differences(base: CheckpointInfo, tuned: CheckpointInfo) -> list[str]:
    diffs = []
    if base.architecture != tuned.architecture:
        diffs.append(f"architecture: base={base.architecture} tuned={tuned.architecture}")
    for name in SHAPE_FIELDS:
        b, t = getattr(base, name), getattr(tuned, name)
        if b != t:
            diffs.append(f"{name}: base={b} tuned={t}")
    return diffs


def _special_differences(base_tok: Any, tuned_tok: Any) -> list[str]:
    diffs = []
    for role in ("bos", "eos"):
        b = (getattr(base_tok, f"{role}_token"), getattr(base_tok, f"{role}_token_id"))
        t = (getattr(tuned_tok, f"{role}_token"), getattr(tuned_tok, f"{role}_token_id"))
        if b != t:
            diffs.append(f"{role.upper()}: base={b[0]!r} (id {b[1]}) tuned={t[0]!r} (id {t[1]})")
    return diffs


def validate_pair(base: CheckpointInfo | HasInfo, tuned: CheckpointInfo | HasInfo) -> PairInfo:
    """Check that ``tuned`` can be compared with ``base``.

    Raises :class:`PairMismatchError` when the architecture or any of n_layers, n_heads, n_kv_heads,
    d_model, d_head, d_mlp differ (every difference listed as ``field: base=.. tuned=..``), or when
    the tokenizers differ on the base vocabulary (a base token missing in tuned or mapped to another
    id, a tuned token inside the base id range, or different ids for the same text): "tokenizers
    differ", up to 10 tokens with both ids, the count, and any BOS/EOS differences.

    Tolerated with a warning: tuned adds tokens after the base vocabulary (e.g. chat special tokens
    or pad), resized embedding matrices, and different BOS/EOS tokens (chat models often end turns
    with their own EOS).

    Either side may be a :class:`CheckpointInfo` (no weights loaded) or a loaded checkpoint.
    """
    base, tuned = _as_info(base), _as_info(tuned)
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

    shared = min(base_size, len(tuned.tokenizer), base.d_vocab, tuned.d_vocab)
    warnings = []
    added = sorted((tid, tok) for tok, tid in tuned_vocab.items() if tok not in base_vocab)
    if added:
        shown = ", ".join(f"{tok!r}={tid}" for tid, tok in added[:10])
        warnings.append(
            f"tuned tokenizer adds {len(added)} token(s) after the base vocabulary: {shown}; "
            f"probes use the shared token ids 0..{shared - 1}"
        )
    if base.d_vocab != tuned.d_vocab:
        warnings.append(
            f"embedding rows differ (resized): base={base.d_vocab} tuned={tuned.d_vocab}; "
            f"probes use the shared token ids 0..{shared - 1}"
        )
    warnings += [f"special token differs: {line}" for line in specials]
    return PairInfo(shared_vocab=shared, warnings=tuple(warnings))
