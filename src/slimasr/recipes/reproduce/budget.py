"""Budgets of the reproduction (how much training every run gets) and the cost estimate of a plan."""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import ExperimentSpec

__all__ = ["Budget", "BUDGETS", "estimate_seconds"]


@dataclass(frozen=True)
class Budget:
    """How much training every run gets. All runs get the same number of epochs over the same fraction of the
    training set (so about the same optimizer steps); see the report for what that means for each baseline."""

    name: str
    epochs: int                          # fine-tuning epochs (one-shot, scratch, distillation)
    train_fraction: float                # seeded fraction of the training set per run (the paper: 20%)
    lr: float = 5e-4                     # fine-tuning peak lr (the paper's); also distillation
    warmup_steps: int = 25
    scratch_lr: float = 2e-3             # the teacher's first-stage recipe
    scratch_warmup_steps: int = 50
    # scratch models (and so the distillation students, which start from them): epochs over this fraction of
    # the training set; None: the fine-tuning budget (epochs x train_fraction)
    scratch_epochs: int | None = None
    scratch_fraction: float | None = None
    # weight of the mean cosine distance: the training losses are per-utterance sums, so at weight 1 the cosine
    # term's gradient is 1/50 (untrained student) to 1/500 (a pruned teacher) of the loss's on the default model;
    # at 100 it is about twice the loss's gradient for an untrained student and a fifth of it for a good one
    distill_weight: float = 100.0
    iterative_split: int = 1             # iterative runs cut each epoch into this many (epochs x k, fraction / k)
    iterative_schedules: tuple[tuple[int, int], ...] = ((4, 4), (2, 2))    # (layers removed, every m epochs)
    ratios: tuple[float, ...] = (0.2, 0.4)
    max_frames_per_batch: int = 20000
    dev_max_utts: int = 200              # dev utterances evaluated (and scored, iterative runs) every epoch
    score_utts: int = 200                # dev utterances the teacher's layers are scored on
    num_workers: int = 1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["iterative_schedules"] = [list(s) for s in self.iterative_schedules]
        d["ratios"] = list(self.ratios)
        return d

    def replace(self, **kw) -> "Budget":
        return dataclasses.replace(self, **kw)

    @property
    def scratch_schedule(self) -> tuple[int, float]:
        """(epochs, fraction of the training set) of the scratch models."""
        return self.scratch_epochs or self.epochs, self.scratch_fraction or self.train_fraction

    @classmethod
    def from_dict(cls, d: dict) -> "Budget":
        """Inverse of :meth:`to_dict` (fields missing from older files take their defaults)."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


BUDGETS: dict[str, Budget] = {
    # fits 2 CPU cores: 2 epochs over 20% of the training set per run; iterative runs see the same amount of data
    # in 10 epochs of 4% each, so the paper's schedules (removals after epochs 4 and 8, or 2, 4 and 6) fit
    "small": Budget("small", epochs=2, train_fraction=0.2, iterative_split=5),
    # the paper's recipe: 30 epochs over 20%, the schedules on whole epochs (a GPU job)
    "paper": Budget("paper", epochs=30, train_fraction=0.2, warmup_steps=100, scratch_warmup_steps=400,
                    dev_max_utts=400, score_utts=400, num_workers=2),
    # one GPU, several workers, about 10 minutes for 2 seeds: 10 epochs over 20% per run (the paper's iterative
    # schedules on whole epochs); scratch models get 12 epochs over all of train (a fifth of the default
    # teacher's ~60 epochs)
    "gpu": Budget("gpu", epochs=10, train_fraction=0.2, warmup_steps=25, scratch_epochs=12, scratch_fraction=1.0,
                  scratch_warmup_steps=200, max_frames_per_batch=40000, dev_max_utts=100, score_utts=200,
                  num_workers=1),
}


# ---------------------------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------------------------
# Measured: decoding the held-out test set with the 12-layer default model (feature extraction included) takes
# about 260 s per hour of test audio with full context and 360 s with chunks of 16 frames (2 CPU cores).
DECODE_SECONDS_PER_AUDIO_HOUR_12L = {"offline": 260.0, "chunked": 360.0}
# Measured: fine-tuning a 10-layer pruned default model on 2 idle CPU cores (torch 2 threads, 40000-frame batches,
# features read from the training set's feature cache, dev evaluation on 100 utterances after every epoch) takes
# about 160 s per epoch of 1.51 h of audio, i.e. about this many seconds per hour of training audio per epoch for
# the 12-layer model (cores shared with other work: up to 5x more):
SECONDS_PER_AUDIO_HOUR_12L = 125.0
_FIXED_LAYERS = 3.0                      # front-end, CTC head and decoder, in layer-equivalents
_KIND_FACTOR = {"oneshot": 1.0, "scratch": 1.0, "iterative": 1.15, "distill": 2.3}


def _layer_scale(layers: int, ref: int = 12) -> float:
    return (_FIXED_LAYERS + layers) / (_FIXED_LAYERS + ref)


def estimate_seconds(spec: ExperimentSpec, budget: Budget, train_hours: float, teacher_layers: int,
                     rate: float | None = None, test_hours: float = 0.0) -> float:
    """Rough wall-clock seconds of one run: training and decoding ``test_hours`` of test audio. ``rate``:
    measured training seconds per audio hour per epoch of the teacher's size (default:
    :data:`SECONDS_PER_AUDIO_HOUR_12L`, scaled to the teacher's depth)."""
    rate = rate if rate is not None else SECONDS_PER_AUDIO_HOUR_12L * _layer_scale(teacher_layers)
    layers = teacher_layers if spec.kind == "iterative" else spec.layers
    hours = train_hours * budget.train_fraction * budget.epochs
    if spec.kind == "scratch":
        epochs, fraction = budget.scratch_schedule
        hours = train_hours * fraction * epochs
    train = rate * hours * _layer_scale(layers, teacher_layers) * _KIND_FACTOR[spec.kind]
    decodes = {"offline": 1 + (spec.kind == "oneshot"), "chunked": int(spec.chunked)}
    decode = sum(DECODE_SECONDS_PER_AUDIO_HOUR_12L[k] * n for k, n in decodes.items())
    return train + decode * test_hours * _layer_scale(spec.layers)


