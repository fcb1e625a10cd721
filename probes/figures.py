"""PNG figures for the report: saliency maps (METHODS §1.4 with b = 0) and score distributions."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np



def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (its folder made) and free it: a report can draw dozens."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and GPU nodes have no display
    import matplotlib.pyplot as plt

    return plt


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: each printable stand-in (``Ġ`` for a space, ``Ċ``
    for a newline) back to its byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTES = _byte_decoder()
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece byte fallback
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def token_text(token: str) -> str:
    """A tokenizer's token as the text it stands for, for a tick label: byte-level stand-ins decoded
    (``Ċ`` -> ``\\n``, ``Ġ`` -> space), SentencePiece's ``▁`` a space and ``<0x0A>`` a newline;
    newlines and tabs written as ``\\n``/``\\t``, and a token of spaces only as ``␣``."""
    if any(ord(c) >= 256 for c in token) and all(c in _BYTES for c in token):  # byte-level BPE (GPT-2, SmolLM2)
        text = bytes(_BYTES[c] for c in token).decode("utf-8", errors="replace")
    else:
        text = _BYTE_TOKEN.sub(lambda m: chr(int(m.group(1), 16)), token.replace("▁", " "))
    for raw, shown in _ESCAPES.items():
        text = text.replace(raw, shown)
    return text if text.strip() else "␣" * max(1, len(text))


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
    # at least 6.5 in wide, so a two-line title is never cut off on a short response
    fig, ax = plt.subplots(figsize=(min(18, max(6.5, 2.5 + 0.18 * m)), min(18, max(3.5, 1.8 + 0.2 * n))))
    image = ax.imshow(S0, aspect="auto", cmap="Blues", vmin=0, vmax=max(10, int(S0.max(initial=0))),
                      interpolation="nearest")
    ax.set_yticks(range(n))
    ax.set_yticklabels([token_text(t) for t in prompt_tokens], fontsize=6)
    for label, inst in zip(ax.get_yticklabels(), instruction_mask):
        if inst:
            label.set_color("crimson")
    ax.set_xticks(range(m))
    ax.set_xticklabels([token_text(t) for t in list(response_tokens)[:m]], fontsize=6, rotation=90)
    ax.set_xlabel("response token")
    ax.set_ylabel("prompt token (instruction in red)")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="level S")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """Mean and its t-based confidence interval; None for an empty sample, a zero-width interval
    for a single value."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if x.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def score_distributions(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    path: Path,
    title: str = "instruction importance density per prompt (METHODS §1.6)",
) -> Path:
    """Every instance score as a point (jittered), a violin where the values spread, and the mean
    with its 95 % confidence interval, base beside tuned per group. ``scores[group][model] = values``.
    Readable when most scores are 0: the points and the mean stay visible where a box would collapse."""
    plt = _pyplot()
    groups = list(scores)
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is the same on every run
    fig, ax = plt.subplots(figsize=(max(5.5, 2.4 * len(groups)), 4.2))
    for g, group in enumerate(groups):
        for k, (model, colour) in enumerate((("base", "#7f7f7f"), ("tuned", "#1f77b4"))):
            x0 = 3 * g + k
            values = np.asarray(list(scores[group].get(model, [])), dtype=float)
            if values.size >= 2 and np.ptp(values) > 0:
                parts = ax.violinplot(values, positions=[x0], widths=0.85, showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor(colour)
                    body.set_alpha(0.25)
            ax.scatter(x0 + rng.uniform(-0.22, 0.22, values.size), values, s=7, color=colour, alpha=0.55,
                       linewidths=0, label=f"{model}: one prompt" if g == 0 else None)
            ci = mean_ci(values)
            if ci is not None:
                mean, low, high = ci
                ax.errorbar([x0 + 0.38], [mean], yerr=[[mean - low], [high - mean]], fmt="D", ms=5, color="black",
                            mfc=colour, capsize=3, lw=1.2, label="mean and its 95 % CI" if g == 0 and k == 0 else None)
    ax.set_xticks([3 * g + 0.5 for g in range(len(groups))])
    ax.set_xticklabels([f"{group}\n(base | tuned)" for group in groups], fontsize=8)
    ax.set_xlabel("prompt group")
    ax.set_ylabel("instruction importance density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars
    return _save(fig, path)


def layer_bin_label(g: int, group: int, n_layers: int | None) -> str:
    """Layers of bin ``g`` (``layer // group``), ending at the model's last layer (``28-29`` on a
    30-layer model, not ``28-31``)."""
    first, last = g * group, g * group + group - 1
    if n_layers is not None:
        last = min(last, n_layers - 1)
    return str(first) if first == last else f"{first}-{last}"


def ffn_level_distribution(levels: Mapping[str, Mapping[str, Sequence[float]]], categories: Sequence[str],
                           path: Path, group: int = 4, n_layers: int | None = None) -> Path:
    """Figure 3: per layer group (``layer // group``), the % of explainable FFN components at each
    linguistic level; ``levels[model][group] = [% per category]``, base and tuned side by side. The
    last bin's label ends at ``n_layers - 1`` when the model's depth is given; the legend sits
    beside the bars, not on them."""
    plt = _pyplot()
    models = [m for m in ("base", "tuned") if levels.get(m)]
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4.5 * max(1, len(models)) + 1.6, 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        groups = sorted(levels[model], key=int)
        bottom = np.zeros(len(groups))
        for j, cat in enumerate(categories):
            vals = np.array([levels[model][g][j] for g in groups])
            ax.bar(range(len(groups)), vals, bottom=bottom, label=cat)
            bottom += vals
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([layer_bin_label(int(g), group, n_layers) for g in groups], fontsize=7)
        ax.set_xlabel("layers")
        ax.set_ylabel("% of explainable components")
        ax.set_title(model, fontsize=9)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _save(fig, path)


def per_layer_lines(series: Mapping[str, Sequence[float]], ylabel: str, path: Path) -> Path:
    """One line per named series over layers (e.g. Figure 2's pair-list change, pairs per layer)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, values in series.items():
        ax.plot(range(len(values)), values, marker="o", ms=3, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


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
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
