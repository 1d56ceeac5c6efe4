"""Reproduce the experiments of Bekal et al. (2023) on a teacher model and a corpus with held-out test voices.

One call, :func:`reproduce`, plans every training run, runs those not done yet and writes the report:

* Table 1: one-shot pruning by each metric (energy, correlation, gradient, Hessian) at 20% and 40%, plus the
  oracle (dev loss with the layer removed), "last layers" and random baselines; WER before and after fine-tuning.
* Table 2: a small model trained from scratch vs. knowledge distillation vs. one-shot pruning (correlation).
* Table 3: one-shot vs. iterative pruning (the paper's two schedules) with offline and chunked decoding.
* Figure 2 (scores by layer over fine-tuning epochs), the metrics' rank agreement with the oracle, and WER by
  held-out test voice and voice group (the manifests' ``speaker`` field: ``espeak-ng/...`` vs ``flite/...``).

Every number is averaged over seeds (mean and sample standard deviation). Work is kept under ``out``::

    settings.json             teacher checksum, data, budget: a later call must match them
    teacher/scores.json       the teacher's layer scores on dev (all metrics, the oracle)
    teacher/result.json       the teacher's test WERs
    runs/seed0/<run>/         one training directory per run (checkpoints: an interrupted run resumes)
    results/seed0/<run>.json  a finished run's result; a later call skips it

so the tables can be completed over several sittings (``max_runs``); unfinished cells read "pending".
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .fileutil import file_sha256

__all__ = ["Budget", "BUDGETS", "RunSpec", "plan_runs", "reproduce", "evaluate_model", "estimate_seconds",
           "write_report", "seed_work_dir"]

log = logging.getLogger(__name__)

ONESHOT_METRICS = ("energy", "correlation", "gradient", "hessian")
BASELINE_METHODS = ("oracle", "last", "random")
CHUNK = (16, 4)                         # chunked decoding: 16 encoder frames per chunk, 4 chunks of left context
TEACHER_NOTE = ("The embedded default teacher was trained on one GPU for about 9 minutes in two stages "
                "(6.5 + 2.5 minutes, 4585 steps of up to 40000 frames on all of the training set; logs in "
                "`benchmarks/results/default_model/`). That budget cannot be matched on 2 CPU cores.")


# ---------------------------------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------------------------------
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
# The plan
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
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


def plan_runs(num_layers: int, budget: Budget, seeds: Sequence[int]) -> list[RunSpec]:
    """Every run of the reproduction, in the order they are done (seed by seed; within a seed the runs of
    Tables 2 and 3 first, then the rest of Table 1)."""
    n = num_layers
    sizes = [n - _removed(n, r) for r in budget.ratios]
    if any(k < 1 or k >= n for k in sizes):
        raise ValueError(f"ratios {budget.ratios} do not fit a {n}-layer teacher (sizes {sizes})")
    target = min(sizes)
    it_epochs = budget.epochs * budget.iterative_split
    runs: list[RunSpec] = []
    for seed in seeds:
        first, rest = [], []
        for ratio, k in zip(budget.ratios, sizes):
            for metric in ONESHOT_METRICS + BASELINE_METHODS:
                spec = RunSpec("oneshot", seed, k, metric=metric, ratio=ratio,
                               chunked=metric == "correlation" and k == target)
                (first if metric == "correlation" else rest).append(spec)
            first.append(RunSpec("scratch", seed, k))
            first.append(RunSpec("distill", seed, k))
        for remove_n, every_m in budget.iterative_schedules:
            r = math.ceil((n - target) / remove_n)
            m = every_m if r * every_m < it_epochs else max(1, (it_epochs - 1) // r)
            if r * m > it_epochs:
                log.warning("iterative schedule (%d, %d) does not fit %d epochs; skipped", remove_n, every_m,
                            it_epochs)
                continue
            first.append(RunSpec("iterative", seed, target, metric="correlation", remove_n=remove_n, every_m=m,
                                 schedule=(remove_n, every_m), chunked=True))
        runs += first + rest
    return runs


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


def estimate_seconds(spec: RunSpec, budget: Budget, train_hours: float, teacher_layers: int,
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


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------
def _group(speaker: str) -> str:
    return speaker.split("/", 1)[0] if "/" in speaker else speaker


def evaluate_model(model, manifest: str, chunk_size: int | None = None, left_chunks: int | None = None,
                   device: str | None = None) -> dict:
    """Greedy-CTC WER/CER of ``manifest``, overall, by voice (``speaker``) and by voice group (engine).
    ``device``: where to run the model (None: the model's device)."""
    from .scoring import error_rates
    from .evaluate import decode_manifest

    if device is None:
        device = str(next(model.parameters()).device)
    model = model.to(device)
    r = decode_manifest(model, manifest, chunk_size=chunk_size, left_chunks=left_chunks, device=device)
    hyps = r["hyps"]
    out = {"wer": r["wer"], "cer": r["cer"], "utterances": len(hyps), "rtf": r["rtf"], "by_voice": {},
           "by_group": {}, "skipped": r["skipped_items"]}        # utterances that could not be decoded, and why
    for key, fn in (("by_voice", lambda s: s), ("by_group", _group)):
        groups: dict[str, list[dict]] = {}
        for h in hyps:
            if "speaker" in h:
                groups.setdefault(fn(h["speaker"]), []).append(h)
        out[key] = {g: error_rates([h["reference"] for h in hs], [h["text"] for h in hs])["wer"]
                    for g, hs in sorted(groups.items())}
    return out


def _evaluate(model, test: str, chunked: bool = True, device: str | None = None) -> dict:
    out = {"offline": evaluate_model(model, test, device=device)}
    if chunked:
        out["chunked"] = evaluate_model(model, test, *CHUNK, device=device)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None




def _manifest_hours(path: Path) -> float:
    from .data.manifest import read_manifest

    return sum(float(r["duration"]) for r in read_manifest(path, resolve=False)) / 3600.0


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------
class _Runner:
    def __init__(self, teacher_path: Path, teacher_is_default: bool, data: Path, out: Path, budget: Budget,
                 device: str | None, progress: bool, echo: Callable[[str], None], feature_cache: bool = True):
        from .model import load_model

        self.teacher_path = teacher_path
        self.teacher_is_default = teacher_is_default
        self.teacher = load_model(teacher_path)
        if self.teacher.tokenizer_bytes is None:
            raise ValueError(f"the teacher {teacher_path} has no tokenizer attached")
        self.n = len(self.teacher.encoder.layers)
        self.data, self.out, self.budget = data, out, budget
        self.train, self.dev, self.test = (str(data / f"{s}.jsonl") for s in ("train", "dev", "test"))
        self.device, self.progress, self.echo = device, progress, echo
        self.feature_cache = feature_cache
        self.train_hours = _manifest_hours(Path(self.train))
        self.test_hours = _manifest_hours(Path(self.test))
        self._scores = None
        self.settings: dict = {}
        import torch

        self.eval_device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.results_dir = Path("benchmarks/results")

    def prepare_features(self) -> None:
        """Compute the features of all of train and dev once (every run's subset reads them from there)."""
        if not self.feature_cache:
            return
        from .data.dataset import FeatureCache
        from .data.manifest import read_manifest

        for m in (self.train, self.dev):
            FeatureCache.open_or_build(read_manifest(m), self.teacher.frontend,
                                       Path(m).resolve().parent / ".feature_cache",
                                       progress=self.progress)

    # ------------------------------------------------------------------ settings
    def check_settings(self) -> dict:
        settings = {"teacher_sha256": file_sha256(self.teacher_path), "teacher_layers": self.n,
                    "data": str(self.data.resolve()), "train_hours": round(self.train_hours, 4),
                    "budget": self.budget.to_dict()}
        path = self.out / "settings.json"
        old = _read_json(path)
        if old is not None:
            diff = _settings_diff(old, settings)
            if diff:
                was = {k: old.get(k) for k in diff}
                raise ValueError(f"{self.out} holds runs made with other settings ({', '.join(diff)} differ; "
                                 f"they were {was}); use another --out or the same settings")
        else:
            _write_json(path, settings)
        return settings

    # ------------------------------------------------------------------ teacher
    def teacher_scores(self):
        from .prune.metrics import LayerScores

        if self._scores is not None:
            return self._scores
        path = self.out / "teacher" / "scores.json"
        if path.is_file():
            self._scores = LayerScores.load(path)
            return self._scores
        import random

        import torch

        from .data.dataset import ASRDataset, BucketBatchSampler, collate
        from .data.manifest import read_manifest
        from .prune.metrics import score_layers
        from .tokenizer import Tokenizer

        self.echo(f"scoring the teacher's {self.n} layers on {self.budget.score_utts} dev utterances "
                  "(all metrics and the removal oracle)")
        rows = read_manifest(self.dev)
        if len(rows) > self.budget.score_utts:
            rows = random.Random(0).sample(rows, self.budget.score_utts)
        ds = ASRDataset(rows, Tokenizer.from_bytes(self.teacher.tokenizer_bytes), self.teacher.frontend)
        if len(ds) == 0:
            raise ValueError(f"{self.dev}: no usable dev utterance")
        sampler = BucketBatchSampler(ds.durations, max_frames_per_batch=self.budget.max_frames_per_batch,
                                     shuffle=False)
        batches = list(torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=0))
        t0 = time.monotonic()
        scores = score_layers(self.teacher, [b for b in batches if b is not None], "all", device=self.device,
                              progress=self.progress)
        scores.info["seconds"] = round(time.monotonic() - t0, 1)
        scores.save(path)
        self._scores = scores
        return scores

    def teacher_result(self) -> dict:
        path = self.out / "teacher" / "result.json"
        res = _read_json(path)
        if res is None:
            self.echo("decoding the test set with the teacher")
            res = {"kind": "teacher", "layers": self.n, "eval": _evaluate(self.teacher, self.test,
                                                                          device=self.eval_device)}
            _write_json(path, res)
        return res

    # ------------------------------------------------------------------ runs
    def result_path(self, spec: RunSpec) -> Path:
        return self.out / "results" / f"{spec.id}.json"

    def train_cfg(self, spec: RunSpec):
        from .train import TrainConfig

        b = self.budget
        cfg = TrainConfig(epochs=b.epochs, train_fraction=b.train_fraction, lr=b.lr, warmup_steps=b.warmup_steps,
                          max_frames_per_batch=b.max_frames_per_batch, dev_max_utts=b.dev_max_utts,
                          num_workers=b.num_workers, seed=spec.seed)
        if spec.kind == "scratch":
            epochs, fraction = b.scratch_schedule
            cfg = cfg.replace(lr=b.scratch_lr, warmup_steps=b.scratch_warmup_steps, epochs=epochs,
                              train_fraction=fraction)
        elif spec.kind == "distill":
            cfg = cfg.replace(distill_weight=b.distill_weight)
        elif spec.kind == "iterative":
            cfg = cfg.replace(epochs=b.epochs * b.iterative_split,
                              train_fraction=b.train_fraction / b.iterative_split)
        return cfg

    def small_config(self, layers: int):
        c = self.teacher.config
        inter = sorted({min(layers - 1, max(1, round(p * layers / self.n))) for p in c.intermediate_ctc_layers}
                       ) if layers > 1 else []
        return c.replace(name=f"{c.name}-{layers}L", num_layers=layers, intermediate_ctc_layers=tuple(inter),
                         original_layers=None)

    def oneshot_model(self, spec: RunSpec):
        from .prune.metrics import LayerScores, oneshot_prune

        scores = self.teacher_scores()
        metrics = {k: v for k, v in scores.metrics.items() if k != "random"}     # seeded per run instead
        scores = LayerScores(scores.num_layers, metrics, scores.original_layers, scores.num_utterances,
                             scores.info)
        return oneshot_prune(self.teacher, scores, spec.metric, ratio=spec.ratio, seed=spec.seed)

    def run(self, spec: RunSpec) -> dict:
        import torch

        from .model import load_model
        from .prune.distill import build_student, distill
        from .prune.iterative import iterative_prune
        from .train import latest_checkpoint, train_model

        run_dir = self.out / "runs" / spec.id
        run_dir.mkdir(parents=True, exist_ok=True)
        resume = latest_checkpoint(run_dir) is not None
        cfg = self.train_cfg(spec)
        extra: dict = {}
        timing = _read_json(run_dir / "timing.json") or {"seconds": 0.0, "sittings": 0}
        if spec.kind == "oneshot":
            init = run_dir / "init.pt"
            if not init.is_file():
                self.oneshot_model(spec).save(init)
            before = _read_json(run_dir / "before_finetune.json")
            if before is None:
                before = _evaluate(load_model(init), self.test, chunked=False, device=self.eval_device)
                _write_json(run_dir / "before_finetune.json", before)
            extra["before_finetune"] = before
        t0 = time.monotonic()          # training time only (with the per-epoch dev evaluation and scoring)
        try:
            if spec.kind == "oneshot":
                res = train_model(None, self.train, self.dev, run_dir, cfg, init=str(init), resume=resume,
                                  device=self.device, progress=self.progress, feature_cache=self.feature_cache)
            elif spec.kind == "scratch":
                torch.manual_seed(spec.seed)
                model = build_student(self.small_config(spec.layers), self.teacher)
                res = train_model(None, self.train, self.dev, run_dir, cfg, resume=resume, device=self.device,
                                  progress=self.progress, model=model, feature_cache=self.feature_cache)
            elif spec.kind == "distill":
                scratch = self.out / "runs" / RunSpec("scratch", spec.seed, spec.layers).id / "model.pt"
                if not self.result_path(RunSpec("scratch", spec.seed, spec.layers)).is_file():
                    raise RuntimeError(f"{spec.id} needs the scratch model {scratch} first")
                extra["student_init"] = "scratch"
                res = distill(self.teacher, scratch, self.train, self.dev, run_dir, cfg, resume=resume,
                              device=self.device, progress=self.progress, feature_cache=self.feature_cache)
            elif spec.kind == "iterative":
                ires = iterative_prune(self.teacher, self.train, self.dev, run_dir, metric=spec.metric,
                                       every_m=spec.every_m, remove_n=spec.remove_n, target_layers=spec.layers,
                                       train_cfg=cfg, resume=resume, device=self.device, progress=self.progress,
                                       feature_cache=self.feature_cache)
                res = ires.train
                extra.update(removals=[{"epoch": r["epoch"], "layers": r["layers"]} for r in ires.removals],
                             iterations=len(ires.removals), score_log=str(ires.score_log.relative_to(self.out)))
            else:
                raise ValueError(f"unknown run kind {spec.kind!r}")
        finally:                       # an interrupted sitting counts too
            timing = {"seconds": timing["seconds"] + time.monotonic() - t0, "sittings": timing["sittings"] + 1}
            _write_json(run_dir / "timing.json", timing)
        model = load_model(run_dir / "model.pt")
        result = {
            "id": spec.id, "kind": spec.kind, "seed": spec.seed, "layers": len(model.encoder.layers),
            "metric": spec.metric, "ratio": spec.ratio, "schedule": list(spec.schedule) if spec.schedule else None,
            "every_m": spec.every_m, "remove_n": spec.remove_n,
            "original_layers": list(model.config.original_layers) if model.config.original_layers else None,
            "train": {"epochs": res.epochs_done, "steps": res.steps, "seconds": round(timing["seconds"], 1),
                      "sittings": timing["sittings"], "train_fraction": cfg.train_fraction, "lr": cfg.lr,
                      "warmup_steps": cfg.warmup_steps, "distill_weight": cfg.distill_weight,
                      "audio_hours": round(self.train_hours * cfg.train_fraction * res.epochs_done, 4),
                      "best_dev_wer": res.best_dev_wer, "stopped_early": res.stopped_early,
                      "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                               "torch_threads": torch.get_num_threads(), "device": self.eval_device}},
            "eval": _evaluate(model, self.test, chunked=spec.chunked, device=self.eval_device),
            **extra,
        }
        _write_json(self.result_path(spec), result)
        return result


def seed_work_dir(report_path: str | os.PathLike, out: str | os.PathLike, settings: dict) -> int:
    """Fill a fresh work directory from a report (``reproduction.json``) made with the same teacher, data and
    budget: the teacher's scores and test result, every finished run's result and the iterative runs' score logs.
    A later call then trains only what the report lists as pending (e.g. finishing a committed run on another
    machine). Files already in ``out`` are kept. Returns the number of run results written."""
    report_path, out = Path(report_path), Path(out)
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"report not found: {report_path}") from None
    except ValueError as e:
        raise ValueError(f"{report_path} is not a reproduction report ({e})") from None
    theirs = report.get("settings") if isinstance(report, dict) else None
    if not isinstance(theirs, dict) or "runs" not in report:
        raise ValueError(f"{report_path} is not a reproduction report (no settings / runs)")
    diff = _settings_diff(theirs, settings)
    if diff:
        raise ValueError(f"{report_path} was made with other settings ({', '.join(diff)} differ): it cannot "
                         "seed this reproduction")
    if report.get("teacher") and not (out / "teacher" / "result.json").is_file():
        _write_json(out / "teacher" / "result.json", report["teacher"])
    if report.get("scores") and not (out / "teacher" / "scores.json").is_file():
        _write_json(out / "teacher" / "scores.json", report["scores"])
    written = 0
    for r in report["runs"]:
        path = out / "results" / f"{r['id']}.json"
        if not path.is_file():
            _write_json(path, r)
            written += 1
    for run_id, log_data in (report.get("score_logs") or {}).items():
        path = out / "runs" / run_id / "score_log.json"
        if not path.is_file():
            _write_json(path, log_data)
    return written


