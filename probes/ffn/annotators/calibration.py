"""Annotator calibration: can an annotator tell linguistic levels and scenarios apart? (issue 19)

The finding-3 verdicts depend only on:

    calibrate(annotator, repetitions=1) -> Calibration

The annotator labels the shipped calibration set (``probes/data/calibration/calibration_set.json``,
built by ``build_calibration.py`` from resources the heuristic annotator does not read, see there)
through its ordinary ``annotate(components, repetitions)``; the answers are parsed exactly as the
verdicts parse them (§3.4 substrings, ``concepts.labels``). Per label, the accuracy is the share of
the items with that true label that the annotator got right:

* a level (phonology, morphology, syntax, semantic): explainable and exactly that level parsed
  (an answer naming every level is wrong, so "say everything" cannot score);
* a scenario (writing, math, coding, translation): explainable, that scenario parsed and no other
  one except "writing" next to maths, coding or translation (the paper's few-shot answer for
  maths terms is "solving math problems; professional writing");
* explainable: a constructed item was not answered "Cannot Tell";
* cannot_tell: a random list was answered "Cannot Tell".

``Calibration.passed`` is False when any gated label's accuracy is below ``minimum``; the verdicts
are then inconclusive with ``Calibration.reason``. Replayed labels are not calibrated here
(``calibration=None`` at the call sites, and the report says so).

Chat annotators (``openai:``, ``hf:``) cost calls, so by default they see the first
``CHAT_PER_GROUP`` items of every group (the set is stored shuffled); their answer caches make a
rerun free. ``per_group`` chooses another size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from shiftcheck.probes.ffn.annotators import Annotation, Component

LEVEL_LABELS = ("phonology", "morphology", "syntax", "semantic")
SCENARIO_LABELS = ("writing", "math", "coding", "translation")
GATED = LEVEL_LABELS + SCENARIO_LABELS + ("explainable", "cannot_tell")
MIN_ACCURACY = 0.7  # see docs/FFN.md "Annotator calibration": chance for a level is 0.25
CHAT_PER_GROUP = 4  # items per group for chat annotators: 36 components, 108 calls per repetition
SET_PATH = Path(__file__).resolve().parents[2] / "data" / "calibration" / "calibration_set.json"
_EXTRA_OK = {"math": {"writing"}, "coding": {"writing"}, "translation": {"writing"}, "writing": set()}


class CalibrationSetError(RuntimeError):
    """The shipped calibration set is missing or its digest does not match its items."""


@dataclass(frozen=True)
class CalibrationItem:
    """One constructed component and its true labels (level None: not scored for the level)."""

    id: str
    group: str
    words: tuple[str, ...]
    level: str | None
    scenario: str | None
    explainable: bool
    source: str


@dataclass(frozen=True)
class Calibration:
    """Per-label accuracy of one annotator on the shipped calibration set."""

    annotator: str
    per_label: dict[str, float] = field(default_factory=dict)  # label -> accuracy in [0, 1]
    n_items: int = 0
    minimum: float = MIN_ACCURACY
    passed: bool = False
    reason: str = ""  # why it did not pass; empty on pass
    per_label_n: dict[str, int] = field(default_factory=dict)  # label -> items with that true label
    repetitions: int = 1
    set_digest: str = ""

    def summary(self) -> str:
        """One line for verdicts and the report: the annotator, the accuracy per label, the minimum."""
        accs = ", ".join(f"{k} {self.per_label[k]:.2f}" for k in GATED if k in self.per_label)
        state = "passed" if self.passed else "FAILED"
        return (f"calibration of {self.annotator}: {state} (minimum {self.minimum:.2f} per label; "
                f"{self.n_items} items; {accs or 'no labels'})")

    def to_dict(self) -> dict[str, Any]:
        return {"annotator": self.annotator, "per_label": dict(self.per_label), "n_items": self.n_items,
                "minimum": self.minimum, "passed": self.passed, "reason": self.reason,
                "per_label_n": dict(self.per_label_n), "repetitions": self.repetitions,
                "set_digest": self.set_digest}


@lru_cache(maxsize=2)
def load_set(path: str | None = None) -> tuple[str, tuple[CalibrationItem, ...]]:
    """(digest, items) of the calibration set; the digest is checked against the items."""
    from shiftcheck.probes.ffn.annotators.build_calibration import items_digest

    p = Path(path) if path else SET_PATH
    if not p.is_file():
        raise CalibrationSetError(f"calibration set not found: {p}")
    data = json.loads(p.read_text(encoding="utf-8"))
    if items_digest(data["items"]) != data["digest"]:
        raise CalibrationSetError(f"{p}: items do not match the stored digest (edited by hand? rebuild it)")
    items = tuple(CalibrationItem(d["id"], d["group"], tuple(d["words"]), d["level"], d["scenario"],
                                  bool(d["explainable"]), d["source"]) for d in data["items"])
    return data["digest"], items


def select(items: Sequence[CalibrationItem], per_group: int | None) -> list[CalibrationItem]:
    """The first ``per_group`` items of every group (all with None), in the set's order."""
    if per_group is None:
        return list(items)
    seen: dict[str, int] = {}
    out = []
    for it in items:
        if seen.get(it.group, 0) < per_group:
            out.append(it)
            seen[it.group] = seen.get(it.group, 0) + 1
    return out


