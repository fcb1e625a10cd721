"""Finding 3's release check (issue 21 §2): the artifact's FFN subspaces agree with its source's.
No pytest.

Finding 3 reads the principal components of each layer's down-projection (METHODS §3.1,
``probes/ffn``: the right singular vectors of the column-centred W_out). Their spectra are flat, so
neighbouring components swap under a harmless cast and per-component word lists move; what a cast
must keep is the *subspace* the top R components span. Per layer the agreement is the set of
principal angles between the two top-R subspaces: the singular values of V_s V_aᵀ are their
cosines. The summary per layer is the mean squared cosine (the share of one subspace inside the
other, ``‖V_s V_aᵀ‖_F² / R``); the verdict is its minimum over layers against ``MEAN_COS2_THRESHOLD``.

Why the mean and not the largest angle: by Davis-Kahan the largest angle is bounded only by the
perturbation over the spectral gap at R, and where the spectrum is flat a tiny perturbation turns
a boundary direction by tens of degrees (measured: docs/RELEASE.md). The mean cos² moves by the
share of the few boundary directions only. The largest angle is reported.

R: ``R_RELEASE`` = 64, capped at half the rank min(d_model, d_mlp) so the subspace never fills the
space (where both spans are everything, any two models agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CODE_VERSION = "release-subspace-1"
R_RELEASE = 64
# Minimum over layers of the mean cos² of the principal angles. Measured (docs/RELEASE.md,
# benchmarks/release_thresholds.py): 16- and 8-bit artifacts keep it at 0.9989 or above (SmolLM2 Q8_0
# 0.99897, int8 0.99955); changed models fall to 0.982 and below (SmolLM2 Q5_0 0.982, a LoRA merged
# at 2x its scale 0.954, world bad-cpt / base / bad-copy as the release of world:good 0.85-0.89).
# 0.99 leaves 10x room in 1 - cos² above the 8-bit artifacts.
MEAN_COS2_THRESHOLD = 0.99


def components_for(d_model: int, d_mlp: int, r: int = R_RELEASE) -> int:
    """R for a model: ``r`` capped at half the rank of the centred down-projection."""
    return max(1, min(r, min(d_model, d_mlp) // 2))


def top_subspace(W_out: torch.Tensor, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(V_R (r, d_model) orthonormal rows, explained-variance ratios of every component) of one
    layer's column-centred down-projection (d_mlp, d_model), in float64 (as probes/ffn)."""
    from shiftcheck.probes.ffn import centre_columns, principal_directions

    ratio, V = principal_directions(centre_columns(W_out.to(torch.float64)), r)
    return V.cpu().numpy(), ratio.cpu().numpy()


def subspace_cosines(V_a: np.ndarray, V_b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the row spans of ``V_a`` and ``V_b`` (orthonormal
    rows), decreasing, clipped to [0, 1]."""
    return np.clip(np.linalg.svd(V_a @ V_b.T, compute_uv=False), 0.0, 1.0)


@dataclass(frozen=True)
class LayerAngles:
    layer: int
    cosines: np.ndarray  # (R,) decreasing
    gap: float  # source spectrum: ratio[R-1] / ratio[R] (1 = flat at the boundary)

    @property
    def mean_cos2(self) -> float:
        return float(np.mean(self.cosines**2))

    @property
    def largest_angle_deg(self) -> float:
        return float(np.degrees(np.arccos(self.cosines[-1])))


@dataclass(frozen=True)
class SubspaceAgreement:
    r: int
    layers: tuple[LayerAngles, ...]
    threshold: float = MEAN_COS2_THRESHOLD

    @property
    def statistic(self) -> float | None:
        return min((la.mean_cos2 for la in self.layers), default=None)

    def outcome(self) -> str:
        if not self.layers:
            return "inconclusive"
        return "pass" if self.statistic >= self.threshold else "fail"

    def worst(self) -> LayerAngles | None:
        return min(self.layers, key=lambda la: la.mean_cos2, default=None)

    def to_dict(self) -> dict:
        return {"R": self.r, "threshold": self.threshold, "statistic": self.statistic,
                "largest_angle_deg": max((la.largest_angle_deg for la in self.layers), default=None),
                "per_layer": [{"layer": la.layer, "mean_cos2": la.mean_cos2, "largest_angle_deg": la.largest_angle_deg,
                               "spectral_gap": la.gap} for la in self.layers],
                "effect": self.statistic, "effect_name": f"min over layers of mean cos² (top-{self.r} principal angles)"}


@dataclass(frozen=True)
class SubspaceResult:
    """One model's top-R FFN subspaces: ``bases[layer]`` (R, d_model), ``ratios[layer]`` all ratios."""

    label: str
    r: int
    bases: dict[int, np.ndarray]
    ratios: dict[int, np.ndarray]


def subspace_agreement(source: SubspaceResult, artifact: SubspaceResult,
                       threshold: float = MEAN_COS2_THRESHOLD) -> SubspaceAgreement:
    layers = []
    for layer in sorted(source.bases):
        ratio = source.ratios[layer]
        gap = float(ratio[source.r - 1] / ratio[source.r]) if len(ratio) > source.r and ratio[source.r] > 0 else float("inf")
        layers.append(LayerAngles(layer, subspace_cosines(source.bases[layer], artifact.bases[layer]), gap))
    return SubspaceAgreement(source.r, tuple(layers), threshold)


def model_subspaces(views: Any, r: int, layers: Sequence[int] | None = None, label: str = "") -> SubspaceResult:
    """Top-``r`` subspace of every layer of a model's WeightViews (no cache)."""
    layers = range(views.n_layers) if layers is None else layers
    bases, ratios = {}, {}
    for layer in layers:
        bases[layer], ratios[layer] = top_subspace(views.W_out(layer), r)
    return SubspaceResult(label, r, bases, ratios)


@dataclass(frozen=True)
class SubspaceProbe:
    """The top-R subspaces as a cached probe (runner.py protocol): one unit per ``layers_per_unit``
    layers, arrays ``V_<layer>`` (R, d_model) float64 and ``ratio_<layer>``."""

    n_layers: int
    r: int
    layers_per_unit: int = 8
    name: str = "release-subspace"
    code_version: str = CODE_VERSION

    def cache_config(self) -> dict[str, Any]:
        return {"R": self.r, "float64": True, "centred": True}

    def units(self) -> list[dict[str, Any]]:
        step = self.layers_per_unit
        return [{"layers": [a, min(a + step, self.n_layers)]} for a in range(0, self.n_layers, step)]

    def run_unit(self, checkpoint: Any, unit: dict[str, Any], progress=None):
        from shiftcheck.probes.cache import CacheEntry
        from shiftcheck.probes.models.architectures import WeightViews

        res = model_subspaces(WeightViews(checkpoint.model), self.r, range(*unit["layers"]))
        arrays = {f"V_{l}": v for l, v in res.bases.items()} | {f"ratio_{l}": v for l, v in res.ratios.items()}
        return CacheEntry(meta={"layers": list(range(*unit["layers"]))}, arrays=arrays)

    def combine(self, label: str, entries: Sequence[Any]) -> SubspaceResult:
        bases, ratios = {}, {}
        for e in entries:
            for l in e.meta["layers"]:
                bases[l] = np.asarray(e.arrays[f"V_{l}"], dtype=np.float64)
                ratios[l] = np.asarray(e.arrays[f"ratio_{l}"], dtype=np.float64)
        return SubspaceResult(label, self.r, bases, ratios)