def _settings_diff(old: dict, new: dict) -> list[str]:
    """Settings keys whose values differ (the data directory may move)."""
    return [k for k in new if k != "data" and old.get(k) != new[k]]


def _load_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "results").glob("seed*/*.json"))]


def reproduce(teacher: str | os.PathLike | None, data: str | os.PathLike, out: str | os.PathLike,
              seeds: Sequence[int] = (0, 1), budget: "Budget | str" = "small", epochs: int | None = None,
              results_dir: str | os.PathLike = "benchmarks/results", max_runs: int | None = None,
              dry_run: bool = False, device: str | None = None, progress: bool = True,
              echo: Callable[[str], None] = log.info, feature_cache: bool = True, workers: int = 1,
              max_minutes: float | None = None, resume_from: str | os.PathLike | None = None) -> dict:
    """Run (or continue) the reproduction and write ``results_dir/reproduction.md`` and ``reproduction.json``.

    Args:
        teacher: the pre-trained model (None: the embedded default model).
        data: a directory with ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl`` (``speaker`` per row for the
            per-voice tables).
        out: the work directory (resumable: finished runs are skipped, interrupted ones resume).
        seeds: one full set of runs per seed.
        budget: a :class:`Budget` or the name of a preset in :data:`BUDGETS`.
        epochs: override the budget's fine-tuning epochs.
        max_runs: do at most this many training runs now (per worker; the rest stays pending for a later call).
        dry_run: print the plan and the cost estimate, write the report from what is done, train nothing.
        echo: where progress lines go.
        feature_cache: precompute the features of the whole training set once (every run's subset reads them).
        workers: training runs done at once, each in its own process (on one GPU, small models leave most of it
            idle; on CPU the cores are split between the workers). Runs are claimed through ``out/claims``.
        max_minutes: start no run after this many minutes (runs already started finish).
        resume_from: a ``reproduction.json`` of the same teacher, data and budget whose finished runs are taken
            as done (see :func:`seed_work_dir`).
    Returns:
        the report data (also in ``reproduction.json``).
    """
    from .model import default_model_path

    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
        budget = BUDGETS[budget]
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        budget = budget.replace(epochs=int(epochs))
    if not seeds:
        raise ValueError("give at least one seed")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    data, out, results_dir = Path(data), Path(out), Path(results_dir)
    for s in ("train", "dev", "test"):
        if not (data / f"{s}.jsonl").is_file():
            raise FileNotFoundError(f"{data} has no {s}.jsonl (expected train/dev/test manifests)")
    teacher_path = Path(teacher) if teacher is not None else default_model_path()
    if not teacher_path.is_file():
        raise FileNotFoundError(f"teacher model not found: {teacher_path}")
    out.mkdir(parents=True, exist_ok=True)
    runner = _Runner(teacher_path, teacher is None, data, out, budget, device, progress, echo, feature_cache)
    settings = runner.check_settings()
    runner.settings, runner.results_dir = settings, results_dir
    if resume_from is not None:
        n_seeded = seed_work_dir(resume_from, out, settings)
        echo(f"{n_seeded} finished runs taken from {resume_from}")
    plan = plan_runs(runner.n, budget, list(seeds))
    pending = [s for s in plan if not runner.result_path(s).is_file()]
    rate = _measured_rate(_load_results(out), runner.n, runner.eval_device)
    est = sum(estimate_seconds(s, budget, runner.train_hours, runner.n, rate, runner.test_hours) for s in pending)
    # N workers on N cores (or on one GPU) run about N times as many runs in the same time: measured on 2 CPU
    # cores, 2 workers of 1 thread each took 28-30 min per run, one worker of 2 threads 27 min
    n_parallel = min(workers, max(1, len(pending)))
    if _device_kind(runner.eval_device) == "cpu":  # more workers than cores only share them
        n_parallel = min(n_parallel, os.cpu_count() or 1)
    wall = est / n_parallel
    serial = 0.0  # the teacher's scoring and decoding happen once, before the workers start
    if not (out / "teacher" / "scores.json").is_file():
        serial += _teacher_seconds(runner.n, budget.score_utts)
    if not (out / "teacher" / "result.json").is_file():
        serial += sum(DECODE_SECONDS_PER_AUDIO_HOUR_12L.values()) * runner.test_hours * _layer_scale(runner.n)
    est, wall = est + serial, wall + serial
    echo(f"reproduction: teacher {runner.n} layers, {runner.train_hours:.2f} h of training audio, budget "
         f"{budget.name!r} ({budget.epochs} epochs x {budget.train_fraction:.0%} per run), seeds {list(seeds)}")
    echo(f"{len(plan)} runs planned, {len(plan) - len(pending)} done, {len(pending)} pending; estimated "
         f"{est / 3600:.1f} h for the pending runs"
         + (f" (about {wall / 3600:.1f} h of wall-clock time with {n_parallel} workers)" if n_parallel > 1 else "")
         + f" ({'measured' if rate else 'assumed'} rate "
         f"{rate or SECONDS_PER_AUDIO_HOUR_12L * _layer_scale(runner.n):.0f} s per training-audio hour per epoch)")
    if not dry_run:
        runner.teacher_result()
        runner.teacher_scores()
        runner.prepare_features()
        deadline = time.monotonic() + 60 * max_minutes if max_minutes is not None else None
        _clear_claims(out)
        if workers <= 1:
            failed = _work(runner, plan, max_runs, deadline, echo, "")
        else:
            failed = _spawn_workers(workers, dict(teacher=teacher_path, teacher_is_default=teacher is None,
                                                  data=data, out=out, budget=budget, device=device,
                                                  feature_cache=feature_cache, seeds=list(seeds)),
                                    max_runs, max_minutes, echo)
        for run_id, err in failed.items():
            echo(f"FAILED {run_id}: {err}")
    return write_report(out, results_dir, plan, settings, runner.teacher_is_default)


