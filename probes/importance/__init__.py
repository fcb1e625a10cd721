"""Probe 1: prompt -> response attribution and instruction "importance density".

METHODS.md §1 (paper §3.1, eq. 1-3). Axis vocabulary used in shape comments:
``prompt_len`` (N, attributed prompt tokens), ``resp_len`` (M, response tokens),
``seq_len`` (BOS + N + M), ``d_model`` (D).

Reading order: ``tokens`` (bookkeeping and greedy generation) -> ``attribution`` (raw importance I:
loop reference, batched VJP, batched JVP) -> ``density`` (S = normalise(I), density a, instance
score, position profile) -> this module: the result types, ``run_importance`` (the public entry
point) and storage. ``config`` and ``errors`` import nothing heavy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from shiftcheck.probes.importance.config import (  # noqa: F401 (re-exported)
    CODE_VERSION,
    ImportanceConfig,
    MODES,
)
from shiftcheck.probes.importance.errors import (  # noqa: F401 (re-exported)
    AttributionError,
    AttributionOOMError,
    NonFiniteAttributionError,
)
from shiftcheck.probes.importance.tokens import (  # noqa: F401 (re-exported)
    PromptEncoding,
    adds_bos,
    build_sequence,
    check_prompt_prefix,
    encode_prompt,
    eos_ids,
    generate_responses,
    greedy_config,
    instruction_mask_from_offsets,
    strip_response,
    templated_prompt,
)
from shiftcheck.probes.importance.attribution import (  # noqa: F401 (re-exported)
    _check_fp32,
    _is_oom,
    _positions,
    _reverse_pass,
    choose_mode,
    default_budget,
    default_chunk,
    final_hidden,
    head_cotangent,
    jvp_through_logits,
    pick_chunk,
    vjp_through_logits,
    importance_jvp,
    importance_loop,
    importance_vjp,
    input_embeddings,
    raw_importance,
    response_log_probs,
    run_chunked,
)
from shiftcheck.probes.importance.density import (  # noqa: F401 (re-exported)
    _SENTENCE_END,
    cut,
    density,
    instance_score,
    instruction_score,
    is_levels,
    normalise,
    normalised_density,
    position_profile,
    sentence_ids,
)
from shiftcheck.probes.prompts import Prompt

# ---------------------------------------------------------------------------------------------
# Results and the public entry point


@dataclass(frozen=True)
class InstanceAttribution:
    """One prompt's attribution: S0 are the b = 0 levels (prompt_len, resp_len), as in the release."""

    id: str
    source: str
    prompt_tokens: tuple[str, ...]
    response_tokens: tuple[str, ...]
    instruction_mask: np.ndarray  # (prompt_len,) bool
    S0: np.ndarray  # (prompt_len, resp_len) uint8 levels 0..L
    response_ids: tuple[int, ...] = ()
    response_text: str = ""

    @property
    def n_response_tokens(self) -> int:
        return int(self.S0.shape[1])

    def score(self, b: int = 7, p: float = 4.0) -> float:
        return instance_score(self.S0, self.instruction_mask, b, p)

    def a_hat(self, b: int = 7, p: float = 4.0) -> np.ndarray:
        return normalised_density(density(cut(self.S0, b), p))


@dataclass(frozen=True)
class ImportanceResult:
    """Attribution of one model over a prompt set; ``label`` names the model (or replay file)."""

    label: str
    instances: tuple[InstanceAttribution, ...]
    config: ImportanceConfig = field(default_factory=ImportanceConfig)

    @property
    def ids(self) -> list[str]:
        return [inst.id for inst in self.instances]

    @property
    def sources(self) -> list[str]:
        return [inst.source for inst in self.instances]

    @property
    def scores(self) -> np.ndarray:
        return np.array([inst.score(self.config.b, self.config.p) for inst in self.instances])

    def profile(self, instruction_only: bool = True) -> np.ndarray:
        """Mean position profile over instances with any density (Appendix B.3). Shape (4,)."""
        rows = []
        for inst in self.instances:
            a_hat = inst.a_hat(self.config.b, self.config.p)
            prof = position_profile(a_hat, inst.prompt_tokens, inst.instruction_mask if instruction_only else None)
            if prof.sum() > 0:
                rows.append(prof)
        return np.mean(rows, axis=0) if rows else np.zeros(4)

    def with_config(self, config: ImportanceConfig) -> "ImportanceResult":
        return replace(self, config=config)


def attribute_instance(
    model: torch.nn.Module,
    tokenizer,
    prompt: Prompt,
    enc: PromptEncoding,
    response_ids: Sequence[int],
    config: ImportanceConfig,
    progress: Callable[[float], None] | None = None,
) -> InstanceAttribution:
    """Raw I for one prompt and its response (whitespace-stripped, §1.2), quantised to b = 0 levels.
    ``progress(k)`` as k more response tokens are attributed (see :func:`raw_importance`)."""
    response_ids = strip_response(tokenizer, response_ids)
    check_prompt_prefix(tokenizer, enc, tokenizer.decode(list(response_ids), skip_special_tokens=True), prompt.id)
    I = raw_importance(model, enc, response_ids, config.mode, config.chunk_size, prompt.id,
                       config.attribution_memory, progress)
    return InstanceAttribution(
        id=prompt.id,
        source=prompt.source,
        prompt_tokens=enc.prompt_tokens,
        response_tokens=tuple(tokenizer.convert_ids_to_tokens(list(response_ids))),
        instruction_mask=enc.instruction_mask,
        S0=normalise(I, config.L, 0),
        response_ids=tuple(int(i) for i in response_ids),
        response_text=tokenizer.decode(list(response_ids), skip_special_tokens=True),
    )


