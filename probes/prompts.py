"""Prompt sets and human ratings (METHODS.md §6).

A prompt is the text fed to both models plus the character spans of its instruction part.
Ratings are the human helpfulness levels used by the followed-vs-unfollowed comparison (§1.8).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path


class PromptFormatError(ValueError):
    """A prompt or ratings file does not follow METHODS.md §6."""


@dataclass(frozen=True)
class Prompt:
    """One prompt with its instruction spans.

    ``instruction_char_spans`` are ``[start, end)`` Python string indices into ``prompt``.
    """

    id: str
    source: str
    prompt: str
    instruction_char_spans: tuple[tuple[int, int], ...]
    reference: str | None = None
    subset: str = ""
    instruction_spans: tuple[str, ...] = field(default_factory=tuple)


def check_spans(prompt: str, spans: tuple[tuple[int, int], ...], where: str) -> None:
    """Reject spans that are empty, reversed or outside the prompt text."""
    for start, end in spans:
        if not (0 <= start < end <= len(prompt)):
            raise PromptFormatError(
                f"{where}: instruction span [{start}, {end}) lies outside the prompt "
                f"(prompt has {len(prompt)} characters; spans must satisfy 0 <= start < end <= len)"
            )


def prompt_from_record(record: dict, where: str) -> Prompt:
    """Build a :class:`Prompt` from one JSONL record, validating every field."""
    missing = [k for k in ("id", "prompt", "instruction_char_spans") if k not in record]
    if missing:
        raise PromptFormatError(f"{where}: missing field(s) {missing}; required: id, prompt, instruction_char_spans")
    text = record["prompt"]
    if not isinstance(text, str) or not text.strip():
        raise PromptFormatError(f"{where}: 'prompt' must be a non-empty string")
    try:
        spans = tuple((int(s), int(e)) for s, e in record["instruction_char_spans"])
    except (TypeError, ValueError) as exc:
        raise PromptFormatError(f"{where}: 'instruction_char_spans' must be a list of [start, end] pairs") from exc
    check_spans(text, spans, f"{where} (id={record['id']})")
    return Prompt(
        id=str(record["id"]),
        source=str(record.get("source") or source_from_id(str(record.get("id", "")))),
        prompt=text,
        instruction_char_spans=spans,
        reference=record.get("reference"),
        subset=str(record.get("subset") or ""),
        instruction_spans=tuple(record.get("instruction_spans") or ()),
    )


_ID_PREFIXES = (("user_oriented_task_", "self-instruct"), ("lima_author_", "lima"), ("lima_", "lima"),
                ("mtbench_", "mt-bench"))


def source_from_id(prompt_id: str) -> str:
    """The dataset of a prompt without a ``source`` field, from its id prefix (METHODS §1.8):
    ``user_oriented_task_*`` -> self-instruct, ``lima_author_*`` -> lima, ``mtbench_*`` -> mt-bench;
    any other id loses its trailing ``_<number>`` (``world_0003`` -> ``world``)."""
    for prefix, source in _ID_PREFIXES:
        if prompt_id.startswith(prefix):
            return source
    return re.sub(r"[_-]?\d+$", "", prompt_id) or prompt_id


def sample_per_source(prompts: list[Prompt], n: int) -> list[Prompt]:
    """At most ``n`` prompts, taken round-robin over the sources (in first-seen order), each source in
    file order, so no source empties while another keeps all of its prompts. The result keeps the
    file order. Deterministic: the same file and ``n`` give the same sample."""
    if n >= len(prompts):
        return list(prompts)
    by_source: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_source.setdefault(p.source, []).append(i)
    queues = [list(reversed(ix)) for ix in by_source.values()]
    chosen: list[int] = []
    while len(chosen) < n:
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return [prompts[i] for i in sorted(chosen)]


def stratified_sample(prompts: list[Prompt], n: int, seed: int = 0) -> list[Prompt]:
    """A seeded sample of ``n`` prompts, allocated to sources in proportion to their size (largest
    remainder), at least 2 per source where the source has them, drawn without replacement within
    each source; the result keeps the file order."""
    if n >= len(prompts):
        return list(prompts)
    import numpy as np

    by_source: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_source.setdefault(p.source, []).append(i)
    sizes = {s: len(ix) for s, ix in by_source.items()}
    quota = {s: min(sizes[s], 2) for s in sizes}
    left = n - sum(quota.values())
    if left > 0:
        share = {s: (sizes[s] - quota[s]) / max(1, len(prompts) - sum(quota.values())) * left for s in sizes}
        extra = {s: min(int(share[s]), sizes[s] - quota[s]) for s in sizes}
        quota = {s: quota[s] + extra[s] for s in sizes}
        rest = n - sum(quota.values())
        for s in sorted(sizes, key=lambda s: (-(share[s] - int(share[s])), s)):
            if rest <= 0:
                break
            if quota[s] < sizes[s]:
                quota[s] += 1
                rest -= 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for s in sorted(by_source):  # fixed order: the sample does not depend on dict order
        ix = by_source[s]
        chosen += [ix[j] for j in rng.choice(len(ix), size=quota[s], replace=False)]
    return [prompts[i] for i in sorted(chosen)]


def load_prompts(path: str | Path, sources: tuple[str, ...] | None = None) -> list[Prompt]:
    """Read a prompts JSONL file (METHODS §6); optionally keep only some ``source`` groups."""
    path = Path(path)
    if not path.is_file():
        raise PromptFormatError(f"prompt file not found: {path}")
    prompts: list[Prompt] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFormatError(f"{where}: not valid JSON ({exc.msg})") from exc
            prompt = prompt_from_record(record, where)
            if prompt.id in seen:
                raise PromptFormatError(f"{where}: duplicate id {prompt.id!r}")
            seen.add(prompt.id)
            if sources is None or prompt.source in sources:
                prompts.append(prompt)
    if not prompts:
        raise PromptFormatError(f"{path}: no prompts" + (f" with source in {sources}" if sources else ""))
    return prompts


@dataclass(frozen=True)
class Rating:
    id: str
    model: str
    rating: int
    label: str  # followed | unfollowed | unrated


def load_ratings(path: str | Path, model: str | None = None) -> dict[str, Rating]:
    """Read a ratings TSV (``id model rating label``); keyed by id, optionally for one model."""
    path = Path(path)
    if not path.is_file():
        raise PromptFormatError(f"ratings file not found: {path}")
    out: dict[str, Rating] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        need = {"id", "model", "rating"}
        if not need <= set(reader.fieldnames or ()):
            raise PromptFormatError(f"{path}: header must contain {sorted(need)}, got {reader.fieldnames}")
        for row in reader:
            if model is not None and row["model"] != model:
                continue
            rating = int(row["rating"])
            label = row.get("label") or ("unrated" if rating <= 0 else "followed" if rating >= 2 else "unfollowed")
            out[row["id"]] = Rating(row["id"], row["model"], rating, label)
    return out