# ---------------------------------------------------------------------------------------------------------------
# Workers: each takes the next unclaimed run (claims are directories, created atomically)
# ---------------------------------------------------------------------------------------------------------------
def _claim_dir(out: Path, spec: RunSpec) -> Path:
    return out / "claims" / spec.id


def _clear_claims(out: Path) -> None:
    """Claims of an earlier, interrupted call (no worker is running when a call starts)."""
    import shutil

    shutil.rmtree(out / "claims", ignore_errors=True)


def _claim(out: Path, spec: RunSpec) -> bool:
    d = _claim_dir(out, spec)
    d.parent.mkdir(parents=True, exist_ok=True)
    try:
        d.mkdir()
    except FileExistsError:
        return False
    (d / "owner").write_text(f"{platform.node()} {os.getpid()}\n", encoding="utf-8")
    return True


def _work_order(plan: list[RunSpec]) -> list[RunSpec]:
    """Scratch models first (the longest runs, and distillation starts from them), then the plan's order."""
    return sorted(plan, key=lambda s: s.kind != "scratch")


def _work(runner: "_Runner", plan: list[RunSpec], max_runs: int | None, deadline: float | None,
          echo: Callable[[str], None], tag: str) -> dict[str, str]:
    """Do pending runs until none is left to claim; returns ``{run id: error}`` of the runs that failed."""
    out = runner.out
    failed: dict[str, str] = {}
    done_now = 0
    while True:
        waiting = False
        started = False
        for spec in _work_order(plan):
            if runner.result_path(spec).is_file() or spec.id in failed:
                continue
            if spec.kind == "distill":
                scratch = RunSpec("scratch", spec.seed, spec.layers)
                if not runner.result_path(scratch).is_file():
                    # another worker may still be training it; a failed or unclaimed one blocks for good
                    if _claim_dir(out, scratch).is_dir() and not (_claim_dir(out, scratch) / "failed").exists():
                        waiting = True
                    continue
            if max_runs is not None and done_now >= max_runs:
                echo(f"{tag}stopping after {done_now} runs (max_runs)")
                return failed
            if deadline is not None and time.monotonic() > deadline:
                echo(f"{tag}time is up (max_minutes); no new run started")
                return failed
            if not _claim(out, spec):
                continue
            started = True
            guess = estimate_seconds(spec, runner.budget, runner.train_hours, runner.n,
                                     _measured_rate(_load_results(out), runner.n, runner.eval_device),
                                     runner.test_hours)
            echo(f"{tag}[{plan.index(spec) + 1}/{len(plan)}] {spec.id} (about {guess / 60:.0f} min)")
            try:
                r = runner.run(spec)
            except Exception as e:             # one broken run must not stop the others; it is reported
                log.exception("%s failed", spec.id)
                failed[spec.id] = f"{type(e).__name__}: {e}"
                (_claim_dir(out, spec) / "failed").write_text(failed[spec.id] + "\n", encoding="utf-8")
                continue
            done_now += 1
            chunked = f", {100 * r['eval']['chunked']['wer']:.2f}% chunked" if "chunked" in r["eval"] else ""
            echo(f"{tag}    {spec.id} trained in {r['train']['seconds'] / 60:.1f} min, {r['train']['steps']} "
                 f"steps: test WER {100 * r['eval']['offline']['wer']:.2f}% offline{chunked}")
            if not tag:
                write_report(out, runner.results_dir, plan, runner.settings, runner.teacher_is_default,
                             figures=False)
            break                              # rescan: scratch models finished meanwhile unblock distillation
        if not started:
            if not waiting:
                return failed
            time.sleep(5.0)


