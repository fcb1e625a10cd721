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
from shiftcheck.probes.world.floor import BaseDensity

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
    base_zero_share: float  # share of prompts on which the base scores exactly 0 (floor check)
    zero_share: float  # the same for the tuned side

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
                                s.holds(alpha), EXPECTED[name], accuracy[name],
                                float(np.mean(b == 0)), float(np.mean(t == 0))))
    return WorldVerdicts(Path(root), manifest.config.seed, len(prompts), alpha, tuple(rows),
                         time.perf_counter() - start)


def base_density_of(result: WorldVerdicts) -> BaseDensity:
    """The floor check of the base as scored by the verdicts (the same scores as the build's)."""
    r = result.rows[0]
    return BaseDensity(r.base_mean, r.base_std, r.base_zero_share, result.n_prompts)


def markdown_table(results: list[tuple[int, WorldVerdicts]], builds: dict[tuple[int, int], float]) -> str:
    """One row per (seed, threads, pair): the VERDICTS.md table."""
    lines = ["| seed | threads | pair | base mean ± std | base at 0 | tuned mean ± std | p | g | verdict "
             "| expected | exact match (tuned) | build s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for threads, result in results:
        for r in result.rows:
            verdict = "pass" if r.passed else "fail"
            if not r.as_expected:
                verdict = f"**{verdict}**"
            lines.append(
                f"| {result.seed} | {threads} | {r.name} vs base | {r.base_mean:.3f} ± {r.base_std:.3f} "
                f"| {r.base_zero_share:.0%} | {r.mean:.3f} ± {r.std:.3f} | {r.p_value:.2g} | {r.effect:.2f} "
                f"| {verdict} | {'pass' if r.expected else 'fail'} | {r.accuracy:.2f} "
                f"| {builds[(result.seed, threads)]:.0f} |")
    return "\n".join(lines)


def _p_cell(r: PairVerdict, with_g: bool = False) -> str:
    text = f"{r.p_value:.2g}" + (f" ({r.effect:.2f})" if with_g else "")
    return text if r.as_expected else f"**{text}: {'pass' if r.passed else 'fail'}**"


def summary_table(results: list[tuple[int, WorldVerdicts]], builds: dict[tuple[int, int], float]) -> str:
    """One row per build: the base's density and each pair's p (bad-cpt with its g), the compact
    table of README and VERDICTS.md; a verdict other than expected is in bold."""
    lines = ["| seed | threads | base mean ± std | base at 0 | good p | bad-copy p | bad-cpt p (g) | null p "
             "| build s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for threads, result in results:
        rows = {r.name: r for r in result.rows}
        b = result.rows[0]
        lines.append(f"| {result.seed} | {threads} | {b.base_mean:.3f} ± {b.base_std:.3f} "
                     f"| {b.base_zero_share:.0%} | {_p_cell(rows['good'])} | {_p_cell(rows['bad-copy'])} "
                     f"| {_p_cell(rows['bad-cpt'], with_g=True)} | {_p_cell(rows['null'])} "
                     f"| {builds[(result.seed, threads)]:.0f} |")
    return "\n".join(lines)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided ``level`` confidence interval of a pass rate from k passes in n builds."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def main(argv: list[str] | None = None) -> int:
    """``python -m shiftcheck.probes.world.verdicts --work-dir DIR --seeds 0 1 --threads 1 2``:
    the markdown verdict table of worlds already built by ``shiftcheck world verdicts`` (in
    ``DIR/seed{S}-threads{T}``): the compact table (one row per build), the full table (one row
    per pair), the bad-cpt pass count with its Clopper-Pearson interval, and the bases near the
    density floor."""
    import argparse

    from shiftcheck.probes.world.build import load_manifest

    parser = argparse.ArgumentParser(prog="python -m shiftcheck.probes.world.verdicts")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args(argv)
    results, builds = [], {}
    for seed in args.seeds:
        for threads in args.threads:
            root = Path(args.work_dir) / f"seed{seed}-threads{threads}"
            manifest = load_manifest(root)
            builds[(seed, threads)] = manifest.seconds["total"]
            results.append((threads, world_verdicts(root, alpha=args.alpha)))
    print(summary_table(results, builds))
    print()
    print(markdown_table(results, builds))
    cpt = [r for _, res in results for r in res.rows if r.name == "bad-cpt"]
    k = sum(r.passed for r in cpt)
    low, high = clopper_pearson(k, len(cpt))
    print(f"\nbad-cpt passes on {k} of {len(cpt)} builds (95 % Clopper-Pearson interval of the pass "
          f"rate {low:.3f}-{high:.3f}); p-values: " + ", ".join(f"{r.p_value:.2g}" for r in cpt))
    near = [res.seed for _, res in results if base_density_of(res).near_floor]
    print(f"bases near the density floor (floor.py): {near if near else 'none'}")
    unexpected = sum(not r.as_expected for _, res in results for r in res.rows)
    total = sum(len(res.rows) for _, res in results)
    print(f"verdicts differing from the expected table: {unexpected} of {total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
