"""The plan of the reproduction: every training run (an :class:`ExperimentSpec`) for a teacher, a budget and
seeds."""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .budget import Budget

__all__ = ["ExperimentSpec", "plan_experiments", "ONESHOT_METRICS", "BASELINE_METHODS", "CHUNK"]

log = logging.getLogger(__name__)

ONESHOT_METRICS = ("energy", "correlation", "gradient", "hessian")
BASELINE_METHODS = ("oracle", "last", "random")
CHUNK = (16, 4)                         # chunked decoding: 16 encoder frames per chunk, 4 chunks of left context


@dataclass(frozen=True)
class ExperimentSpec:
    """One training run. ``kind``: oneshot | scratch | distill | iterative."""

    kind: str
    seed: int
    layers: int                          # layers of the resulting model
    metric: str | None = None            # oneshot: the ranking; iterative: the metric (correlation)
    ratio: float | None = None           # oneshot: fraction of layers removed
    remove_n: int | None = None          # iterative
    every_m: int | None = None           # iterative (after adapting to the budget)
    schedule: tuple[int, int] | None = None   # iterative: the requested (remove_n, every_m)
    chunked: bool = False                # also decode with chunks (the runs of Table 3)

    @property
    def name(self) -> str:
        if self.kind == "oneshot":
            return f"oneshot-{self.metric}-{self.layers}L"
        if self.kind == "iterative":
            return f"iterative-{self.schedule[0]}x{self.schedule[1]}-{self.layers}L"
        return f"{self.kind}-{self.layers}L"

    @property
    def id(self) -> str:
        return f"seed{self.seed}/{self.name}"


def _removed(n: int, ratio: float) -> int:
    return int(round(ratio * n))


def plan_experiments(num_layers: int, budget: Budget, seeds: Sequence[int]) -> list[ExperimentSpec]:
    """Every run of the reproduction, in the order they are done (seed by seed; within a seed the runs of
    Tables 2 and 3 first, then the rest of Table 1)."""
    n = num_layers
    sizes = [n - _removed(n, r) for r in budget.ratios]
    if any(k < 1 or k >= n for k in sizes):
        raise ValueError(f"ratios {budget.ratios} do not fit a {n}-layer teacher (sizes {sizes})")
    target = min(sizes)
    it_epochs = budget.epochs * budget.iterative_split
    runs: list[ExperimentSpec] = []
    for seed in seeds:
        first, rest = [], []
        for ratio, k in zip(budget.ratios, sizes):
            for metric in ONESHOT_METRICS + BASELINE_METHODS:
                spec = ExperimentSpec("oneshot", seed, k, metric=metric, ratio=ratio,
                               chunked=metric == "correlation" and k == target)
                (first if metric == "correlation" else rest).append(spec)
            first.append(ExperimentSpec("scratch", seed, k))
            first.append(ExperimentSpec("distill", seed, k))
        for remove_n, every_m in budget.iterative_schedules:
            r = math.ceil((n - target) / remove_n)
            m = every_m if r * every_m < it_epochs else max(1, (it_epochs - 1) // r)
            if r * m > it_epochs:
                log.warning("iterative schedule (%d, %d) does not fit %d epochs; skipped", remove_n, every_m,
                            it_epochs)
                continue
            first.append(ExperimentSpec("iterative", seed, target, metric="correlation", remove_n=remove_n, every_m=m,
                                 schedule=(remove_n, every_m), chunked=True))
        runs += first + rest
    return runs
