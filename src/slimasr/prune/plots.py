"""Figures for layer pruning: scores by layer (one panel per metric) and scores over epochs (the paper's Figure 2).

Uses matplotlib's object API (``Figure``, no pyplot), so it changes no global backend state and needs no display.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_layer_scores", "plot_score_history"]

_HOW = {"higher": "higher = important", "lower": "lower = important", "abs": "|score| higher = important"}


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_layer_scores(scores, path: str | os.PathLike, metrics: Sequence[str] | None = None,
                      remove: int | None = None) -> Path:
    """Bar chart per metric of a :class:`~slimasr.prune.metrics.LayerScores`; each bar is labelled with the
    layer's rank (0 = pruned first) and, with ``remove``, the ``remove`` layers pruned first are drawn in red.

    Layers are labelled with their original index when the scored model was already pruned.
    """
    from matplotlib.figure import Figure

    names = list(metrics) if metrics is not None else list(scores.metrics)
    if not names:
        raise ValueError("nothing to plot: the scores hold no metric")
    labels = [str(i) for i in (scores.original_layers or range(scores.num_layers))]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        ms = scores[name]
        x = list(range(len(ms.scores)))
        vals = [0.0 if math.isnan(s) else s for s in ms.scores]
        pruned = set(ms.order[:remove]) if remove else set()
        colors = ["tab:red" if i in pruned else "tab:blue" for i in x]
        bars = ax.bar(x, vals, color=colors)
        for bar, r in zip(bars, ms.ranks):
            ax.annotate(str(r), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom" if bar.get_height() >= 0 else "top", fontsize=7)
        ax.set_xticks(x, labels[:len(x)], fontsize=7)
        ax.set_title(f"{name} ({_HOW.get(ms.importance, ms.importance)})", fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle("layer scores (bar labels: prune rank, 0 = first)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_score_history(tracker, path: str | os.PathLike) -> Path:
    """Scores by layer over epochs (the paper's Figure 2): one line per original layer, ending where the layer was
    removed (marked with a cross).

    Args:
        tracker: a :class:`~slimasr.prune.schedule.ConsistencyTracker` or its ``to_json()`` dict.
    """
    import matplotlib
    from matplotlib.figure import Figure

    d = tracker.to_json() if hasattr(tracker, "to_json") else dict(tracker)
    history = d.get("history", [])
    if not history:
        raise ValueError("nothing to plot: no epoch was recorded")
    layers = sorted({layer for h in history for layer in h["layers"]})
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    for k, layer in enumerate(layers):
        pts = [(h["epoch"], h["scores"][h["layers"].index(layer)]) for h in history if layer in h["layers"]]
        color = cmap(k / max(1, len(layers) - 1))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2, color=color,
                label=f"layer {layer}")
        for r in d.get("removals", []):
            if layer in r["layers"] and pts:
                ax.plot([pts[-1][0]], [pts[-1][1]], marker="x", ms=9, mew=2, color="tab:red")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{d.get('metric', 'score')} score")
    ax.set_title(f"{d.get('metric', 'layer')} scores by layer over training (x = removed)", fontsize=10)
    ax.legend(fontsize=7, ncol=2 if len(layers) > 10 else 1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return _save(fig, path)