def _device_kind(device: str | None) -> str | None:
    """The kind of a torch device string, ``cuda`` or ``cpu``; None when unknown (``default``: whatever was
    available)."""
    if not device or device == "default":
        return None
    return "cuda" if device.startswith("cuda") else "cpu" if device.startswith("cpu") else device


def _measured_rate(results: list[dict], teacher_layers: int, device: str | None = None) -> float | None:
    """Seconds per audio hour per epoch, normalised to the teacher's depth, from finished runs (median). With
    ``device``, only runs trained on that kind of device count (a GPU's rate says nothing of a CPU's)."""
    rates = []
    for r in results:
        t = r.get("train", {})
        if device is not None and _device_kind((t.get("host") or {}).get("device")) != _device_kind(device):
            continue
        if t.get("seconds") and t.get("audio_hours") and r["kind"] in _KIND_FACTOR:
            layers = teacher_layers if r["kind"] == "iterative" else r["layers"]
            rates.append(t["seconds"] / t["audio_hours"] / _layer_scale(layers, teacher_layers)
                         / _KIND_FACTOR[r["kind"]])
    return statistics.median(rates) if rates else None


def _teacher_seconds(layers: int, score_utts: int) -> float:
    """The teacher's scoring with every metric and the oracle: measured about 1600 s per hour of dev audio for the
    12-layer default model on 2 CPU cores (dev utterances average 3.4 s)."""
    return 1600.0 * score_utts * 3.4 / 3600 * _layer_scale(layers)