ATTRIBUTE_STAGE = "attribution: response-token units"  # ends in " units": a CI log prints it too
PROGRESS_EVERY_S = 3.0  # one attribution pass can take tens of seconds on a CPU; the suite must show
# progress at least every 10 s, and a CI log prints one line per report, so reports are spaced


class _TokenProgress:
    """Counts attributed response tokens over all prompts and reports ``(stage, done, total)`` at
    most every PROGRESS_EVERY_S seconds. A unit that finishes sooner reports nothing (a CI log would
    otherwise get a line per prompt on small models); one that reported closes with done == total,
    which also closes its tqdm bar."""

    def __init__(self, progress: Callable[[str, int, int], None], total: int) -> None:
        self._progress, self._total = progress, total
        self._done = 0.0
        self._last = time.perf_counter()
        self._reported = False

    def add(self, k: float) -> None:
        self._done += k
        if time.perf_counter() - self._last >= PROGRESS_EVERY_S:
            self._report()

    def settle(self, done: int) -> None:
        """End of one prompt: the count is exact again (forward-mode fractions summed)."""
        self._done = float(done)
        due = time.perf_counter() - self._last >= PROGRESS_EVERY_S
        if due or (done >= self._total and self._reported):
            self._report()

    def _report(self) -> None:
        self._last = time.perf_counter()
        if self._total:
            self._reported = True
            self._progress(ATTRIBUTE_STAGE, min(self._total, int(self._done)), self._total)


def run_importance(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Prompt],
    config: ImportanceConfig = ImportanceConfig(),
    label: str = "model",
    progress: Callable[[str, int, int], None] | None = None,
    responses: Sequence[Sequence[int]] | None = None,
) -> ImportanceResult:
    """Probe 1 end to end: greedy own responses, then gradient x input attribution per prompt.

    ``responses`` (one token-id list per prompt) attributes those responses teacher-forced instead of
    generating: a release artifact is attributed on its source's responses, so that the two densities
    describe the same text (probes/release/forced.py).

    ``progress(stage, done, total)``: stage "generate" after each generation batch (in prompts);
    stage :data:`ATTRIBUTE_STAGE` as attribution passes finish, counted in response tokens over all
    prompts (one prompt on a 135M model takes tens of seconds, so per-prompt counts were too coarse),
    at most every PROGRESS_EVERY_S seconds and not at all for a unit that finishes sooner.
    """
    _check_fp32(model)
    encodings = [encode_prompt(tokenizer, pr, config.chat_template) for pr in prompts]
    done = {"n": 0}

    def gen_progress(k: int) -> None:
        done["n"] += k
        if progress is not None:
            progress("generate", done["n"], len(prompts))

    if responses is None:
        responses = generate_responses(
            model, tokenizer, encodings, config.max_new_tokens, config.generation_batch_size, gen_progress
        )
    elif len(responses) != len(prompts):
        raise ValueError(f"{len(responses)} responses given for {len(prompts)} prompts")
    responses = [strip_response(tokenizer, r) for r in responses]  # idempotent; gives the true total
    tokens = _TokenProgress(progress, sum(len(r) for r in responses)) if progress is not None else None
    instances, finished = [], 0
    grad_ctx = torch.enable_grad() if not torch.is_grad_enabled() else nullcontext()
    with grad_ctx:
        for pr, enc, resp in zip(prompts, encodings, responses):
            instances.append(attribute_instance(model, tokenizer, pr, enc, resp, config,
                                                None if tokens is None else tokens.add))
            finished += len(resp)
            if tokens is not None:
                tokens.settle(finished)
    return ImportanceResult(label=label, instances=tuple(instances), config=config)


# ---------------------------------------------------------------------------------------------
# Storage: a result <-> (JSON meta, numeric arrays) for the result cache; no pickle


def to_storage(result: ImportanceResult) -> tuple[dict, dict[str, np.ndarray]]:
    """Split a result into JSON-able meta and numeric arrays keyed ``<id>/S0`` and ``<id>/mask``."""
    meta = {
        "label": result.label,
        "instances": [
            {
                "id": inst.id,
                "source": inst.source,
                "prompt_tokens": list(inst.prompt_tokens),
                "response_tokens": list(inst.response_tokens),
                "response_ids": list(inst.response_ids),
                "response_text": inst.response_text,
            }
            for inst in result.instances
        ],
    }
    arrays: dict[str, np.ndarray] = {}
    for inst in result.instances:
        arrays[f"{inst.id}/S0"] = np.asarray(inst.S0, dtype=np.uint8)
        arrays[f"{inst.id}/mask"] = np.asarray(inst.instruction_mask, dtype=np.uint8)
    return meta, arrays


def from_storage(meta: dict, arrays: dict[str, np.ndarray], config: ImportanceConfig) -> ImportanceResult:
    """Exact inverse of :func:`to_storage`."""
    instances = []
    for rec in meta["instances"]:
        instances.append(
            InstanceAttribution(
                id=rec["id"],
                source=rec["source"],
                prompt_tokens=tuple(rec["prompt_tokens"]),
                response_tokens=tuple(rec["response_tokens"]),
                instruction_mask=np.asarray(arrays[f"{rec['id']}/mask"], dtype=bool),
                S0=np.asarray(arrays[f"{rec['id']}/S0"], dtype=np.uint8),
                response_ids=tuple(rec.get("response_ids", ())),
                response_text=rec.get("response_text", ""),
            )
        )
    return ImportanceResult(label=meta["label"], instances=tuple(instances), config=config)
