"""KL preflight: mean per-token KL(tuned || base) on the tuned model's own greedy responses.

Both models are teacher-forced on the same token sequences (prompt + the tuned model's response);
at every response position each gives a next-token distribution, and the preflight averages
KL(p_tuned || p_base) over the response tokens. One model is resident at a time: the tuned pass
keeps, per response token, only the ``k`` most likely next tokens under the tuned model plus one
*tail bucket* holding the rest of its mass; the base pass reads those and computes

    KL_k = sum_{i in top-k} p_i log(p_i / q_i) + P_T log(P_T / Q_T),

with P_T, Q_T the two models' mass outside the tuned top-k. This is the exact KL between the two
distributions coarse-grained onto k + 1 bins, so by the log-sum inequality

    0 <= KL - KL_k = P_T * KL(p restricted to the tail || q restricted to the tail),

i.e. the approximation never overstates the divergence, is exact when the tuned model puts no mass
in the tail, is 0 for identical models, and misses only the divergence *inside* the tuned model's
tail, weighted by the tail mass (reported as ``mean_tail_mass``). ``tests/test_kl.py`` checks these
against the exact KL of tiny models.

The tuned responses are those finding 1's attribution generated (read from its cache entries), so
no text is generated twice; without them (finding 1 not planned) the tuned pass generates them
with the same greedy settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftcheck.probes.cache_key import CacheEntry
from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.units import StageProgress, Unit, unit_key

CODE_VERSION = "kl-1"
TOP_K = 64  # next tokens kept per response position; the rest of the mass is one tail bucket
POOLED = "pooled"
# Mean per-token KL below which two *different* files are said to behave identically (the same
# model up to storage precision). Measured on the world's 140 prompts (docs/RELEASE.md): a re-saved
# copy 0, fp16 cast 1.6e-8, bf16 cast 1.4e-6, int8 round-to-nearest 2.0e-5 nats/token; the closest
# real tune, bad-cpt vs base, 5.7e-2 (good vs base 0.62); on the re-shipped world int8 2.9e-5 and
# bad-cpt vs base 3.6e-2. 1e-3 sits 34-57x from both sides.
IDENTICAL_KL = 1e-3


class KLError(RuntimeError):
    """The preflight cannot run as asked (the tuned pass's stored distributions are missing)."""


# ---------------------------------------------------------------------------------------------
# maths on one sequence (torch only inside: the module imports without it)


def response_log_probs(model: Any, context_ids: Sequence[int], response_ids: Sequence[int]):
    """Next-token log-probabilities (float64) at the positions that predict each response token.
    Shape (resp_len, vocab). Teacher-forced: one forward over context + response."""
    import torch

    ids = torch.tensor([list(context_ids) + list(response_ids)], dtype=torch.long,
                       device=model.get_input_embeddings().weight.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    start = len(context_ids) - 1
    return torch.log_softmax(logits[start : start + len(response_ids)].double(), dim=-1)


def _tail_log_mass(logp, ids):
    """log of the mass outside ``ids`` per row, by a masked logsumexp (no 1 - sum cancellation)."""
    import torch

    masked = logp.scatter(-1, ids, float("-inf"))
    return torch.logsumexp(masked, dim=-1)


def top_k_of(logp, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (M, k) int32, their log-probs (M, k) float64, log tail mass (M,) float64) of each row."""
    k = min(k, logp.shape[-1])
    vals, ids = logp.topk(k, dim=-1)
    tail = _tail_log_mass(logp, ids)
    return ids.cpu().numpy().astype(np.int32), vals.cpu().numpy(), tail.cpu().numpy()


def kl_from_top_k(ids: np.ndarray, logp_top: np.ndarray, log_tail: np.ndarray, logq) -> np.ndarray:
    """Per-token KL_k(p || q) from p's stored top-k + tail and q's full log-probs (M, V). Shape (M,)."""
    import torch

    idx = torch.as_tensor(ids, dtype=torch.long, device=logq.device)
    logq_top = logq.gather(-1, idx).cpu().numpy()
    logq_tail = _tail_log_mass(logq, idx).cpu().numpy()
    p_top, p_tail = np.exp(logp_top), np.exp(log_tail)
    top = (p_top * (logp_top - logq_top)).sum(-1)
    # a tail the tuned model gives no mass adds nothing (0 log 0 = 0)
    tail = np.zeros_like(p_tail)
    some = p_tail > 0
    tail[some] = p_tail[some] * (log_tail[some] - logq_tail[some])
    return np.maximum(top + tail, 0.0)  # >= 0 in exact arithmetic; rounding can dip below


def exact_kl(logp, logq) -> np.ndarray:
    """Per-row KL(p || q) from full log-probs (M, V): the reference the approximation is tested on."""
    p = logp.exp()
    return (p * (logp - logq)).sum(-1).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class PromptKL:
    id: str
    source: str
    kl: np.ndarray  # (resp_len,) per-token KL_k(tuned || base), nats
    tail_mass: np.ndarray  # (resp_len,) tuned mass outside its top-k: the approximation's reach
    top1_agree: np.ndarray  # (resp_len,) bool: the base's most likely next token is the tuned one's


@dataclass(frozen=True)
class KLRow:
    """One group's preflight numbers (a prompt source, or ``pooled``)."""

    group: str
    n_prompts: int
    n_tokens: int
    mean_kl: float | None  # mean over response tokens, nats/token; None without tokens
    max_prompt_kl: float | None  # the largest per-prompt mean
    mean_tail_mass: float | None
    top1_agreement: float | None  # share of response tokens whose greedy next token agrees

    def to_dict(self) -> dict:
        return {"group": self.group, "n_prompts": self.n_prompts, "n_tokens": self.n_tokens,
                "mean_kl": self.mean_kl, "max_prompt_kl": self.max_prompt_kl,
                "mean_tail_mass": self.mean_tail_mass, "top1_agreement": self.top1_agreement}


def _row(group: str, items: Sequence[PromptKL]) -> KLRow:
    with_tokens = [p for p in items if p.kl.size]
    if not with_tokens:
        return KLRow(group, len(items), 0, None, None, None, None)
    kl = np.concatenate([p.kl for p in with_tokens])
    return KLRow(group, len(items), int(kl.size), float(kl.mean()), float(max(p.kl.mean() for p in with_tokens)),
                 float(np.concatenate([p.tail_mass for p in with_tokens]).mean()),
                 float(np.concatenate([p.top1_agree for p in with_tokens]).mean()))


@dataclass(frozen=True)
class KLResult:
    """KL(reference || other) per prompt; ``reference`` is the tuned (or source) model."""

    reference: str
    other: str
    k: int
    prompts: tuple[PromptKL, ...]

    def rows(self) -> list[KLRow]:
        """One row per prompt source (sorted), then ``pooled`` over every response token."""
        sources = sorted({p.source for p in self.prompts})
        rows = [_row(s, [p for p in self.prompts if p.source == s]) for s in sources]
        return rows + [_row(POOLED, self.prompts)]

    @property
    def pooled(self) -> KLRow:
        return _row(POOLED, self.prompts)

    def identical(self, threshold: float = IDENTICAL_KL) -> bool:
        """Both models give the same next-token distributions, to numerical precision."""
        mean = self.pooled.mean_kl
        return mean is not None and mean < threshold

    def per_prompt(self) -> dict[str, float | None]:
        return {p.id: (float(p.kl.mean()) if p.kl.size else None) for p in self.prompts}

    def to_dict(self) -> dict:
        return {"reference": self.reference, "other": self.other, "k": self.k,
                "approximation": "top-k + tail bucket (lower bound of the exact KL; docs/RELEASE.md)",
                "per_source": {r.group: r.to_dict() for r in self.rows() if r.group != POOLED},
                "pooled": self.pooled.to_dict(), "per_prompt": self.per_prompt()}


def table(result: KLResult) -> list[str]:
    """The preflight table, one line per group (terminal, ``shiftcheck kl``)."""
    f = lambda x, spec: "n/a" if x is None else format(x, spec)  # noqa: E731
    lines = [f"{'group':<16} {'prompts':>7} {'tokens':>7} {'KL nats/token':>14} {'max prompt':>11} "
             f"{'tail mass':>10} {'top-1 agree':>11}"]
    for r in result.rows():
        lines.append(f"{r.group:<16} {r.n_prompts:>7} {r.n_tokens:>7} {f(r.mean_kl, '14.3e')} "
                     f"{f(r.max_prompt_kl, '11.3e')} {f(r.mean_tail_mass, '10.2e')} {f(r.top1_agreement, '11.3f')}")
    return lines


# ---------------------------------------------------------------------------------------------
# the two passes on one shard of prompts


def _contexts(tokenizer, prompts: Sequence[Prompt], chat_template: bool) -> list[tuple[int, ...]]:
    from shiftcheck.probes.importance.tokens import encode_prompt

    out = []
    for p in prompts:
        enc = encode_prompt(tokenizer, p, chat_template)
        out.append(tuple(enc.prefix_ids) + tuple(enc.prompt_ids))
    return out


def greedy_responses(model: Any, tokenizer, prompts: Sequence[Prompt], max_new_tokens: int,
                     chat_template: bool, batch_size: int = 8) -> list[tuple[int, ...]]:
    """The tuned model's responses exactly as finding 1 generates them (greedy, whitespace-stripped)."""
    from shiftcheck.probes.importance.tokens import encode_prompt, generate_responses, strip_response

    encodings = [encode_prompt(tokenizer, p, chat_template) for p in prompts]
    raw = generate_responses(model, tokenizer, encodings, max_new_tokens, batch_size)
    return [strip_response(tokenizer, r) for r in raw]


def reference_pass(model: Any, tokenizer, prompts: Sequence[Prompt], responses: Sequence[Sequence[int]],
                   chat_template: bool, k: int = TOP_K) -> CacheEntry:
    """The tuned (reference) pass: each response token's top-k next-token distribution + tail."""
    arrays: dict[str, np.ndarray] = {}
    for p, ctx, resp in zip(prompts, _contexts(tokenizer, prompts, chat_template), responses):
        resp = [int(t) for t in resp]
        arrays[f"{p.id}/resp"] = np.asarray(resp, dtype=np.int64)
        if not resp:
            continue
        ids, vals, tail = top_k_of(response_log_probs(model, ctx, resp), k)
        arrays[f"{p.id}/ids"], arrays[f"{p.id}/logp"], arrays[f"{p.id}/tail"] = ids, vals, tail
    meta = {"role": "reference", "k": k, "instances": [{"id": p.id, "source": p.source} for p in prompts]}
    return CacheEntry(meta=meta, arrays=arrays)


def other_pass(model: Any, tokenizer, prompts: Sequence[Prompt], reference: CacheEntry,
               chat_template: bool) -> CacheEntry:
    """The base (other) pass: per-token KL_k(reference || this model) on the reference's responses."""
    arrays: dict[str, np.ndarray] = {}
    for p, ctx in zip(prompts, _contexts(tokenizer, prompts, chat_template)):
        resp = [int(t) for t in reference.arrays[f"{p.id}/resp"]]
        if not resp:
            for name in ("kl", "tail", "agree"):
                arrays[f"{p.id}/{name}"] = np.zeros(0)
            continue
        logq = response_log_probs(model, ctx, resp)
        ids, logp_top, log_tail = (reference.arrays[f"{p.id}/{n}"] for n in ("ids", "logp", "tail"))
        arrays[f"{p.id}/kl"] = kl_from_top_k(ids, logp_top, log_tail, logq)
        arrays[f"{p.id}/tail"] = np.exp(log_tail)
        arrays[f"{p.id}/agree"] = (logq.argmax(-1).cpu().numpy() == ids[:, 0]).astype(np.uint8)
    meta = {"role": "other", "k": int(reference.meta["k"]),
            "instances": [{"id": p.id, "source": p.source} for p in prompts]}
    return CacheEntry(meta=meta, arrays=arrays)


def result_from_entries(reference: str, other: str, entries: Sequence[CacheEntry]) -> KLResult:
    items = []
    k = 0
    for e in entries:
        k = int(e.meta["k"])
        for inst in e.meta["instances"]:
            a = e.arrays
            items.append(PromptKL(inst["id"], inst["source"], np.asarray(a[f"{inst['id']}/kl"], dtype=np.float64),
                                  np.asarray(a[f"{inst['id']}/tail"], dtype=np.float64),
                                  np.asarray(a[f"{inst['id']}/agree"]).astype(bool)))
    return KLResult(reference, other, k, tuple(items))


# ---------------------------------------------------------------------------------------------
# the probe the runner plans (reference = the tuned checkpoint; its pass must run first)


@dataclass(frozen=True)
class KLProbe:
    """The preflight as a planned probe: one unit per shard of finding 1's prompt shards.

    On the reference checkpoint (recognised by its location) a unit stores the top-k distributions;
    on the other one it reads them from the cache and stores per-token KL. ``reference_first`` asks
    the runner to load the reference checkpoint before the other one.
    """

    prompts: tuple[Prompt, ...]
    reference_location: str
    reference_fingerprint: str
    cache: Any  # the run's ResultCache (the other pass reads the reference pass's entries)
    max_new_tokens: int = 300
    chat_template: bool = False
    dtype: str = "float32"
    k: int = TOP_K
    responses_from: Any = None  # finding 1's ImportanceProbe: its tuned entries hold the responses
    shard_size: int = 16
    name: str = "kl"
    code_version: str = CODE_VERSION
    reference_first: bool = True

    def _shards(self) -> list[tuple[Prompt, ...]]:
        return [self.prompts[i : i + self.shard_size] for i in range(0, len(self.prompts), self.shard_size)]

    def cache_config(self) -> dict[str, Any]:
        return {"k": self.k, "max_new_tokens": self.max_new_tokens, "chat_template": self.chat_template,
                "dtype": self.dtype, "reference": self.reference_fingerprint}

    def units(self) -> list[Unit]:
        from shiftcheck.probes.importance.probe import prompts_digest

        return [{"prompts": prompts_digest(part)} for part in self._shards()]

    def _part(self, unit: Unit) -> tuple[Prompt, ...]:
        from shiftcheck.probes.importance.probe import prompts_digest

        return next(p for p in self._shards() if prompts_digest(p) == unit["prompts"])

    def _stored_responses(self, part: Sequence[Prompt], unit: Unit) -> list[tuple[int, ...]] | None:
        """The tuned responses finding 1 stored for this shard, when its shards are these shards."""
        probe = self.responses_from
        if probe is None or unit not in probe.units():
            return None
        from shiftcheck.probes.importance.probe import stored_responses

        entry = self.cache.load(unit_key(probe, self.reference_fingerprint, unit))
        return None if entry is None else stored_responses(entry, part)

    def run_unit(self, checkpoint: Any, unit: Unit, progress: StageProgress | None) -> CacheEntry:
        part = self._part(unit)
        model, tokenizer = checkpoint.model, checkpoint.tokenizer
        if str(checkpoint.spec) == self.reference_location:
            responses = self._stored_responses(part, unit)
            if responses is None:
                responses = greedy_responses(model, tokenizer, part, self.max_new_tokens, self.chat_template)
            return reference_pass(model, tokenizer, part, responses, self.chat_template, self.k)
        reference = self.cache.load(unit_key(self, self.reference_fingerprint, unit))
        if reference is None:
            raise KLError("the KL preflight's tuned pass has not stored its distributions for this shard: the "
                          "tuned checkpoint must be run before the base (PairRunner plans it first)")
        return other_pass(model, tokenizer, part, reference, self.chat_template)

    def combine(self, label: str, entries: Sequence[CacheEntry]) -> KLResult | None:
        """The KL on the other model's entries; None on the reference's own (they hold no KL)."""
        if not entries or entries[0].meta.get("role") != "other":
            return None
        return result_from_entries("tuned", label, entries)