def _worker_main(i: int, n: int, kwargs: dict, max_runs: int | None, deadline_wall: float | None, queue) -> None:
    """One worker process: its own runner (and CUDA context), a share of the CPU threads."""
    import torch

    logging.basicConfig(level=logging.WARNING, format=f"w{i} %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    tag = f"w{i} "

    def echo(msg: str) -> None:
        queue.put(msg)

    runner = _Runner(Path(kwargs["teacher"]), kwargs["teacher_is_default"], Path(kwargs["data"]),
                     Path(kwargs["out"]), kwargs["budget"], kwargs["device"], False, echo, kwargs["feature_cache"])
    runner.settings = runner.check_settings()
    plan = plan_runs(runner.n, kwargs["budget"], kwargs["seeds"])
    deadline = None if deadline_wall is None else time.monotonic() + (deadline_wall - time.time())
    try:
        failed = _work(runner, plan, max_runs, deadline, echo, tag)
    except BaseException as e:                 # noqa: BLE001 - reported to the parent, which decides
        failed = {f"worker {i}": f"{type(e).__name__}: {e}"}
    queue.put({"failed": failed})


def _spawn_workers(n: int, kwargs: dict, max_runs: int | None, max_minutes: float | None,
                   echo: Callable[[str], None]) -> dict[str, str]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    deadline_wall = time.time() + 60 * max_minutes if max_minutes is not None else None
    procs = [ctx.Process(target=_worker_main, args=(i, n, kwargs, max_runs, deadline_wall, queue), daemon=False)
             for i in range(n)]
    for p in procs:
        p.start()
    echo(f"{n} workers started")
    failed: dict[str, str] = {}
    finished = 0
    try:
        while finished < n:
            try:
                msg = queue.get(timeout=5.0)
            except Exception:                  # queue.Empty: check that the workers are alive
                dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                for i in dead:
                    failed.setdefault(f"worker {i}", f"exited with code {procs[i].exitcode}")
                if all(p.exitcode is not None for p in procs):
                    break
                continue
            if isinstance(msg, dict):
                failed.update(msg["failed"])
                finished += 1
            else:
                echo(msg)
    finally:
        for p in procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.terminate()
    return failed


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def _pct(values: list[float], n_seeds: int) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "pending"
    m = 100 * statistics.fmean(values)
    s = f"{m:.1f}"
    if len(values) > 1:
        s += f" ± {100 * statistics.stdev(values):.1f}"
    if len(values) < n_seeds:
        s += f" ({len(values)}/{n_seeds} seeds)"
    return s


def _cells(results: list[dict], mode: str, groups: list[str], n_seeds: int, key: str = "eval") -> list[str]:
    """WER overall and per voice group of some runs (one per seed): mean ± sd."""
    evs = [r[key][mode] for r in results if mode in r.get(key, {})]
    row = [_pct([e["wer"] for e in evs], n_seeds)]
    row += [_pct([e["by_group"].get(g) for e in evs], n_seeds) for g in groups]
    return row


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def write_report(out: str | os.PathLike, results_dir: str | os.PathLike, plan: list[RunSpec], settings: dict,
                 teacher_is_default: bool = False, figures: bool = True) -> dict:
    """Write ``reproduction.md``, ``reproduction.json`` and (with ``figures``) the figures from what is finished
    under ``out``; without ``figures`` the report links the figure files of an earlier call."""
    from .prune.metrics import LayerScores, kendall_agreement, select_layers_to_remove

    out, results_dir = Path(out), Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    budget = settings["budget"]
    n = settings["teacher_layers"]
    seeds = sorted({s.seed for s in plan})
    ns = len(seeds)
    by_id = {r["id"]: r for r in _load_results(out)}
    teacher = _read_json(out / "teacher" / "result.json")
    scores = LayerScores.load(out / "teacher" / "scores.json") if (out / "teacher" / "scores.json").is_file() \
        else None
    groups = sorted(teacher["eval"]["offline"]["by_group"]) if teacher else []
    voices = sorted(teacher["eval"]["offline"]["by_voice"]) if teacher else []

    def runs(pred) -> list[dict]:
        return [by_id[s.id] for s in plan if pred(s) and s.id in by_id]

    def teacher_cells(mode="offline") -> list[str]:
        if not teacher:
            return ["pending"] * (1 + len(groups))
        e = teacher["eval"][mode]
        return [f"{100 * e['wer']:.1f}"] + [f"{100 * e['by_group'][g]:.1f}" for g in groups]

    sizes = [(r, n - _removed(n, r)) for r in budget["ratios"]]
    md = ["# Reproduction: metric-driven Conformer layer pruning (Bekal et al., 2023)", ""]
    md += [f"Teacher: {n} layers (`sha256 {settings['teacher_sha256'][:12]}`). Data: {settings['train_hours']:.2f} h "
           f"of training audio; test = held-out voices. Greedy CTC decoding, no LM. WER in %, mean ± sample "
           f"standard deviation over seeds {seeds} (training seed and the seeded 20% data sample); "
           "\"pending\" = not run yet.", ""]
    grp = " / ".join(groups) if groups else "voice groups"
    md += ["## Training budget", ""]
    sc_epochs, sc_frac = Budget.from_dict(budget).scratch_schedule
    same = sc_epochs == budget["epochs"] and sc_frac == budget["train_fraction"]
    md += [f"Budget `{budget['name']}`: every fine-tuning run trains {budget['epochs']} epochs over a seeded "
           f"{budget['train_fraction']:.0%} of the training set (fine-tuning lr {budget['lr']:g}, warm-up "
           f"{budget['warmup_steps']} steps, {budget['max_frames_per_batch']} frames per batch). One-shot pruned "
           "models and the distilled students get the same number of epochs over the same amount of data, so "
           "about the same number of optimizer steps (measured steps below). Iterative runs "
           f"see the same amount of data cut into {budget['epochs'] * budget['iterative_split']} epochs of "
           f"{budget['train_fraction'] / budget['iterative_split']:.0%} "
           f"({'so that the paper’s schedules fit' if budget['iterative_split'] > 1 else 'as in the paper'}). "
           f"Scratch models use the teacher's recipe (lr {budget['scratch_lr']:g}, warm-up "
           f"{budget['scratch_warmup_steps']} steps) from random weights, with the teacher's tokenizer and "
           f"feature normalisation, for {sc_epochs} epochs over {sc_frac:.0%} of the training set"
           f"{' (the fine-tuning budget)' if same else ''}; distilled students start from the scratch model of "
           "their size and train for the fine-tuning budget with the cosine distillation term (weight "
           f"{budget['distill_weight']:g}; a distillation step also runs the teacher and a second student pass). "
           "In the paper the small models were pre-trained like the teacher (the same data and epochs); here "
           "they get " + ("only the fine-tuning budget" if same else f"{sc_epochs} epochs over {sc_frac:.0%}")
           + ", so the scratch baseline (and the students built on it) is weaker than the paper's.", ""]
    if teacher_is_default:
        md += [TEACHER_NOTE, ""]
    done = list(by_id.values())
    if done:
        # minutes only mean something per kind of device: a GPU run and a CPU run differ ten-fold
        def dev(r: dict) -> str:
            return _device_kind((r["train"].get("host") or {}).get("device")) or "unknown"
        rows = []
        for k, d in sorted({(r["kind"], dev(r)) for r in done}):
            rs = [r for r in done if r["kind"] == k and dev(r) == d]
            rows.append([k, d, str(len(rs)), f"{statistics.fmean(r['train']['steps'] for r in rs):.0f}",
                         f"{statistics.fmean(r['train']['seconds'] for r in rs) / 60:.1f}"])
        md += _table(["runs", "device", "finished", "mean steps", "mean minutes"], rows) + [""]
    hosts = sorted({f"{h['cpus']} CPUs ({h['machine']}), {h['torch_threads']} torch threads, device {h['device']}"
                    for h in (r["train"].get("host") for r in done) if h})
    md += [f"{len(by_id)} of {len(plan)} runs finished" + (f", on: {'; '.join(hosts)}" if hosts else "") + ".", ""]

    # ---- Table 1
    md += ["## Table 1: one-shot pruning by metric (offline decoding)", ""]
    hdr = ["Model", "Method", "WER", *[f"WER {g}" for g in groups], "WER before fine-tuning"]
    rows = [[f"{n}-layer", "teacher", *teacher_cells(), "—"]]
    labels = {"oracle": "oracle (dev loss)", "last": "last layers", "random": "random"}
    for ratio, k in sizes:
        for metric in ONESHOT_METRICS + BASELINE_METHODS:
            rs = runs(lambda s: s.kind == "oneshot" and s.metric == metric and s.layers == k)
            before = [r["before_finetune"]["offline"]["wer"] for r in rs if "before_finetune" in r]
            rows.append([f"{k}-layer ({ratio:.0%} pruned)", labels.get(metric, metric),
                         *_cells(rs, "offline", groups, ns), _pct(before, ns)])
    md += _table(hdr, rows) + [""]

    # ---- Table 2
    md += ["## Table 2: scratch vs. distillation vs. pruning (offline decoding)", ""]
    rows = [[f"{n}-layer", "teacher", *teacher_cells()]]
    for ratio, k in sizes:
        for label, pred in (("trained from scratch", lambda s: s.kind == "scratch"),
                            ("distillation", lambda s: s.kind == "distill"),
                            ("pruning (correlation, one-shot)",
                             lambda s: s.kind == "oneshot" and s.metric == "correlation")):
            rs = runs(lambda s, p=pred: p(s) and s.layers == k)
            rows.append([f"{k}-layer", label, *_cells(rs, "offline", groups, ns)])
    md += _table(["Model", "Method", "WER", *[f"WER {g}" for g in groups]], rows) + [""]

    # ---- Table 3
    target = min(k for _, k in sizes)
    md += [f"## Table 3: one-shot vs. iterative pruning to {target} layers (correlation)", ""]
    md += [f"Offline = full context; online = chunked decoding, chunk {CHUNK[0]} encoder frames with "
           f"{CHUNK[1]} chunks of left context, i.e. {CHUNK[0] * CHUNK[1]} frames (the models are trained with "
           "dynamic chunks; the paper decodes its online models with chunk 64, hop 32 and 128 frames of left "
           "context).", ""]
    rows = []
    it_specs = [s for s in plan if s.kind == "iterative" and s.seed == seeds[0]]
    for mode, label in (("offline", "Offline"), ("chunked", "Online")):
        rows.append([label, f"{n}-layer", "teacher", "—", "—", *teacher_cells(mode)])
        rs = runs(lambda s: s.kind == "oneshot" and s.metric == "correlation" and s.layers == target)
        rows.append([label, f"{target}-layer", "one-shot", "—", "—", *_cells(rs, mode, groups, ns)])
        for spec in it_specs:
            rs = runs(lambda s, sp=spec: s.kind == "iterative" and s.schedule == sp.schedule)
            iters = sorted({r.get("iterations") for r in rs if r.get("iterations") is not None})
            when = f"({spec.remove_n}, {spec.every_m})"
            if spec.every_m != spec.schedule[1]:
                when += f" [asked ({spec.schedule[0]}, {spec.schedule[1]})]"
            rows.append([label, f"{target}-layer", "iterative", "/".join(map(str, iters)) or "pending", when,
                         *_cells(rs, mode, groups, ns)])
    md += _table(["Mode", "Model", "Method", "# iterations", "(layers, EI)", "WER", *[f"WER {g}" for g in groups]],
                 rows) + [""]
    if any(s.kind == "iterative" for s in plan):
        md += [f"Iterative epochs are the shorter epochs described above (EI counts them: "
               f"{budget['epochs'] * budget['iterative_split']} in all). Layers removed (original indices, "
               "by epoch), seed " + str(seeds[0]) + ":", ""]
        for spec in it_specs:
            r = by_id.get(spec.id)
            if r:
                md += [f"- ({spec.remove_n}, {spec.every_m}): " + "; ".join(
                    f"after epoch {x['epoch']}: {x['layers']}" for x in r["removals"]) +
                    f" → kept {r['original_layers']}"]
        md += [""]

    # ---- Figure 2
    drawn = []
    for spec in it_specs:
        log_path = out / "runs" / spec.id / "score_log.json"
        if log_path.is_file():
            from .prune.iterative import figure_data
            from .prune.plots import plot_score_history

            name = f"reproduction_figure2_{spec.schedule[0]}x{spec.schedule[1]}.png"
            if figures or not (results_dir / name).is_file():
                plot_score_history(figure_data(json.loads(log_path.read_text(encoding="utf-8"))),
                                   results_dir / name)
            drawn.append((spec, name))
    md += ["## Figure 2: correlation scores by layer over fine-tuning epochs", ""]
    if drawn:
        md += ["Epoch 0 = the teacher before fine-tuning; a cross marks the epoch a layer was removed "
               "(a higher correlation means the layer changes its input less: pruned first).", ""]
        md += [f"![iterative ({s.remove_n}, {s.every_m}), seed {s.seed}]({name})" for s, name in drawn] + [""]
    else:
        md += ["pending", ""]

    # ---- oracle agreement
    md += ["## Agreement of the metrics with the removal oracle (teacher, dev set)", ""]
    if scores is not None and "oracle" in scores:
        tau = kendall_agreement(scores, reference="oracle")
        tau_w = kendall_agreement(scores, reference="oracle_wer") if "oracle_wer" in scores else {}
        hdr = ["Metric", "Kendall τ vs oracle (loss)", "τ vs oracle (WER)"]
        for ratio, k in sizes:
            hdr += [f"removed at {ratio:.0%}", f"shared with oracle at {ratio:.0%}"]
        rows = []
        for m in [x for x in scores.metrics if x not in ("oracle", "oracle_wer")] + ["oracle", "oracle_wer"]:
            row = [m, "—" if m == "oracle" else _tau(tau.get(m)), "—" if m == "oracle_wer" else _tau(tau_w.get(m))]
            for ratio, k in sizes:
                drop = select_layers_to_remove(scores, m, ratio=ratio)
                ref = select_layers_to_remove(scores, "oracle", ratio=ratio)
                row += [" ".join(map(str, drop)), f"{len(set(drop) & set(ref))}/{len(ref)}"]
            rows.append(row)
        md += [f"Scores on {scores.num_utterances} dev utterances; τ compares the full prune orders (1 = the same "
               "order as the oracle). The oracle removes each layer alone and measures the dev loss (WER).", ""]
        md += _table(hdr, rows) + [""]
        from .prune.metrics import plot_scores

        if figures or not (results_dir / "reproduction_scores.png").is_file():
            plot_scores(scores, results_dir / "reproduction_scores.png")
        md += ["![teacher layer scores](reproduction_scores.png)", ""]
    else:
        md += ["pending", ""]

    # ---- per voice
    md += ["## WER by held-out test voice (offline)", ""]
    if voices:
        rows = [[f"{n}-layer teacher",
                 *[f"{100 * teacher['eval']['offline']['by_voice'][v]:.1f}" for v in voices]]]
        for ratio, k in sizes:
            for label, pred in (("scratch", lambda s: s.kind == "scratch"),
                                ("distillation", lambda s: s.kind == "distill"),
                                ("pruned, correlation", lambda s: s.kind == "oneshot" and s.metric == "correlation")):
                rs = runs(lambda s, p=pred: p(s) and s.layers == k)
                rows.append([f"{k}-layer {label}",
                             *[_pct([r["eval"]["offline"]["by_voice"].get(v) for r in rs], ns) for v in voices]])
        for spec in it_specs:
            rs = runs(lambda s, sp=spec: s.kind == "iterative" and s.schedule == sp.schedule)
            rows.append([f"{target}-layer iterative ({spec.remove_n}, {spec.every_m})",
                         *[_pct([r["eval"]["offline"]["by_voice"].get(v) for r in rs], ns) for v in voices]])
        md += _table(["Model", *voices], rows) + [""]
        md += [f"Voice groups in the tables above: {grp}.", ""]
    else:
        md += ["pending", ""]

    md += _findings(runs, sizes, ns, it_specs)

    md += ["## How to reproduce", "",
           "```", f"slimasr reproduce --data DATA_DIR --out WORK_DIR --budget {budget['name']} --seeds "
           + " ".join(map(str, seeds)) + (f" --epochs {budget['epochs']}" if budget['name'] in BUDGETS and
                                          BUDGETS[budget['name']].epochs != budget['epochs'] else ""), "```", "",
           "The command is resumable: run it again to continue; finished runs are kept under WORK_DIR. On one "
           "GPU, `--workers 8 --device cuda` trains eight runs at once (small models leave a GPU mostly idle).",
           ""]
    done_runs = [by_id[s.id] for s in plan if s.id in by_id]
    if done_runs:
        total = sum(r["train"]["seconds"] for r in done_runs) / 60
        devices = sorted({(r["train"].get("host") or {}).get("device", "?") for r in done_runs})
        md += [f"Cost of the finished runs: {total:.0f} run-minutes of training and evaluation in all "
               f"(device: {', '.join(devices)}; runs done concurrently overlap in wall-clock time).", ""]
    (results_dir / "reproduction.md").write_text("\n".join(md), encoding="utf-8")
    # the data directory by name only: the report is shared, the machine's paths are not
    report = {"settings": {**settings, "data": Path(settings["data"]).name}, "seeds": seeds,
              "plan": [s.id for s in plan],
              "teacher": teacher, "scores": scores.to_json() if scores is not None else None,
              "runs": [by_id[s.id] for s in plan if s.id in by_id],
              "pending": [s.id for s in plan if s.id not in by_id],
              # Figure 2's data, so that a work directory can be rebuilt from this file (seed_work_dir)
              "score_logs": {s.id: json.loads((out / "runs" / s.id / "score_log.json").read_text(encoding="utf-8"))
                             for s in plan if s.kind == "iterative" and s.id in by_id
                             and (out / "runs" / s.id / "score_log.json").is_file()}}
    _write_json(results_dir / "reproduction.json", report)
    return report


def _stats(rs: list[dict], mode: str = "offline") -> tuple[float, float | None, int] | None:
    """(mean WER %, sample sd % or None, seeds) of some runs."""
    v = [100 * r["eval"][mode]["wer"] for r in rs if mode in r.get("eval", {})]
    if not v:
        return None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None), len(v)


