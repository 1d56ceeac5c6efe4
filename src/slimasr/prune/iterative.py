"""Iterative pruning during fine-tuning (Bekal et al., 2023, section 3.2 and eq. 5).

Fine-tune the model; after every epoch score its layers on the dev set; every ``m`` epochs remove the ``n``
layers with the lowest consistency score ``C`` (the mean of the last ``m`` epochs' scores, eq. 5), until
``target_layers`` remain. The paper's settings on a 20-layer model: 2 iterations of (4 layers, every 4 epochs) and
4 iterations of (2 layers, every 2 epochs), within 30 fine-tuning epochs.

The schedule is an :class:`~slimasr.train.EpochHooks` ``epoch_end`` callback (:class:`IterativePruner`) around a
:class:`~slimasr.prune.schedule.ConsistencyTracker`; :func:`iterative_prune` runs the whole fine-tuning::

    res = iterative_prune(None, "data/train.jsonl", "data/dev.jsonl", "exp/iter", metric="correlation",
                          every_m=2, remove_n=2, target_layers=7, train_cfg=TrainConfig(epochs=10, train_fraction=0.2))

An output directory holds the trainer's files (``checkpoints/``, ``log.csv``, ...) plus::

    score_log.json   the scores of every layer after every epoch (epoch 0 = before fine-tuning) and the removals
    figure2.png      scores by layer over epochs (the paper's Figure 2)
    pruned.pt        the model right after the latest removal (before fine-tuning it further)
    model.pt         the final model: ``target_layers`` layers, ``config.original_layers`` set

Resuming (``resume=True``) continues from the latest training checkpoint; the schedule is replayed from the score
log up to the checkpoint's epoch, so the removal decisions stay the same.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .schedule import ConsistencyTracker

__all__ = ["IterativePruner", "IterativeResult", "iterative_prune", "removal_epochs"]

log = logging.getLogger(__name__)

SCORE_LOG = "score_log.json"
FIGURE = "figure2.png"


def removal_epochs(num_layers: int, target_layers: int, every_m: int, remove_n: int) -> list[int]:
    """The epochs (1-based, counted at epoch ends) at which the schedule removes layers.

    >>> removal_epochs(12, 7, every_m=2, remove_n=2)      # 12 -> 10 -> 8 -> 7
    [2, 4, 6]
    """
    if every_m < 1 or remove_n < 1:
        raise ValueError(f"every_m and remove_n must be at least 1, got {every_m} and {remove_n}")
    if not 1 <= target_layers <= num_layers:
        raise ValueError(f"target_layers must be in [1, {num_layers}], got {target_layers}")
    return [every_m * (k + 1) for k in range(math.ceil((num_layers - target_layers) / remove_n))]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class IterativePruner:
    """``EpochHooks.epoch_end`` callback: score the layers, record them, remove layers when the schedule says so.

    Args:
        tracker: the schedule (metric, every_m, remove_n, target_layers).
        dev_batches: re-iterable ``collate`` batches (a DataLoader or a list) to score on.
        out_dir: where ``score_log.json``, ``figure2.png`` and ``pruned.pt`` are written (None: nowhere).
        max_batches: score on the first N batches only.
        loss, chunk_size, left_chunks: passed to :func:`~slimasr.prune.metrics.score_layers`.
        plot: redraw ``figure2.png`` after every removal (and when :meth:`save` is asked to).
    """

    def __init__(self, tracker: ConsistencyTracker, dev_batches, out_dir: str | os.PathLike | None = None, *,
                 max_batches: int | None = None, loss: str = "ctc", chunk_size: int | None = None,
                 left_chunks: int | None = None, plot: bool = True) -> None:
        self.tracker = tracker
        self.dev_batches = dev_batches
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.max_batches = max_batches
        self.loss = loss
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.plot = plot
        self.initial: dict | None = None       # {"epoch": 0, "layers", "scores"} before fine-tuning

    # ------------------------------------------------------------------ scoring
    def score(self, model, device=None):
        from .metrics import score_layers

        return score_layers(model, self.dev_batches, [self.tracker.metric], device=device, progress=False,
                            max_batches=self.max_batches, loss=self.loss, chunk_size=self.chunk_size,
                            left_chunks=self.left_chunks)

    def score_initial(self, model, device=None) -> None:
        """Score the model before fine-tuning (epoch 0 of the score log and the figure; not used by eq. 5)."""
        s = self.score(model, device)
        self.initial = {"epoch": 0, "layers": list(s.original_layers), "scores": list(s[self.tracker.metric].scores)}
        self.save(plot=False)

    # ------------------------------------------------------------------ the hook
    def __call__(self, trainer, epoch: int):
        """Score ``trainer.model`` after ``epoch`` (1-based); return the pruned model when a removal is due."""
        from .surgery import remove_layers

        self._rewind(epoch)
        model = trainer.model
        scores = self.score(model, trainer.device)
        self.tracker.add_epoch(scores, epoch=epoch)
        drop = self.tracker.layers_to_remove()
        new = None
        if drop:
            removed = self.tracker.removals[-1]["layers"]
            new = remove_layers(model, drop)
            log.info("epoch %d: removed original layers %s by %s consistency; %d layers remain", epoch, removed,
                     self.tracker.metric, len(new.encoder.layers))
            if self.out_dir is not None:
                new.save(self.out_dir / "pruned.pt")
        self.save(plot=new is not None)
        return new

    def _rewind(self, epoch: int) -> None:
        """Forget what was recorded at or after ``epoch`` (a resumed run repeats those epochs): replay the rest."""
        if not any(h["epoch"] >= epoch for h in self.tracker.history):
            return
        old = self.tracker
        fresh = ConsistencyTracker(old.metric, old.every_m, old.remove_n, old.target_layers, old.importance)
        for h in old.history:
            if h["epoch"] >= epoch:
                break
            if fresh.current_layers is None:
                fresh.current_layers = list(h["layers"])
            fresh.add_epoch(h["scores"], epoch=h["epoch"])
            fresh.layers_to_remove()
        log.info("iterative pruning: replayed the schedule up to epoch %d", epoch - 1)
        self.tracker = fresh

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict:
        d = self.tracker.to_json()
        d["initial"] = self.initial
        return d

    def save(self, plot: bool = True) -> None:
        """Write the score log (and, with ``plot``, the figure) to ``out_dir``."""
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.out_dir / SCORE_LOG, json.dumps(self.to_json(), indent=1) + "\n")
        if plot and self.plot and (self.tracker.history or self.initial):
            from .plots import plot_score_history

            plot_score_history(figure_data(self.to_json()), self.out_dir / FIGURE)

    @classmethod
    def load_state(cls, path: str | os.PathLike) -> tuple[ConsistencyTracker, dict | None]:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return ConsistencyTracker.from_json(d), d.get("initial")


def figure_data(score_log: dict) -> dict:
    """A score log with the epoch-0 scores (before fine-tuning) prepended to the history, for the figure."""
    d = dict(score_log)
    if d.get("initial"):
        d["history"] = [d["initial"], *d.get("history", [])]
    return d


@dataclass
class IterativeResult:
    out_dir: Path
    model_path: Path
    score_log: Path
    figure: Path | None
    removals: list[dict]
    final_layers: list[int]
    train: object = None                    # the trainer's TrainResult
    history: list[dict] = field(default_factory=list)


def _dev_dataset(model, dev_manifest: str, train_manifest: str, dev_max_utts: int | None, feature_cache: bool):
    """The dev utterances the trainer evaluates on (same subset, same feature cache), for scoring."""
    from ..data.dataset import ASRDataset, FeatureCache
    from ..data.manifest import read_manifest_skipping
    from ..tokenizer import Tokenizer

    rows = read_manifest_skipping(dev_manifest)       # malformed lines: named and skipped, as train_model does
    if dev_max_utts is not None and len(rows) > dev_max_utts:
        rows = random.Random(0).sample(rows, dev_max_utts)      # the subset train_model picks
    fb = model.frontend
    cache = None
    if feature_cache and rows:
        cache_dir = Path(train_manifest).resolve().parent / ".feature_cache"
        cache = FeatureCache.open_or_build(rows, fb, cache_dir, progress=False)
    ds = ASRDataset(rows, Tokenizer.from_bytes(model.tokenizer_bytes), fb, cache=cache)
    if len(ds) == 0:
        raise ValueError(f"{dev_manifest}: no usable dev utterance to score layers on")
    return ds


def iterative_prune(model_or_path, train: str, dev: str, out: str | os.PathLike, metric: str = "correlation",
                    every_m: int = 2, remove_n: int = 2, target_layers: int | None = None, train_cfg=None, *,
                    resume: bool = False, device: str | None = None, score_max_batches: int | None = None,
                    loss: str = "ctc", chunk_size: int | None = None, left_chunks: int | None = None,
                    feature_cache: bool = True, progress: bool = True) -> IterativeResult:
    """Fine-tune ``model_or_path`` while pruning it iteratively to ``target_layers`` layers.

    Args:
        model_or_path: an ``ASRModel``, a model file, or None (the embedded default model). It must carry a
            tokenizer. It is not modified.
        train, dev: manifests (the trainer uses ``train_cfg.train_fraction`` of ``train``; layers are scored on
            the trainer's dev subset, ``train_cfg.dev_max_utts`` utterances of ``dev``).
        metric: a data metric of :data:`~slimasr.prune.metrics.DATA_METRICS` (``correlation`` in the paper).
        every_m, remove_n, target_layers: the schedule (see :class:`ConsistencyTracker`); the layers must be
            reachable within ``train_cfg.epochs`` epochs.
        train_cfg: a :class:`~slimasr.train.TrainConfig` (the fine-tuning recipe).
        score_max_batches: score on the first N dev batches only.
        loss, chunk_size, left_chunks: scoring settings (see :func:`~slimasr.prune.metrics.score_layers`).
    Returns:
        :class:`IterativeResult`; ``out/model.pt`` is the final model.
    """
    import torch

    from ..data.dataset import BucketBatchSampler, collate
    from ..model import load_model
    from ..train import EpochHooks, TrainConfig, latest_checkpoint, train_model
    from .metrics import DATA_METRICS

    train_cfg = train_cfg or TrainConfig()
    if metric not in DATA_METRICS or metric == "oracle":
        raise ValueError(f"iterative pruning needs a per-layer metric computed on data, one of "
                         f"{', '.join(m for m in DATA_METRICS if m != 'oracle')}; got {metric!r}")
    model = copy.deepcopy(model_or_path) if hasattr(model_or_path, "encoder") else load_model(model_or_path)
    if model.tokenizer_bytes is None:
        raise ValueError("the model has no tokenizer attached (needed to score layers on dev transcripts)")
    n = len(model.encoder.layers)
    target = n if target_layers is None else int(target_layers)
    epochs_needed = removal_epochs(n, target, every_m, remove_n)
    if epochs_needed and epochs_needed[-1] > train_cfg.epochs:
        raise ValueError(f"removing {n - target} layers, {remove_n} every {every_m} epochs, needs "
                         f"{epochs_needed[-1]} epochs (removals after epochs {epochs_needed}); got "
                         f"epochs={train_cfg.epochs}")
    if epochs_needed and epochs_needed[-1] == train_cfg.epochs:
        log.warning("the last removal happens after the last epoch: the final model gets no fine-tuning")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev_ds = _dev_dataset(model, dev, train, train_cfg.dev_max_utts, feature_cache)
    sampler = BucketBatchSampler(dev_ds.durations, max_frames_per_batch=train_cfg.max_frames_per_batch,
                                 shuffle=False)
    batches = torch.utils.data.DataLoader(dev_ds, batch_sampler=sampler, collate_fn=collate, num_workers=0)

    tracker = ConsistencyTracker(metric, every_m, remove_n, target)
    pruner = IterativePruner(tracker, batches, out, max_batches=score_max_batches, loss=loss,
                             chunk_size=chunk_size, left_chunks=left_chunks)
    resuming = resume and latest_checkpoint(out) is not None and (out / SCORE_LOG).is_file()
    if resuming:
        saved, initial = IterativePruner.load_state(out / SCORE_LOG)
        if (saved.metric, saved.every_m, saved.remove_n, saved.target_layers) != (metric, every_m, remove_n,
                                                                                  target):
            raise ValueError(f"{out / SCORE_LOG} was written by a different schedule ({saved!r}); use a new --out")
        pruner.tracker, pruner.initial = saved, initial
    else:
        for stale in (SCORE_LOG, FIGURE, "pruned.pt"):
            (out / stale).unlink(missing_ok=True)
        pruner.score_initial(model, device)

    result = train_model(None, train, dev, out, train_cfg, resume=resume, device=device,
                         feature_cache=feature_cache, hooks=EpochHooks(epoch_end=pruner), progress=progress,
                         model=model)     # on resume the trainer restores the (pruned) model of the checkpoint
    tracker = pruner.tracker
    pruner.save()
    final = out / "model.pt"
    final_model = load_model(final)
    want = tracker.current_layers or list(range(n))
    got = list(final_model.config.original_layers or range(len(final_model.encoder.layers)))
    if got != want and (out / "pruned.pt").is_file():
        # the last removal came after the last evaluation: the best-on-dev model is the deeper one
        log.warning("the final model is the model pruned at the last epoch (no fine-tuning after the removal)")
        shutil.copyfile(out / "pruned.pt", final)
        final_model = load_model(final)
        got = list(final_model.config.original_layers or range(len(final_model.encoder.layers)))
    if final_model.config.original_layers is None:
        final_model.config = final_model.config.replace(original_layers=tuple(got))
        final_model.encoder.cfg = final_model.config
        final_model.save(final)
    if len(got) != target:
        log.warning("the final model has %d layers, not the target %d (too few epochs for the schedule?)",
                    len(got), target)
    return IterativeResult(out, final, out / SCORE_LOG, out / FIGURE if (out / FIGURE).is_file() else None,
                           list(tracker.removals), got, result, list(tracker.history))
