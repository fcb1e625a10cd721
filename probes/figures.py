"""PNG figures for the report: saliency maps (METHODS §1.4 with b = 0) and score distributions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and GPU nodes have no display
    import matplotlib.pyplot as plt

    return plt


def _clean(token: str) -> str:
    return token.replace("▁", " ").replace("Ġ", " ").replace("<0x0A>", "\\n").strip() or "␣"


def saliency_map(
    S0: np.ndarray,
    prompt_tokens: Sequence[str],
    response_tokens: Sequence[str],
    instruction_mask: np.ndarray,
    path: Path,
    title: str,
    max_response: int = 80,
) -> Path:
    """Heat map of levels 0..L (prompt tokens x response tokens); instruction rows are labelled in red."""
    plt = _pyplot()
    S0 = np.asarray(S0)[:, :max_response]
    n, m = S0.shape
    fig, ax = plt.subplots(figsize=(min(18, 2 + 0.18 * max(m, 8)), min(18, 1.5 + 0.2 * max(n, 4))))
    ax.imshow(S0, aspect="auto", cmap="Blues", vmin=0, vmax=max(10, int(S0.max(initial=0))), interpolation="nearest")
    ax.set_yticks(range(n))
    ax.set_yticklabels([_clean(t) for t in prompt_tokens], fontsize=6)
    for label, inst in zip(ax.get_yticklabels(), instruction_mask):
        if inst:
            label.set_color("crimson")
    ax.set_xticks(range(m))
    ax.set_xticklabels([_clean(t) for t in list(response_tokens)[:m]], fontsize=6, rotation=90)
    ax.set_xlabel("response token")
    ax.set_ylabel("prompt token (instruction in red)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_distributions(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    path: Path,
    title: str = "instruction importance density (METHODS §1.6)",
) -> Path:
    """Box plots of instance scores per group, base beside tuned. ``scores[group][model] = values``."""
    plt = _pyplot()
    groups = list(scores)
    fig, ax = plt.subplots(figsize=(max(5, 2.2 * len(groups)), 4))
    positions, data, colours = [], [], []
    for g, group in enumerate(groups):
        for k, (model, colour) in enumerate((("base", "#9e9e9e"), ("tuned", "#1f77b4"))):
            positions.append(3 * g + k)
            data.append(list(scores[group].get(model, [])) or [np.nan])
            colours.append(colour)
    parts = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True, showmeans=True)
    for patch, colour in zip(parts["boxes"], colours):
        patch.set_facecolor(colour)
    ax.set_xticks([3 * g + 0.5 for g in range(len(groups))])
    ax.set_xticklabels(groups)
    ax.set_ylabel("score")
    ax.set_title(title + "\n(grey: base, blue: tuned)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def verb_shares_by_group(groups: Mapping[str, Mapping[str, Sequence[float]]], threshold: float, path: Path) -> Path:
    """Finding 2: mean ± std share of changed heads per layer group, instruction vs control verbs."""
    plt = _pyplot()
    names = list(groups)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(names)), 3.2))
    for offset, kind, color in ((-0.18, "instruction", "#d95f02"), (0.18, "control", "#7570b3")):
        vals = [np.asarray(groups[n][kind], dtype=float) for n in names]
        ax.bar(x + offset, [v.mean() if v.size else 0 for v in vals], 0.36,
               yerr=[v.std() if v.size else 0 for v in vals], color=color, label=f"{kind} verbs", capsize=3)
    ax.axhline(threshold, color="k", lw=0.8, ls="--", label=f"threshold {threshold}")
    ax.set_xticks(x, [f"{n}\nlayers {groups[n]['layers'][0]}-{groups[n]['layers'][1]}" for n in names])
    ax.set_ylabel("share of changed heads\nwith more pairs (tuned)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ffn_level_distribution(levels: Mapping[str, Mapping[str, Sequence[float]]], categories: Sequence[str],
                           path: Path, group: int = 4) -> Path:
    """Figure 3: per layer group (``layer // group``), the % of explainable FFN components at each
    linguistic level; ``levels[model][group] = [% per category]``, base and tuned side by side."""
    plt = _pyplot()
    models = [m for m in ("base", "tuned") if levels.get(m)]
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(5 * max(1, len(models)), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        groups = sorted(levels[model], key=int)
        bottom = np.zeros(len(groups))
        for j, cat in enumerate(categories):
            vals = np.array([levels[model][g][j] for g in groups])
            ax.bar(range(len(groups)), vals, bottom=bottom, label=cat)
            bottom += vals
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{int(g) * group}-{int(g) * group + group - 1}" for g in groups], fontsize=7)
        ax.set_xlabel("layers")
        ax.set_ylabel("% of explainable components")
        ax.set_title(model, fontsize=9)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_layer_lines(series: Mapping[str, Sequence[float]], ylabel: str, path: Path) -> Path:
    """One line per named series over layers (e.g. Figure 2's pair-list change, pairs per layer)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, values in series.items():
        ax.plot(range(len(values)), values, marker="o", ms=3, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ffn_cumulative_variance(cumulative: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Path:
    """Figure 8: cumulative explained-variance ratio of the principal components, one line per layer
    (``cumulative[model][layer]``), base dashed grey and tuned blue."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for model, style in (("base", dict(color="#9e9e9e", ls="--")), ("tuned", dict(color="#1f77b4", ls="-"))):
        for k, (layer, cum) in enumerate(sorted(cumulative.get(model, {}).items(), key=lambda kv: int(kv[0]))):
            ax.plot(np.arange(1, len(cum) + 1), cum, lw=0.8, alpha=0.7, label=model if k == 0 else None, **style)
    ax.set_xlabel("number of components")
    ax.set_ylabel("cumulative explained variance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
