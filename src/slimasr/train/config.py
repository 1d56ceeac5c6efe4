"""Training configuration (frozen dataclass; saved with every checkpoint)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    max_frames_per_batch: int = 20000    # padded 10 ms frames per batch (batch size x longest utterance)
    lr: float = 1e-3                     # peak learning rate reached at the end of warm-up (Noam schedule)
    warmup_steps: int = 1000
    weight_decay: float = 1e-6
    grad_clip: float = 5.0
    accum_steps: int = 1                 # gradient accumulation
    specaug: bool = True
    speed_perturb: bool = False
    num_workers: int = 2
    seed: int = 0
    keep_last: int = 3                   # checkpoints kept (plus best)
    checkpoint_every_steps: int = 500    # besides the end of every epoch
    checkpoint_every_minutes: float = 10.0
    max_minutes: float | None = None     # wall-clock budget; training stops cleanly (checkpointed) when reached
    train_fraction: float = 1.0          # use a seeded fraction of the training set (fine-tuning: the paper uses 20%)
    dev_max_utts: int | None = 400       # dev utterances scored each epoch (None: all)
    amp: bool = True                     # bf16 autocast on CUDA (ignored on CPU)
    log_every: int = 20
    cmvn_max_files: int = 2000
    # knowledge distillation (student training): weight of the cosine-distance term on final-layer logits
    distill_weight: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)