def _fmt(st) -> str:
    m, sd, k = st
    return f"{m:.1f}" + (f" ± {sd:.1f}" if sd is not None else "") + ("" if k > 1 else " (1 seed)")


def _verdict(best, other) -> str:
    """How clear a difference of means is: more than twice the larger seed spread, or not."""
    if best[1] is None or other[1] is None:
        return "one seed: no spread to judge by"
    gap = abs(best[0] - other[0])
    return "clear" if gap > 2 * max(best[1], other[1]) else "within the seed spread"


def _findings(runs, sizes, ns, it_specs) -> list[str]:
    """Whether the paper's three findings hold, computed from the finished runs."""
    md = ["## Do the paper's findings hold here?", "",
          "Computed from the tables above (offline WER unless stated; a difference is called clear when it exceeds "
          "twice the larger standard deviation over seeds).", ""]
    # 1. correlation is the best of the four metrics
    for ratio, k in sizes:
        st = {m: _stats(runs(lambda s, m=m: s.kind == "oneshot" and s.metric == m and s.layers == k))
              for m in ONESHOT_METRICS + BASELINE_METHODS}
        paper = sorted((m for m in ONESHOT_METRICS if st[m]), key=lambda m: st[m][0])
        if "correlation" not in paper or len(paper) < 2:
            md += [f"- **Correlation is the best metric ({ratio:.0%} pruned):** pending.", ""]
            continue
        order = " < ".join(f"{m} {_fmt(st[m])}" for m in paper)
        best = paper[0]
        if best == "correlation":
            verdict = (f"**holds** (next: {paper[1]}, {_verdict(st['correlation'], st[paper[1]])})")
        else:
            verdict = (f"**does not hold**: {best} is lower ({_verdict(st[best], st['correlation'])})")
        base = ", ".join(f"{m} {_fmt(st[m])}" for m in BASELINE_METHODS if st[m])
        md += [f"- **Correlation is the best metric ({ratio:.0%} pruned, {k} layers):** {verdict}. {order}. "
               f"Baselines: {base or 'pending'}."]
    # 2. pruning beats distillation and scratch
    for ratio, k in sizes:
        pr = _stats(runs(lambda s: s.kind == "oneshot" and s.metric == "correlation" and s.layers == k))
        di = _stats(runs(lambda s: s.kind == "distill" and s.layers == k))
        sc = _stats(runs(lambda s: s.kind == "scratch" and s.layers == k))
        if not (pr and di and sc):
            md += [f"- **Pruning beats distillation and scratch ({k} layers):** pending."]
            continue
        holds = pr[0] < di[0] and pr[0] < sc[0]
        md += [f"- **Pruning beats distillation and scratch ({k} layers):** "
               f"{'**holds**' if holds else '**does not hold**'}: pruning {_fmt(pr)}, distillation {_fmt(di)} "
               f"({_verdict(pr, di)}), scratch {_fmt(sc)} ({_verdict(pr, sc)}). Distillation "
               f"{'improves on' if di[0] < sc[0] else 'does not improve on'} its scratch start."]
    # 3. iterative helps (the paper: especially online, and more iterations help more)
    target = min(k for _, k in sizes)
    for mode, label in (("chunked", "online"), ("offline", "offline")):
        one = _stats(runs(lambda s: s.kind == "oneshot" and s.metric == "correlation" and s.layers == target),
                     mode)
        its = [(sp, _stats(runs(lambda s, sp=sp: s.kind == "iterative" and s.schedule == sp.schedule), mode))
               for sp in it_specs]
        its = [(sp, st) for sp, st in its if st]
        if not one or not its:
            md += [f"- **Iterative beats one-shot ({label}):** pending."]
            continue
        best_sp, best = min(its, key=lambda x: x[1][0])
        desc = ", ".join(f"({sp.remove_n}, {sp.every_m}) {_fmt(st)}" for sp, st in its)
        holds = best[0] < one[0]
        md += [f"- **Iterative beats one-shot ({label}, {target} layers):** "
               f"{'**holds**' if holds else '**does not hold**'}: one-shot {_fmt(one)}, iterative {desc} "
               f"({_verdict(best, one)})."]
        if len(its) > 1 and label == "online":
            # to the same depth, fewer layers per removal = more iterations
            more = min(its, key=lambda x: x[0].remove_n)
            fewer = max(its, key=lambda x: x[0].remove_n)
            if more[0] is not fewer[0]:
                md += [f"- **More iterations help more (online):** "
                       f"{'**holds**' if more[1][0] < fewer[1][0] else '**does not hold**'}: "
                       f"({more[0].remove_n}, {more[0].every_m}) {_fmt(more[1])} vs ({fewer[0].remove_n}, "
                       f"{fewer[0].every_m}) {_fmt(fewer[1])} ({_verdict(more[1], fewer[1])})."]
    return md + [""]


def _tau(t: float | None) -> str:
    return "—" if t is None else f"{t:+.2f}"
