"""Concept annotators for finding 3 (METHODS §3.3), behind one small interface.

An :class:`Annotator` turns the shown words of each component into an :class:`Annotation` per
repetition. Chat-based annotators (OpenAI-compatible endpoint, local HF chat model) implement one
``chat(messages, temperature, top_p, seed)`` call and share :func:`three_step` (describe ->
scenario -> linguistic level, with §3.3's temperatures). The heuristic and replay annotators
produce annotations directly. Labels are parsed by :mod:`shiftcheck.probes.ffn.concepts` (§3.4).

    make_annotator("heuristic" | "openai:MODEL" | "hf:SPEC", ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shiftcheck.probes.ffn.annotators import prompts

CANNOT_TELL = "cannot tell"
DESCRIBE_PARAMS = {"temperature": 1.0, "top_p": 0.9}  # the authors' code, every seed (§3.3)
LABEL_PARAMS = {"temperature": 0.0, "top_p": 0.9}


class AnnotatorError(RuntimeError):
    """An annotator could not answer (endpoint down after retries, bad spec); names the cause."""


@dataclass(frozen=True)
class Annotation:
    """One component's annotation in one repetition; the answers are raw text (parsed per §3.4)."""

    layer: int
    rank: int
    words: tuple[str, ...]
    description: str
    scenario: str = ""  # empty when not explainable
    level: str = ""

    @property
    def explainable(self) -> bool:
        return CANNOT_TELL not in self.description.lower()


@dataclass(frozen=True)
class Component:
    """What an annotator is shown: a component's place and its first 15 words."""

    layer: int
    rank: int
    words: tuple[str, ...]


class Annotator(Protocol):
    name: str  # shown in the report, e.g. "heuristic", "openai:gpt-4o-mini@http://..."

    def annotate(self, components: Sequence[Component], repetitions: int) -> list[list[Annotation]]:
        """``out[rep][i]`` annotates ``components[i]`` in repetition (seed) ``rep``."""
        ...


class Chat(Protocol):
    def __call__(self, messages: list[dict], temperature: float, top_p: float, seed: int) -> str: ...


def three_step(chat: Chat, comp: Component, seed: int) -> Annotation:
    """§3.3: describe (T=1.0, top_p 0.9); if explainable, scenario and level (T=0, top_p 0.9)."""
    desc = chat(prompts.describe_messages(list(comp.words)), seed=seed, **DESCRIBE_PARAMS).strip()
    if CANNOT_TELL in desc.lower():
        return Annotation(comp.layer, comp.rank, comp.words, desc)
    scen = chat(prompts.scenario_messages(desc), seed=seed, **LABEL_PARAMS).strip()
    level = chat(prompts.level_messages(desc), seed=seed, **LABEL_PARAMS).strip()
    return Annotation(comp.layer, comp.rank, comp.words, desc, scen, level)


def make_annotator(spec: str, *, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                   concurrency: int = 4, cache_path=None, log=None, **kw) -> Annotator:
    """The annotator named by ``--annotator`` (replay is handled by the caller: it needs files)."""
    if spec == "heuristic":
        from shiftcheck.probes.ffn.annotators.heuristic import HeuristicAnnotator

        return HeuristicAnnotator(**kw)
    if spec.startswith("openai:"):
        from shiftcheck.probes.ffn.annotators.openai_compat import OpenAIAnnotator

        return OpenAIAnnotator(spec.split(":", 1)[1], base_url=base_url, api_key_env=api_key_env,
                               concurrency=concurrency, cache_path=cache_path, log=log)
    if spec.startswith("hf:"):
        from shiftcheck.probes.ffn.annotators.local_hf import LocalHFAnnotator

        return LocalHFAnnotator(spec.split(":", 1)[1], cache_path=cache_path, log=log)
    raise AnnotatorError(f"unknown annotator {spec!r}: use heuristic, openai:MODEL, hf:SPEC or replay")
