"""Training datasets: a precomputed feature cache, the utterance dataset, a duration-bucketing batch sampler
(DDP-aware) and the padding collate function.

Typical use::

    rows = read_manifest("train.jsonl")
    cache = FeatureCache.open_or_build(rows, model.frontend, "exp/feats")
    ds = ASRDataset(rows, tokenizer, model.frontend, cache=cache, specaug=SpecAugment())
    sampler = BucketBatchSampler(ds.durations, max_frames_per_batch=20000, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=1)
    for epoch in range(n):
        sampler.set_epoch(epoch)
        for batch in loader:
            if batch is None: continue   # every utterance of the batch was unreadable
            ...
        ds.end_epoch()  # logs (and returns) the number of unreadable files met so far
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from slimasr.chunking import min_frames, output_frames
from slimasr.data.manifest import load_utterance, utterance_key
from slimasr.features import FrontendConfig, compute_features, num_frames
from slimasr.model.config import ModelConfig

_DEFAULT_MODEL = ModelConfig()     # the default front-end geometry (4x Conv2d subsampling, right context 6)

__all__ = ["ASRDataset", "BucketBatchSampler", "FeatureCache", "collate", "utterance_features"]

log = logging.getLogger(__name__)

_COUNTER_SLOTS = 257


def utterance_features(row: Mapping, frontend: FrontendConfig) -> np.ndarray:
    """Features of one manifest row (the whole file or its segment, :func:`~slimasr.data.manifest.load_utterance`)
    with ``frontend``: float32 ``(T, frontend.dim)``.

    Raises:
        ValueError: naming the audio file (missing, unreadable, bad samples, a stretch outside the file).
    """
    return compute_features(load_utterance(row, frontend.sample_rate), frontend)


def _features_row_job(args: tuple[dict, dict]) -> np.ndarray | str:
    """Worker for the feature cache: float16 :func:`utterance_features` of one row, or the error message."""
    row, cfg = args
    try:
        return utterance_features(row, FrontendConfig.from_dict(cfg)).astype(np.float16)
    except ValueError as e:
        return str(e)


# --------------------------------------------------------------------------------------------------
# Feature cache
# --------------------------------------------------------------------------------------------------
class FeatureCache:
    """Fbank features of a whole manifest in one float16 memory-mapped file plus a JSON index.

    Files: ``<dir>/<key>.f16`` (all frames, ``(total_frames, num_mel_bins)``) and ``<dir>/<key>.json`` (per
    utterance, named by :func:`~slimasr.data.manifest.utterance_key` (the path, plus offset and duration for a
    segment): frame offset and count; unreadable audio listed under ``failed``). The key hashes the feature
    settings and every utterance with its file's size and modification time, so a changed manifest, audio file
    or config gets a new cache. float16 keeps ~3 significant digits (max error ~0.01 on log-mel values up to 30),
    far below the run-to-run variation of training.
    """

    def __init__(self, index_path: str | os.PathLike) -> None:
        self.index_path = Path(index_path)
        with open(self.index_path, encoding="utf-8") as f:
            index = json.load(f)
        self.fbank_cfg = FrontendConfig.from_dict(index["frontend"])
        self.entries: dict[str, tuple[int, int]] = {k: (int(o), int(n)) for k, (o, n) in index["entries"].items()}
        self.failed: dict[str, str] = dict(index.get("failed", {}))
        self.total_frames = int(index["total_frames"])
        self._data_path = self.index_path.with_suffix(".f16")
        self._data: np.memmap | None = None  # opened lazily (per DataLoader worker)

    # ---- building -------------------------------------------------------------------------------
    @staticmethod
    def _stamp(path: str) -> str:
        try:
            st = os.stat(path)
            return f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return "missing"

    @staticmethod
    def key(rows: Sequence[Mapping], fbank_cfg: FrontendConfig) -> str:
        h = hashlib.sha256(json.dumps(fbank_cfg.to_dict(), sort_keys=True).encode())
        for row in rows:
            h.update(f"\n{utterance_key(row)}\t{FeatureCache._stamp(str(row['audio_filepath']))}".encode())
        return "fbank-" + h.hexdigest()[:20]

    @classmethod
    def find_covering(cls, rows: Sequence[Mapping], fbank_cfg: FrontendConfig,
                      cache_dir: str | os.PathLike) -> "FeatureCache | None":
        """A cache in ``cache_dir`` built with the same settings that holds every row's audio file unchanged (same
        size and modification time), e.g. the whole training set's cache for a fine-tuning run's subset."""
        keys = {utterance_key(r) for r in rows}
        paths = {str(r["audio_filepath"]) for r in rows}
        stamps = None
        for index_path in sorted(Path(cache_dir).glob("fbank-*.json")):
            if not index_path.with_suffix(".f16").is_file():
                continue
            try:
                with open(index_path, encoding="utf-8") as f:
                    index = json.load(f)
            except (OSError, ValueError):
                continue
            held = index.get("stamps")
            covered = index.get("entries", {}).keys() | index.get("failed", {}).keys()
            if (index.get("frontend") != fbank_cfg.to_dict() or not held or not paths <= held.keys()
                    or not keys <= covered):
                continue
            if stamps is None:
                stamps = {p: cls._stamp(p) for p in paths}
            if all(held[p] == stamps[p] for p in paths):
                return cls(index_path)
        return None

    @classmethod
    def open_or_build(
        cls, rows: Sequence[Mapping], fbank_cfg: FrontendConfig, cache_dir: str | os.PathLike, jobs: int | None = None,
        progress: bool = True,
    ) -> "FeatureCache":
        """Open the cache for ``(rows, fbank_cfg)`` in ``cache_dir``, computing it first if it does not exist."""
        cache_dir = Path(cache_dir)
        index_path = cache_dir / (cls.key(rows, fbank_cfg) + ".json")
        if index_path.is_file() and index_path.with_suffix(".f16").is_file():
            log.info("feature cache: using %s", index_path)
            return cls(index_path)
        if cache_dir.is_dir():
            covering = cls.find_covering(rows, fbank_cfg, cache_dir)
            if covering is not None:
                log.info("feature cache: using %s (holds all %d utterances)", covering.index_path, len(rows))
                return covering
        return cls.build(rows, fbank_cfg, cache_dir, jobs=jobs, progress=progress)

    @classmethod
    def build(
        cls, rows: Sequence[Mapping], fbank_cfg: FrontendConfig, cache_dir: str | os.PathLike, jobs: int | None = None,
        progress: bool = True,
    ) -> "FeatureCache":
        """Compute the features of every row (in ``jobs`` processes) and write the cache atomically."""
        from tqdm import tqdm

        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = cls.key(rows, fbank_cfg)
        index_path = cache_dir / f"{key}.json"
        data_path = index_path.with_suffix(".f16")
        tmp_data = data_path.with_name(data_path.name + f".tmp{os.getpid()}")
        utts = {utterance_key(r): r for r in rows}          # unique, in order
        keys = list(utts)
        # stamped before reading: a file changed meanwhile mismatches
        stamps = {p: cls._stamp(p) for p in dict.fromkeys(str(r["audio_filepath"]) for r in rows)}
        work = [({k: utts[key][k] for k in ("audio_filepath", "offset", "duration") if k in utts[key]},
                 fbank_cfg.to_dict()) for key in keys]
        jobs = max(1, jobs or os.cpu_count() or 1)
        entries, failed, offset = {}, {}, 0
        with open(tmp_data, "wb") as out:
            if jobs > 1 and len(work) > 1:
                pool = multiprocessing.get_context("spawn").Pool(jobs)
                results = pool.imap(_features_row_job, work, chunksize=8)
            else:
                pool, results = None, map(_features_row_job, work)
            try:
                for key, feats in tqdm(zip(keys, results), total=len(keys), desc="fbank cache", unit="utt",
                                        disable=not progress):
                    if isinstance(feats, str):
                        log.warning("feature cache: skipping %s", feats)
                        failed[key] = feats
                        continue
                    out.write(np.ascontiguousarray(feats, dtype="<f2").tobytes())
                    entries[key] = (offset, int(feats.shape[0]))
                    offset += int(feats.shape[0])
            finally:
                if pool is not None:
                    pool.close()
                    pool.join()
        os.replace(tmp_data, data_path)
        tmp_index = index_path.with_name(index_path.name + f".tmp{os.getpid()}")
        with open(tmp_index, "w", encoding="utf-8") as f:
            json.dump({"frontend": fbank_cfg.to_dict(), "num_mel_bins": fbank_cfg.dim, "total_frames": offset,
                       "entries": entries, "failed": failed, "stamps": stamps}, f)
        os.replace(tmp_index, index_path)
        log.info("feature cache: %d utterances, %d frames (%.1f MB) -> %s; %d unreadable", len(entries), offset,
                 offset * fbank_cfg.dim * 2 / 1e6, data_path, len(failed))
        return cls(index_path)

    # ---- reading --------------------------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        return str(key) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> np.ndarray | None:
        """float32 ``(T, num_mel_bins)`` of an utterance (its :func:`~slimasr.data.manifest.utterance_key`: the
        path of a whole file), or None if it is not in the cache."""
        e = self.entries.get(str(key))
        if e is None:
            return None
        if self._data is None:
            if self.total_frames == 0:
                return np.zeros((0, self.fbank_cfg.dim), np.float32)
            self._data = np.memmap(self._data_path, dtype="<f2", mode="r",
                                   shape=(self.total_frames, self.fbank_cfg.dim))
        o, n = e
        return np.asarray(self._data[o:o + n], dtype=np.float32)

    def __getstate__(self) -> dict:  # DataLoader workers reopen the memmap themselves
        state = self.__dict__.copy()
        state["_data"] = None
        return state


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------
class ASRDataset(torch.utils.data.Dataset):
    """Utterances of a manifest as ``(feats (T, num_mel_bins) float32, tokens (U,) int64)``.

    Rows whose transcript has no tokens, that give no encoder frame (:func:`slimasr.chunking.output_frames`), or
    that have more tokens than the encoder has output frames (CTC cannot align them) are dropped at construction,
    with counts in ``self.filtered``. A row with ``offset`` is that stretch of its file (Kaldi segments), read
    without the rest of the file. An audio file that is missing or unreadable when read is logged with its path
    and the item comes back as ``None`` (``collate`` drops it); ``self.skipped`` counts them across DataLoader
    workers.

    Args:
        rows: manifest rows (``audio_filepath``, ``duration``, ``text``).
        tokenizer: a :class:`slimasr.tokenizer.Tokenizer` (anything with ``encode(text) -> list[int]``).
        fbank_cfg: the model's front-end (:class:`slimasr.features.FrontendConfig`, ``model.frontend``).
        cache: precomputed features; rows not in it are computed on the fly.
        specaug: a callable on ``(T, F)`` features (e.g. :class:`slimasr.data.augment.SpecAugment`).
        speed_perturb: resample the waveform by a random factor of 0.9/1.0/1.1 (features of perturbed copies
            are always computed on the fly).
        dither: fbank dither (int16 scale) for features computed on the fly; 0 keeps them deterministic.
        subsampling, right_context: the model's front-end (``ModelConfig.subsampling_factor`` /
            ``right_context``), for the length filters.
    """

    def __init__(
        self, rows: Sequence[Mapping], tokenizer, fbank_cfg: FrontendConfig = FrontendConfig(),
        cache: FeatureCache | None = None, specaug=None, speed_perturb: bool = False, dither: float = 0.0,
        subsampling: int = _DEFAULT_MODEL.subsampling_factor, right_context: int = _DEFAULT_MODEL.right_context,
        speed_factors: Sequence[float] = (0.9, 1.0, 1.1),
    ) -> None:
        self.fbank_cfg = fbank_cfg
        self.cache = cache
        self.specaug = specaug
        self.speed_perturb = speed_perturb
        self.speed_factors = tuple(speed_factors)
        self.dither = dither
        self.min_frames = min_frames(right_context)
        self.filtered = {"no_tokens": 0, "too_short": 0, "too_many_tokens": 0}
        self.rows: list[dict] = []
        self.tokens: list[list[int]] = []
        dropped: list[str] = []                  # "path (why)" of the dropped rows
        for row in rows:
            ids = tokenizer.encode(row["text"])
            frames = num_frames(int(round(float(row["duration"]) * fbank_cfg.sample_rate)), fbank_cfg)
            enc = output_frames(frames, subsampling, right_context)
            why = ("no_tokens" if not ids else "too_short" if enc == 0 else
                   "too_many_tokens" if len(ids) > enc else None)
            if why:
                self.filtered[why] += 1
                dropped.append(f"{row['audio_filepath']} ({why})")
            else:
                self.rows.append(dict(row))
                self.tokens.append(ids)
        n_drop = sum(self.filtered.values())
        if n_drop:
            log.warning("dataset: dropped %d of %d utterances (%s): %s%s", n_drop, n_drop + len(self.rows),
                        ", ".join(f"{k}={v}" for k, v in self.filtered.items() if v), ", ".join(dropped[:5]),
                        f" and {n_drop - 5} more" if n_drop > 5 else "")
        # one shared-memory slot per DataLoader worker (slot 0: the main process), so counting needs no lock and
        # works with fork and spawn worker processes alike
        self._skipped = torch.zeros(_COUNTER_SLOTS, dtype=torch.int64).share_memory_()
        self._reported = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def durations(self) -> list[float]:
        """Durations in seconds, aligned with the dataset's indices (for :class:`BucketBatchSampler`)."""
        return [float(r["duration"]) for r in self.rows]

    @property
    def skipped(self) -> int:
        """Unreadable audio files met so far (all workers, all epochs)."""
        return int(self._skipped.sum())

    def end_epoch(self) -> int:
        """Log how many unreadable files this epoch met; return the count."""
        n = self.skipped - self._reported
        self._reported = self.skipped
        if n:
            log.warning("dataset: %d unreadable audio files skipped this epoch (%d in total)", n, self.skipped)
        return n

    def _features(self, row: Mapping) -> torch.Tensor:
        from slimasr.data.augment import speed_perturb
        from slimasr.features import compute_features

        factor = 1.0
        if self.speed_perturb and self.speed_factors:
            factor = self.speed_factors[int(torch.randint(len(self.speed_factors), (1,)))]
        if factor == 1.0 and self.cache is not None:
            feats = self.cache.get(utterance_key(row))
            if feats is not None:
                return torch.from_numpy(feats)
        wav = torch.from_numpy(load_utterance(row, self.fbank_cfg.sample_rate))  # (S,), the cache's loader
        if factor != 1.0:
            wav = speed_perturb(wav, factor, self.fbank_cfg.sample_rate)
        rng = None
        if self.dither:   # dither noise follows torch's seed (torch.manual_seed), as the speed factor does
            rng = np.random.default_rng(int(torch.randint(2 ** 62, (1,))))
        return torch.from_numpy(compute_features(wav.numpy(), self.fbank_cfg, dither=self.dither, rng=rng))  # (T, F)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        try:
            feats = self._features(self.rows[i])  # (T, F)
            if feats.size(0) < self.min_frames:  # the manifest's duration was wrong
                raise ValueError(f"{utterance_key(self.rows[i])} is too short ({feats.size(0)} feature frames, at "
                                 f"least {self.min_frames} needed)")
        except ValueError as e:  # AudioError and friends name the file
            log.warning("dataset: skipping utterance %d: %s", i, e)
            info = torch.utils.data.get_worker_info()
            self._skipped[0 if info is None else 1 + info.id % (_COUNTER_SLOTS - 1)] += 1
            return None
        if self.specaug is not None:
            feats = self.specaug(feats)
        return feats, torch.tensor(self.tokens[i], dtype=torch.long)


