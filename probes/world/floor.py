"""The base's density floor check: is the base's instruction density too close to 0 to be a fair
reference for the density test?

A base whose instance scores are 0 on nearly every prompt cannot move down, only up: any tune that
perturbs it (continued pretraining with no instruction signal) then "exceeds the base" by moving off
the floor. Issue 19 measured this on seeds 5-7 of the earlier design (base means 0.015, 0.022,
0.008; continued pretraining passed on seed 7 with p = 1.2e-3). The thresholds sit below every base
that gave the expected verdicts (means 0.046-0.092, 72-84 % of prompts at 0, VERDICTS.md) and
above the floored ones.

Pure numpy; the caller computes the scores (build.py scores the base on the world's eval prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A base is near the floor when its mean instance score is below FLOOR_MEAN or when more than
# FLOOR_ZERO_SHARE of its prompts score exactly 0. In this world even a perfect instruction follower
# scores 0 on about 60 % of prompts (the b = 7 cut keeps only near-maximal attributions, and the
# column maxima often fall on template or context tokens), so the zero-share threshold is high.
FLOOR_MEAN = 0.03
FLOOR_ZERO_SHARE = 0.9


class BaseFloorWarning(UserWarning):
    """A world's base is near the density floor: its bad-cpt verdict is no fair negative control."""


@dataclass(frozen=True)
class BaseDensity:
    """The base's instance scores on the eval prompts, summarised for the floor check."""

    mean: float
    std: float  # population std (np.std), as in METHODS §1.8
    zero_share: float  # share of prompts scoring exactly 0
    n_prompts: int

    @property
    def near_floor(self) -> bool:
        return self.mean < FLOOR_MEAN or self.zero_share > FLOOR_ZERO_SHARE

    def summary(self) -> str:
        """One line, e.g. ``base density 0.061 ± 0.121 over 140 prompts, 78 % at 0``."""
        line = (f"base density {self.mean:.3f} ± {self.std:.3f} over {self.n_prompts} prompts, "
                f"{self.zero_share:.0%} at 0")
        if self.near_floor:
            line += (f"; WARNING: the base is near the density floor (mean < {FLOOR_MEAN} or more "
                     f"than {FLOOR_ZERO_SHARE:.0%} of prompts at 0): a tune with no instruction "
                     "signal can pass by moving off it; this world is no fair negative control")
        return line

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "zero_share": self.zero_share,
                "n_prompts": self.n_prompts, "near_floor": self.near_floor}


def base_density(scores: np.ndarray) -> BaseDensity:
    """Summarise the base's instance scores (one per eval prompt)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no base scores: the floor check needs at least one eval prompt")
    return BaseDensity(float(s.mean()), float(s.std()), float(np.mean(s == 0)), int(s.size))
