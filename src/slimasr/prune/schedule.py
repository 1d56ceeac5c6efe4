"""Iterative pruning schedule (Bekal et al., 2023, section 3.2 and eq. 5).

Score the layers after every epoch; every ``m`` epochs remove the ``n`` layers with the lowest consistency score
``C = 1/m sum_{e=1..m} S^e`` (the mean of the last ``m`` epochs' scores), until ``target_layers`` remain. The
trainer drives it::

    tracker = ConsistencyTracker("correlation", every_m=2, remove_n=2, target_layers=12)
    for epoch in range(epochs):
        train_one_epoch(model)
        tracker.add_epoch(score_layers(model, dev_batches, ["correlation"]))
        drop = tracker.layers_to_remove()          # indices into the *current* model
        if drop:
            model = remove_layers(model, drop)

Layers are tracked by their index in the original stack, so the history stays meaningful after removals and the
indices it returns always refer to the current (already pruned) model.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from .metrics import IMPORTANCE, LayerScores, rank_layers

__all__ = ["ConsistencyTracker"]


class ConsistencyTracker:
    """Eq. 5 consistency scores over epochs and the resulting removal decisions.

    Args:
        metric: the metric whose scores are averaged (its orientation comes from :data:`IMPORTANCE`, or from the
            :class:`LayerScores` passed to :meth:`add_epoch`).
        every_m: epochs between removals (also the averaging window m).
        remove_n: layers removed at each removal (fewer at the last one, to land on ``target_layers``).
        target_layers: stop removing when this many layers remain.
        importance: override the metric's orientation (``"higher"``, ``"lower"`` or ``"abs"``).
    """

    def __init__(self, metric: str, every_m: int, remove_n: int, target_layers: int,
                 importance: str | None = None) -> None:
        if every_m < 1:
            raise ValueError(f"every_m must be at least 1, got {every_m}")
        if remove_n < 1:
            raise ValueError(f"remove_n must be at least 1, got {remove_n}")
        if target_layers < 1:
            raise ValueError(f"target_layers must be at least 1, got {target_layers}")
        if importance is None and metric not in IMPORTANCE:
            raise ValueError(f"unknown metric {metric!r}: pass importance='higher'|'lower'|'abs'")
        self.metric = metric
        self.every_m = int(every_m)
        self.remove_n = int(remove_n)
        self.target_layers = int(target_layers)
        self.importance = importance or IMPORTANCE[metric]
        self.current_layers: list[int] | None = None     # original indices of the current model's layers
        self.history: list[dict] = []                    # {"epoch", "layers", "scores"} per add_epoch
        self.removals: list[dict] = []                   # {"epoch", "indices", "layers", "consistency"}
        self._since_removal = 0

    # ------------------------------------------------------------------ input
    def add_epoch(self, scores: "LayerScores | Sequence[float]", epoch: int | None = None) -> None:
        """Record one epoch's scores of the current layers (a :class:`LayerScores` or one float per layer)."""
        if isinstance(scores, LayerScores):
            ms = scores[self.metric]
            values = ms.scores
            layers = scores.original_layers
            self.importance = ms.importance
        else:
            values, layers = [float(s) for s in scores], None
        if self.current_layers is None:
            self.current_layers = list(layers) if layers is not None else list(range(len(values)))
        if len(values) != len(self.current_layers):
            raise ValueError(f"got {len(values)} scores but the model has {len(self.current_layers)} layers "
                             "(remove the layers returned by layers_to_remove before scoring again)")
        if layers is not None and list(layers) != self.current_layers:
            raise ValueError(f"scores are for original layers {list(layers)} but the tracker expects "
                             f"{self.current_layers}")
        e = epoch if epoch is not None else (self.history[-1]["epoch"] + 1 if self.history else 0)
        self.history.append({"epoch": int(e), "layers": list(self.current_layers), "scores": list(values)})
        self._since_removal += 1

    # ------------------------------------------------------------------ decisions
    @property
    def done(self) -> bool:
        return self.current_layers is not None and len(self.current_layers) <= self.target_layers

    def consistency(self) -> list[float]:
        """C (eq. 5) of each current layer: mean of its scores over the last ``every_m`` recorded epochs (absolute
        values for ``abs`` metrics, whose sign carries no importance and would cancel in the mean)."""
        if self.current_layers is None or not self.history:
            raise ValueError("no scores recorded yet")
        window = self.history[-self.every_m:]
        out = []
        for layer in self.current_layers:
            vals = []
            for h in window:
                if layer in h["layers"]:
                    v = h["scores"][h["layers"].index(layer)]
                    vals.append(abs(v) if self.importance == "abs" else v)
            out.append(sum(vals) / len(vals) if vals else math.nan)
        return out

    def layers_to_remove(self) -> list[int]:
        """The layers to remove now, as sorted indices into the current model ([] when none are due).

        A removal is due once ``every_m`` epochs were recorded since the last one and more than ``target_layers``
        layers remain. The decision is recorded: the caller must remove exactly these layers before the next
        :meth:`add_epoch`.
        """
        if self.current_layers is None or self.done or self._since_removal < self.every_m:
            return []
        c = self.consistency()
        k = min(self.remove_n, len(self.current_layers) - self.target_layers)
        ranks = rank_layers(c, self.importance)
        idx = sorted(i for i in range(len(c)) if ranks[i] < k)
        removed = [self.current_layers[i] for i in idx]
        self.removals.append({"epoch": self.history[-1]["epoch"], "indices": idx, "layers": removed,
                              "consistency": c})
        self.current_layers = [x for x in self.current_layers if x not in removed]
        self._since_removal = 0
        return idx

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict:
        """A JSON-serialisable dict (settings, history of scores, removals) for checkpoints and plots."""
        return {"metric": self.metric, "every_m": self.every_m, "remove_n": self.remove_n,
                "target_layers": self.target_layers, "importance": self.importance,
                "current_layers": self.current_layers, "since_removal": self._since_removal,
                "history": self.history, "removals": self.removals}

    @classmethod
    def from_json(cls, d: dict) -> "ConsistencyTracker":
        t = cls(d["metric"], d["every_m"], d["remove_n"], d["target_layers"], d.get("importance"))
        t.current_layers = list(d["current_layers"]) if d.get("current_layers") is not None else None
        t.history = [dict(h) for h in d.get("history", [])]
        t.removals = [dict(r) for r in d.get("removals", [])]
        t._since_removal = int(d.get("since_removal", 0))
        return t

    def __repr__(self) -> str:
        return (f"ConsistencyTracker({self.metric!r}, every_m={self.every_m}, remove_n={self.remove_n}, "
                f"target_layers={self.target_layers}, current_layers={self.current_layers})")