# --------------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------------
class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of similar-length utterances, under a padded-frames budget or of a fixed size.

    Each epoch: shuffle the indices (seeded by ``(seed, epoch)``), cut them into pools of ``pool_size``, sort
    each pool by duration, cut the sorted pools into batches, shuffle the batches. With ``num_replicas > 1``
    every rank computes the same batch list and takes every ``num_replicas``-th batch; the largest batches are
    split in two until the batch count divides evenly, so every rank gets the same number of batches and every
    index is used exactly once per epoch across ranks (``drop_last=True`` drops the remainder instead).
    Only when there are fewer splittable batches than needed are some batches repeated.

    Args:
        durations: seconds per dataset index.
        max_frames_per_batch: budget of ``batch_size * longest utterance`` in 10 ms frames (exclusive with
            ``batch_size``). An utterance longer than the budget forms a batch on its own.
        batch_size: fixed number of utterances per batch.
        shuffle: False gives one fixed, duration-sorted order (for evaluation).
    """

    def __init__(
        self, durations: Sequence[float], max_frames_per_batch: int | None = None, batch_size: int | None = None,
        shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0, drop_last: bool = False,
        pool_size: int = 2000, frame_shift_s: float = 0.01,
    ) -> None:
        if (max_frames_per_batch is None) == (batch_size is None):
            raise ValueError("give exactly one of max_frames_per_batch or batch_size")
        if (max_frames_per_batch or batch_size) <= 0:
            raise ValueError("max_frames_per_batch / batch_size must be positive")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.frames = np.array([max(1, int(d / frame_shift_s) + 1) for d in durations], dtype=np.int64)
        self.max_frames = max_frames_per_batch
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.pool_size = max(1, pool_size)
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _cut(self, order: np.ndarray) -> list[list[int]]:
        batches, cur, cur_max = [], [], 0
        for i in order:
            f = int(self.frames[i])
            if self.batch_size is not None:
                full = len(cur) >= self.batch_size
            else:
                full = cur and (len(cur) + 1) * max(cur_max, f) > self.max_frames
            if full:
                batches.append(cur)
                cur, cur_max = [], 0
            cur.append(int(i))
            cur_max = max(cur_max, f)
        if cur:
            batches.append(cur)
        return batches

    def _all_batches(self) -> list[list[int]]:
        """The whole epoch's batch list (identical on every rank)."""
        n = len(self.frames)
        if not self.shuffle:
            return self._cut(np.argsort(self.frames, kind="stable"))
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(n)
        batches = []
        for s in range(0, n, self.pool_size):
            pool = perm[s:s + self.pool_size]
            batches += self._cut(pool[np.argsort(self.frames[pool], kind="stable")])
        return [batches[k] for k in rng.permutation(len(batches))]

    def _rank_batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self._all_batches()
        r = self.num_replicas
        if r > 1 and batches and len(batches) % r:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % r]
            else:
                need = r - len(batches) % r
                # split the largest batches (by padded frames) in two, in a deterministic order
                cost = [(len(b) * int(self.frames[b].max()), k) for k, b in enumerate(batches) if len(b) > 1]
                for _, k in sorted(cost, reverse=True)[:need]:
                    b = batches[k]
                    batches[k] = b[: len(b) // 2]
                    batches.append(b[len(b) // 2:])
                k = 0
                while len(batches) % r:  # too few splittable batches: repeat from the start
                    batches.append(batches[k])
                    k += 1
        mine = batches[self.rank::r]
        self._cache = (self.epoch, mine)
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._rank_batches())

    def __len__(self) -> int:
        return len(self._rank_batches())


def collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor] | None]) -> dict[str, torch.Tensor] | None:
    """Pad a list of ``(feats (T_i, F), tokens (U_i,))`` into a batch; ``None`` items (unreadable audio) dropped.

    Returns:
        None if every item was ``None``, else a dict with ``feats`` ``(B, T, F)`` float32 zero-padded,
        ``feats_lens`` ``(B,)`` int64, ``targets`` ``(B, U)`` int64 padded with -1, ``target_lens`` ``(B,)``
        int64, and ``num_skipped`` (int, dropped items).
    """
    items = [b for b in batch if b is not None]
    if not items:
        return None
    B = len(items)
    F = items[0][0].shape[1]
    feats_lens = torch.tensor([f.shape[0] for f, _ in items], dtype=torch.long)
    target_lens = torch.tensor([t.shape[0] for _, t in items], dtype=torch.long)
    feats = torch.zeros(B, int(feats_lens.max()), F, dtype=torch.float32)
    targets = torch.full((B, max(1, int(target_lens.max()))), -1, dtype=torch.long)
    for k, (f, t) in enumerate(items):
        feats[k, : f.shape[0]] = f
        targets[k, : t.shape[0]] = t
    return {"feats": feats, "feats_lens": feats_lens, "targets": targets, "target_lens": target_lens,
            "num_skipped": len(batch) - B}
