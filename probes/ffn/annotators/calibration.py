"""Annotator calibration: can an annotator tell linguistic levels and scenarios apart? (issue 19)

INTERFACE STUB, filled in by the calibration work. The finding-3 verdicts depend only on what is
declared here:

    calibrate(annotator, repetitions=1) -> Calibration

``Calibration.passed`` is False when any gated label's accuracy is below ``minimum``; the verdicts
are then inconclusive with ``Calibration.reason``. Replayed labels are not calibrated here
(``calibration=None`` at the call sites, and the report says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIN_ACCURACY = 0.6  # placeholder until measured


@dataclass(frozen=True)
class Calibration:
    """Per-label accuracy of one annotator on the shipped calibration set."""

    annotator: str
    per_label: dict[str, float] = field(default_factory=dict)  # label -> accuracy in [0, 1]
    n_items: int = 0
    minimum: float = MIN_ACCURACY
    passed: bool = False
    reason: str = ""  # why it did not pass; empty on pass

    def summary(self) -> str:
        """One line for verdicts and the report: the annotator, the accuracy per label, the minimum."""
        accs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.per_label.items()))
        state = "passed" if self.passed else "FAILED"
        return (f"calibration of {self.annotator}: {state} (minimum {self.minimum:.2f} per label; "
                f"{self.n_items} items; {accs or 'no labels'})")

    def to_dict(self) -> dict[str, Any]:
        return {"annotator": self.annotator, "per_label": dict(self.per_label), "n_items": self.n_items,
                "minimum": self.minimum, "passed": self.passed, "reason": self.reason}


def calibrate(annotator: Any, repetitions: int = 1) -> Calibration:
    """Score ``annotator`` on the shipped calibration set (stub: not implemented yet)."""
    raise NotImplementedError("annotator calibration is being built (issue 19)")
