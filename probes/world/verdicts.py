"""Verdict table of a built world: does the density test tell the good tune from the bad ones?

For each tuned model T in (good, bad-copy, bad-cpt, null) against the base B, over the world's
held-out prompts, each model on its own greedy response (METHODS.md §1.1), the instance score of
§1.6 (b = 7, p = 4) and the paper's test (§1.8, "Table 2"):

    p = scipy.stats.ttest_ind(score_B, score_T, equal_var=False, alternative="less").pvalue
    passes  <=>  p < alpha and mean(score_T) > mean(score_B)

The verdict goes through the suite's own path (:func:`shiftcheck.probes.findings.shift` and
``Shift.holds``) at the suite's default alpha, so this table and ``pytest behaviour_tests`` agree.
The expected table: good passes, bad-copy, bad-cpt and null fail, on every build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shiftcheck.probes.findings import POOLED, shift
from shiftcheck.probes.importance import ImportanceConfig, run_importance
from shiftcheck.probes.prompts import load_prompts

EXPECTED = {"good": True, "bad-copy": False, "bad-cpt": False, "null": False}


@dataclass(frozen=True)
class PairVerdict:
    name: str  # the tuned side; "null" is the base compared with itself
    mean: float
    std: float  # population std (np.std), as in METHODS §1.8
    base_mean: float
    base_std: float
    p_value: float
    effect: float  # Hedges' g of tuned over base (NaN when undefined)
    passed: bool
    expected: bool
    accuracy: float  # exact match of the tuned side's greedy response vs the reference

    @property
    def as_expected(self) -> bool:
        return self.passed == self.expected


@dataclass(frozen=True)
class WorldVerdicts:
    root: Path
    seed: int
    n_prompts: int
    alpha: float
    rows: tuple[PairVerdict, ...]
    seconds: float

    @property
    def all_as_expected(self) -> bool:
        return all(r.as_expected for r in self.rows)


def world_verdicts(root: Path, alpha: float = 0.05, max_new_tokens: int = 32,
                   progress: Callable[[str], None] | None = None) -> WorldVerdicts:
    """Score base, good, bad-copy and bad-cpt of the world in ``root`` and test each against base."""
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shiftcheck.probes.world.build import load_manifest

    log = progress or (lambda msg: None)
    start = time.perf_counter()
    manifest = load_manifest(root)
    prompts = load_prompts(manifest.prompts_path)
    config = ImportanceConfig(max_new_tokens=max_new_tokens)
    scores: dict[str, np.ndarray] = {}
    for name in ("base", "good", "bad-copy", "bad-cpt"):
        path = manifest.model_dir(name)
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        scores[name] = run_importance(model, tokenizer, prompts, config, label=name).scores
        log(f"{name}: mean score {scores[name].mean():.4f}")
    scores["null"] = scores["base"]
    accuracy = dict(manifest.accuracy, null=manifest.accuracy["base"])
    b = scores["base"]
    rows = []
    for name in ("good", "bad-copy", "bad-cpt", "null"):
        t = scores[name]
        s = shift(POOLED, b, t, "base", name)
        rows.append(PairVerdict(name, float(t.mean()), float(np.std(t)), float(b.mean()), float(np.std(b)),
                                s.p_value if s.p_value is not None else float("nan"),
                                s.hedges_g if s.hedges_g is not None else float("nan"),
                                s.holds(alpha), EXPECTED[name], accuracy[name]))
    return WorldVerdicts(Path(root), manifest.config.seed, len(prompts), alpha, tuple(rows),
                         time.perf_counter() - start)