def is_chat(annotator: Any) -> bool:
    name = str(getattr(annotator, "name", ""))
    return name.startswith(("openai:", "hf:"))


def scores(item: CalibrationItem, ann: Annotation) -> dict[str, bool]:
    """Which labels this answer gets right, for the labels the item is scored on."""
    from shiftcheck.probes.ffn.concepts import SCENARIOS, labels

    out: dict[str, bool] = {}
    if not item.explainable:
        out["cannot_tell"] = not ann.explainable
        return out
    out["explainable"] = ann.explainable
    if item.level is not None:
        got = {k for k, v in labels(ann.level, LEVEL_LABELS).items() if v}
        out[item.level] = ann.explainable and got == {item.level}
    if item.scenario is not None:
        got = {k for k, v in labels(ann.scenario, SCENARIOS).items() if v}
        out[item.scenario] = ann.explainable and item.scenario in got and \
            got - {item.scenario} <= _EXTRA_OK[item.scenario]
    return out


def score(items: Sequence[CalibrationItem],
          reps: Sequence[Sequence[Annotation]]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-label accuracy over items and repetitions, and the number of items per label."""
    right: dict[str, int] = {}
    seen: dict[str, int] = {}
    for anns in reps:
        for item, ann in zip(items, anns, strict=True):
            for label, ok in scores(item, ann).items():
                right[label] = right.get(label, 0) + int(ok)
                seen[label] = seen.get(label, 0) + 1
    per_label = {k: right[k] / seen[k] for k in GATED if k in seen}
    n = {k: seen[k] // max(len(reps), 1) for k in GATED if k in seen}
    return per_label, n


def judge(annotator: str, per_label: dict[str, float], per_label_n: dict[str, int], n_items: int,
          minimum: float = MIN_ACCURACY, repetitions: int = 1, set_digest: str = "") -> Calibration:
    """Pass only when every gated label was scored and reaches ``minimum``."""
    missing = [k for k in GATED if k not in per_label]
    low = [k for k in GATED if k in per_label and per_label[k] < minimum]
    parts = []
    if low:
        parts.append("below the minimum {:.2f}: ".format(minimum)
                     + ", ".join(f"{k} {per_label[k]:.2f} (n = {per_label_n[k]})" for k in low))
    if missing:
        parts.append("not scored: " + ", ".join(missing))
    return Calibration(annotator, dict(per_label), n_items, minimum, not parts, "; ".join(parts), dict(per_label_n),
                       repetitions, set_digest)


def calibrate(annotator: Any, repetitions: int = 1, per_group: int | None = None,
              minimum: float = MIN_ACCURACY, path: str | None = None) -> Calibration:
    """Score ``annotator`` on the shipped calibration set (``per_group``: items per group; default
    all for offline annotators, ``CHAT_PER_GROUP`` for ``openai:`` and ``hf:`` ones)."""
    digest, items = load_set(path)
    if per_group is None and is_chat(annotator):
        per_group = CHAT_PER_GROUP
    chosen = select(items, per_group)
    comps = [Component(0, k + 1, it.words) for k, it in enumerate(chosen)]
    reps = annotator.annotate(comps, repetitions)
    per_label, n = score(chosen, reps)
    return judge(str(getattr(annotator, "name", type(annotator).__name__)), per_label, n, len(chosen), minimum,
                 len(reps), digest)
