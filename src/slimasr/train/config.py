"""Training configuration (frozen dataclass; saved with every checkpoint and as ``train_config.json``).

Each field's ``metadata["help"]`` is the help text of its command-line option (``--max-frames-per-batch`` for
``max_frames_per_batch``); :func:`slimasr.cli.options.dataclass_options` builds the options of ``train``,
``distill`` and ``prune iterative`` from these fields, so every option has one default: the field's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class SettingError(ValueError):
    """Bad training settings. ``problems`` maps each offending field to what is wrong with it; ``render`` words
    the message with another name per field (the CLI: its option)."""

    def __init__(self, problems: dict[str, str], note: str = "") -> None:
        self.problems, self.note = dict(problems), note
        super().__init__(self.render())

    def render(self, name=str) -> str:
        text = "; ".join(f"{name(k)} {v}" for k, v in self.problems.items())
        return f"{text} ({self.note})" if self.note else text


def _f(default, text: str, cli: bool = True):
    """A field with its option help; ``cli=False``: a setting recipes set, with no command-line option."""
    return field(default=default, metadata={"help": text, "cli": cli})


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _f(30, "Epochs over the (fraction of the) training set; on --resume a larger value extends the run.")
    max_frames_per_batch: int = _f(20000, "Padded 10 ms frames per batch (batch size x longest utterance).")
    lr: float = _f(1e-3, "Peak learning rate, reached at the end of warm-up (Noam schedule: "
                         "lr x min(step / warmup, sqrt(warmup / step))).")
    warmup_steps: int = _f(1000, "Optimizer steps of linear warm-up.")
    weight_decay: float = _f(1e-6, "Adam weight decay.")
    grad_clip: float = _f(5.0, "Gradient norm clipping.")
    accum_steps: int = _f(1, "Gradient accumulation: batches per optimizer step.")
    specaug: bool = _f(True, "SpecAugment (time and frequency masks).")
    speed_perturb: bool = _f(False, "Speed perturbation by 0.9/1.0/1.1.")
    num_workers: int = _f(2, "DataLoader worker processes.")
    seed: int = _f(0, "Seed of the training subset, the batch order, the initial weights and augmentation.")
    keep_last: int = _f(3, "Training checkpoints kept (besides best.pt).", cli=False)
    checkpoint_every_steps: int = _f(500, "Checkpoint every N optimizer steps (and at the end of every epoch).",
                                     cli=False)
    checkpoint_every_minutes: float = _f(10.0, "Checkpoint at least every N minutes.", cli=False)
    max_minutes: float | None = _f(None, "Wall-clock budget of this invocation in minutes; stops cleanly "
                                         "(checkpointed) when reached.")
    train_fraction: float = _f(1.0, "Train on this seeded fraction of the training set (the paper fine-tunes "
                                    "on 0.2).")
    dev_max_utts: int | None = _f(400, "Dev utterances (a seeded subset) evaluated after every epoch.")
    amp: bool = _f(True, "bf16 autocast on CUDA (ignored on CPU).", cli=False)
    log_every: int = _f(20, "Log the loss every N optimizer steps.", cli=False)
    cmvn_max_files: int = _f(2000, "Training files the feature mean and variance are estimated on.", cli=False)
    distill_weight: float = _f(0.0, "Knowledge distillation: weight of the cosine distance to the teacher's "
                                    "final-layer logits.", cli=False)

    def __post_init__(self) -> None:
        bad = {}
        for name in ("epochs", "max_frames_per_batch", "accum_steps", "keep_last", "checkpoint_every_steps",
                     "log_every", "cmvn_max_files", "dev_max_utts"):
            v = getattr(self, name)
            if v is not None and v < 1:
                bad[name] = f"must be at least 1, got {v}"
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                bad[name] = f"must be positive, got {getattr(self, name)}"
        for name in ("warmup_steps", "num_workers", "weight_decay", "distill_weight", "max_minutes"):
            v = getattr(self, name)
            if v is not None and v < 0:
                bad[name] = f"must be >= 0, got {v}"
        if not 0.0 < self.train_fraction <= 1.0:
            bad["train_fraction"] = f"must be in (0, 1], got {self.train_fraction}"
        if bad:
            raise SettingError(bad)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)
