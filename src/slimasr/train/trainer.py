"""The training loop: joint CTC / inter-CTC / attention loss, Noam warm-up, bucketed batches, AMP on CUDA,
gradient accumulation, atomic checkpoints with exact resume, CSV + TensorBoard logs, DDP through torchrun.

A training directory holds::

    checkpoints/step-000001234.pt   full training state (model, optimizer, scheduler, RNG, position), last N kept
    best.pt                          the model (only) with the best dev WER so far (then dev loss)
    model.pt                         the final model (a copy of best.pt when training ends)
    train_config.json, log.csv, tb/  the settings in use (rewritten on resume) and logs

Resuming (``--resume``) continues from the latest checkpoint with the saved settings, except those given anew,
which take effect from the resume point (:func:`resume_changes`):

* ``epochs`` extends (or shortens, down to the epochs already done) the run;
* ``lr`` and ``warmup_steps`` rebuild the schedule: from the resume step ``s`` on, the learning rate is
  ``lr x min(s / warmup_steps, sqrt(warmup_steps / s))`` with the new values, exactly what a run started with
  them would use at step ``s`` (the step count and Adam's moments continue);
* ``weight_decay``, ``grad_clip``, ``accum_steps``, augmentation, workers, checkpointing, logging, the wall-clock
  budget and the distillation weight apply to every later step;
* settings that decide which utterances form the training subset, the batches of the interrupted epoch, the dev
  subset or the feature normalisation (:data:`FIXED_ON_RESUME`) are refused with an error naming them.

``train_config.json`` and every later checkpoint record the settings in use.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..decoding import greedy_transcripts
from ..scoring import error_rates
from ..model.asr import ASRModel, _atomic_save
from .config import SettingError, TrainConfig

log = logging.getLogger(__name__)

TRAIN_FORMAT = "slimasr-train"


def noam_lambda(warmup: int) -> Callable[[int], float]:
    """Multiplier of the peak lr: linear warm-up to 1 at ``warmup`` steps, then inverse square-root decay."""
    warmup = max(1, warmup)

    def f(step: int) -> float:
        step = max(1, step)
        return min(step / warmup, math.sqrt(warmup / step))

    return f


# ------------------------------------------------------------------------------------------------ DDP
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


# ------------------------------------------------------------------------------------------------ checkpoints
def _rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# settings that fix the training subset (seed, fraction), the batches of an interrupted epoch (and the seed its
# order), the dev subset "best" is measured on, and the CMVN computed when the run started
FIXED_ON_RESUME = ("seed", "train_fraction", "max_frames_per_batch", "dev_max_utts", "cmvn_max_files")


def resume_changes(saved: TrainConfig, new: TrainConfig, epochs_done: int) -> dict[str, tuple]:
    """The settings ``new`` changes relative to the run's ``saved`` ones, as ``{field: (old, new)}``.

    Raises:
        SettingError: naming every changed field of :data:`FIXED_ON_RESUME`, or ``epochs`` below ``epochs_done``.
    """
    changes = {f.name: (getattr(saved, f.name), getattr(new, f.name)) for f in dataclasses.fields(TrainConfig)
               if getattr(saved, f.name) != getattr(new, f.name)}
    fixed = {k: f"cannot change on resume ({a} -> {b})" for k, (a, b) in changes.items() if k in FIXED_ON_RESUME}
    if fixed:
        raise SettingError(fixed, "these fix the training subset, the batches, the dev subset or the feature "
                                  "normalisation of the run; resume without them or start a new output directory")
    if new.epochs < epochs_done:
        raise SettingError({"epochs": f"{new.epochs} is fewer than the {epochs_done} epochs this run has done"})
    return changes


def step_checkpoints(out_dir: Path) -> list[Path]:
    """The training checkpoints ``out_dir/checkpoints/step-*.pt``, oldest first (the step is zero-padded)."""
    return sorted((Path(out_dir) / "checkpoints").glob("step-*.pt"))


def latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = step_checkpoints(out_dir)
    return ckpts[-1] if ckpts else None


def load_training_checkpoint(path: Path) -> dict:
    # the training state holds RNG states (numpy arrays, tuples): trusted files written by us
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"{path} is not a readable training checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != TRAIN_FORMAT:
        raise ValueError(f"{path} is not a slimasr training checkpoint")
    return ckpt


# ------------------------------------------------------------------------------------------------ trainer
@dataclass
class EpochHooks:
    """Optional callbacks: ``extra_loss(model, batch, out) -> tensor`` (added to the loss, e.g. distillation) and
    ``epoch_end(trainer, epoch) -> ASRModel | None`` (may return a replacement model, e.g. after pruning)."""

    extra_loss: Callable | None = None
    epoch_end: Callable | None = None


@dataclass
class TrainResult:
    out_dir: Path
    epochs_done: int
    steps: int
    best_dev_wer: float | None
    best_dev_loss: float | None
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


class Trainer:
    def __init__(self, model: ASRModel, tokenizer, train_ds, dev_ds, out_dir: str | os.PathLike,
                 cfg: TrainConfig = TrainConfig(), device: str = "cpu", hooks: EpochHooks | None = None,
                 dist_info: DistInfo | None = None, progress: bool = True):
        self.cfg = cfg
        self.device = torch.device(device)
        self.dist = dist_info or DistInfo()
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.train_ds, self.dev_ds = train_ds, dev_ds
        self.hooks = hooks or EpochHooks()
        self.progress = progress and self.dist.is_main
        self.model = model.to(self.device)
        self.model.chunk_generator.manual_seed(cfg.seed)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_wer: float | None = None
        self.best_loss: float | None = None
        self.history: list[dict] = []
        self._build_optimizer()
        from ..data.dataset import BucketBatchSampler

        self.sampler = BucketBatchSampler(train_ds.durations, max_frames_per_batch=cfg.max_frames_per_batch,
                                          shuffle=True, seed=cfg.seed, num_replicas=self.dist.world_size,
                                          rank=self.dist.rank)

    # -------------------------------------------------------------- setup
    def _build_optimizer(self) -> None:
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, betas=(0.9, 0.98), eps=1e-9,
                                          weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, noam_lambda(self.cfg.warmup_steps))

    def replace_model(self, model: ASRModel) -> None:
        """Swap in a new model (e.g. with layers removed); the optimizer restarts, the lr schedule continues."""
        model.chunk_generator.set_state(self.model.chunk_generator.get_state())
        self.model = model.to(self.device)
        sched_state = self.scheduler.state_dict()
        self._build_optimizer()
        self.scheduler.load_state_dict(sched_state)
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr

    def _ddp_model(self):
        if self.dist.world_size <= 1:
            return self.model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.model, device_ids=ids, find_unused_parameters=self.model.decoder is None
                   or self.model.config.ctc_weight >= 1.0)

    def _loader(self, ds, sampler):
        from ..data.dataset import collate

        return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate,
                                           num_workers=self.cfg.num_workers,
                                           persistent_workers=False, pin_memory=self.device.type == "cuda")

    # -------------------------------------------------------------- checkpoints
    def _train_state(self) -> dict:
        return {
            "format": TRAIN_FORMAT,
            "model": self.model.checkpoint_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_wer": self.best_wer, "best_loss": self.best_loss, "history": self.history,
            "rng": _rng_state(), "chunk_rng": self.model.chunk_generator.get_state(),
            "train_config": self.cfg.to_dict(),
        }

    def save_checkpoint(self) -> Path | None:
        if not self.dist.is_main:
            return None
        path = self.out_dir / "checkpoints" / f"step-{self.step:09d}.pt"
        _atomic_save(self._train_state(), path)
        for old in step_checkpoints(self.out_dir)[:-max(1, self.cfg.keep_last)]:
            old.unlink(missing_ok=True)
        log.info("checkpoint %s", path)
        return path

    def resume(self, path: Path, ckpt: dict | None = None) -> dict[str, tuple]:
        """Restore the training state of checkpoint ``path`` (already loaded: ``ckpt``), keeping this trainer's
        settings where they differ (see the module docstring); returns the changes ``{field: (old, new)}``.

        Raises:
            ValueError: an unreadable checkpoint, or a setting that cannot change on resume.
        """
        ckpt = ckpt if ckpt is not None else load_training_checkpoint(path)
        saved = TrainConfig.from_dict(ckpt.get("train_config", {}))
        changes = resume_changes(saved, self.cfg, int(ckpt["epoch"]))
        model = ASRModel.from_checkpoint_dict(ckpt["model"], source=str(path))
        if model.config != self.model.config:
            self.model = model.to(self.device)   # e.g. a model pruned during training
            self._build_optimizer()
        else:
            self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        self.best_wer, self.best_loss, self.history = ckpt["best_wer"], ckpt["best_loss"], ckpt["history"]
        self._schedule_from(self.step)  # this trainer's lr / warm-up (the saved ones unless changed)
        _set_rng_state(ckpt["rng"])
        if "chunk_rng" in ckpt:
            self.model.chunk_generator.set_state(ckpt["chunk_rng"])
        log.info("resumed from %s (epoch %d, batch %d, step %d)%s", path, self.epoch, self.batch_in_epoch,
                 self.step, "; changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
                 if changes else "")
        return changes

    def _schedule_from(self, step: int) -> None:
        """The Noam schedule of ``self.cfg`` positioned at optimizer step ``step`` (the lr of that step set)."""
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.cfg.lr
            group["weight_decay"] = self.cfg.weight_decay
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, noam_lambda(self.cfg.warmup_steps),
                                                           last_epoch=step - 1)

    # -------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, chunk_size: int | None = None, left_chunks: int | None = None) -> dict:
        from ..data.dataset import BucketBatchSampler

        model = self.model
        was_training = model.training
        model.eval()
        ds = self.dev_ds
        sampler = BucketBatchSampler(ds.durations, max_frames_per_batch=self.cfg.max_frames_per_batch,
                                     shuffle=False)
        tot_loss, n_utts, refs, hyps = 0.0, 0, [], []
        for batch in self._loader(ds, sampler):
            if batch is None:
                continue
            feats, lens = batch["feats"].to(self.device), batch["feats_lens"].to(self.device)
            tg, tl = batch["targets"].to(self.device), batch["target_lens"].to(self.device)
            with self._autocast():
                out = model(feats, lens, tg, tl, chunk_size=chunk_size, left_chunks=left_chunks,
                            sample_chunking=False)
            b = feats.size(0)
            tot_loss += float(out["loss"]) * b
            n_utts += b
            lp, olens = model.ctc_log_probs(feats, lens, chunk_size, left_chunks)
            r, h = greedy_transcripts(lp, olens, tg.cpu(), tl.cpu(), self.tokenizer, model.config.blank_id)
            refs += r
            hyps += h
        model.train(was_training)
        rates = error_rates(refs, hyps)
        return {"dev_loss": tot_loss / max(1, n_utts), "dev_wer": rates["wer"], "dev_cer": rates["cer"],
                "dev_utts": n_utts}

    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # -------------------------------------------------------------- training
    def fit(self) -> TrainResult:
        cfg = self.cfg
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        writer = None
        if self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(self.out_dir / "tb"))
            except Exception as e:  # tensorboard missing or broken: CSV still works
                log.warning("TensorBoard logging disabled: %s", e)
        t_start = time.monotonic()
        last_ckpt_t = t_start
        stopped = False
        ddp_model = self._ddp_model()
        try:
            while self.epoch < cfg.epochs and not stopped:
                self.model.train()
                self.sampler.set_epoch(self.epoch)
                batches = list(iter(self.sampler))
                skip = self.batch_in_epoch
                sampler = _ListSampler(batches[skip:])
                loader = self._loader(self.train_ds, sampler)
                from tqdm import tqdm

                bar = tqdm(loader, total=len(batches), initial=skip, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                           disable=not self.progress, dynamic_ncols=True, leave=False)
                run_loss, run_n = 0.0, 0
                self.optimizer.zero_grad(set_to_none=True)
                for batch in bar:
                    self.batch_in_epoch += 1
                    if batch is None:
                        continue
                    loss_val = self._train_batch(ddp_model, batch)
                    run_loss += loss_val
                    run_n += 1
                    if self.batch_in_epoch % cfg.accum_steps == 0 or self.batch_in_epoch == len(batches):
                        self._optim_step()
                        if self.step % cfg.log_every == 0:
                            lr = self.scheduler.get_last_lr()[0]
                            bar.set_postfix(loss=f"{run_loss / max(1, run_n):.2f}", lr=f"{lr:.2e}")
                            if writer:
                                writer.add_scalar("train/loss", run_loss / max(1, run_n), self.step)
                                writer.add_scalar("train/lr", lr, self.step)
                        now = time.monotonic()
                        if (self.step % cfg.checkpoint_every_steps == 0
                                or now - last_ckpt_t > cfg.checkpoint_every_minutes * 60):
                            self.save_checkpoint()
                            last_ckpt_t = now
                        if cfg.max_minutes is not None and now - t_start > cfg.max_minutes * 60:
                            stopped = True
                            break
                bar.close()
                unreadable = self.train_ds.end_epoch()
                if run_n == 0 and len(batches) > skip:    # nothing trained: never save it as a model
                    raise ValueError(f"no training batch of epoch {self.epoch + 1} could be read ({unreadable} "
                                     f"unreadable audio file(s) among {len(self.train_ds)} utterances; are the "
                                     f"manifest's audio paths right?)")
                if stopped:
                    self.save_checkpoint()
                    break
                self._end_epoch(run_loss / max(1, run_n), writer, time.monotonic() - t_start)
                ddp_model = self._ddp_model()     # the epoch hook may have replaced the model
        finally:
            if writer:
                writer.close()
        if self.dist.is_main:
            best = self.out_dir / "best.pt"
            if best.exists():
                shutil.copyfile(best, self.out_dir / "model.pt")
            else:
                self.model.save(self.out_dir / "model.pt")
        return TrainResult(self.out_dir, self.epoch, self.step, self.best_wer, self.best_loss, self.history,
                           stopped)

    def _train_batch(self, ddp_model, batch) -> float:
        feats = batch["feats"].to(self.device, non_blocking=True)
        lens = batch["feats_lens"].to(self.device)
        tg, tl = batch["targets"].to(self.device), batch["target_lens"].to(self.device)
        with self._autocast():
            out = ddp_model(feats, lens, tg, tl)
            loss = out["loss"]
            if self.hooks.extra_loss is not None:
                loss = loss + self.hooks.extra_loss(self.model, batch, out)
        if not torch.isfinite(loss):
            log.warning("non-finite loss at step %d; batch skipped", self.step)
            return 0.0
        (loss / self.cfg.accum_steps).backward()
        return float(loss.detach())

    def _optim_step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _end_epoch(self, train_loss: float, writer, elapsed: float) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0
        row = {"epoch": self.epoch, "step": self.step, "train_loss": train_loss,
               "lr": self.scheduler.get_last_lr()[0], "elapsed_s": round(elapsed, 1)}
        if self.dist.is_main and self.dev_ds is not None and len(self.dev_ds):
            row.update(self.evaluate())
            better = (self.best_wer is None or row["dev_wer"] < self.best_wer
                      or (row["dev_wer"] == self.best_wer and row["dev_loss"] < (self.best_loss or float("inf"))))
            if better:
                self.best_wer, self.best_loss = row["dev_wer"], row["dev_loss"]
                self.model.save(self.out_dir / "best.pt")
            if writer:
                for k in ("dev_loss", "dev_wer", "dev_cer"):
                    writer.add_scalar(f"dev/{k[4:]}", row[k], self.step)
            log.info("epoch %d: %s", self.epoch, {k: (round(v, 4) if isinstance(v, float) else v)
                                                  for k, v in row.items()})
        if self.hooks.epoch_end is not None:
            new = self.hooks.epoch_end(self, self.epoch)
            if new is not None:
                self.replace_model(new)
                row["layers"] = len(self.model.encoder.layers)
                self.best_wer = self.best_loss = None     # a different model: best is measured afresh
        self.history.append(row)
        if self.dist.is_main:
            path = self.out_dir / "log.csv"
            fields = ["epoch", "step", "train_loss", "lr", "elapsed_s", "dev_loss", "dev_wer", "dev_cer",
                      "dev_utts", "layers"]
            new_file = not path.exists()
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                if new_file:
                    w.writeheader()
                w.writerow(row)
        self.save_checkpoint()


class _ListSampler(torch.utils.data.Sampler):
    def __init__(self, batches: Sequence[Sequence[int]]):
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
