"""Running one experiment of the reproduction: the teacher's scores and test result, one training run and its
evaluation, the work directory's files (results, settings, seeding from an earlier report)."""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from ...fileutil import file_sha256
from .budget import Budget
from .plan import CHUNK, ExperimentSpec

__all__ = ["ExperimentRunner", "evaluate_model", "seed_work_dir"]

log = logging.getLogger(__name__)


def _group(speaker: str) -> str:
    return speaker.split("/", 1)[0] if "/" in speaker else speaker


def evaluate_model(model, manifest: str, chunk_size: int | None = None, left_chunks: int | None = None,
                   device: str | None = None) -> dict:
    """Greedy-CTC WER/CER of ``manifest``, overall, by voice (``speaker``) and by voice group (engine).
    ``device``: where to run the model (None: the model's device)."""
    from ...decoding import decode_manifest
    from ...scoring import error_rates

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
    from ...data.manifest import read_manifest_skipping

    return sum(float(r["duration"]) for r in read_manifest_skipping(path, resolve=False)) / 3600.0


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------
class ExperimentRunner:
    """Runs the experiments of one work directory ``out`` (see :func:`slimasr.recipes.reproduce.reproduce`);
    ``results_dir`` receives the report."""

    def __init__(self, teacher_path: Path, teacher_is_default: bool, data: Path, out: Path, results_dir: Path,
                 budget: Budget, device: str | None, progress: bool, echo: Callable[[str], None],
                 feature_cache: bool = True):
        from ...model import load_model

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
        self.results_dir = Path(results_dir)

    def prepare_features(self) -> None:
        """Compute the features of all of train and dev once (every run's subset reads them from there)."""
        if not self.feature_cache:
            return
        from ...data.dataset import FeatureCache
        from ...data.manifest import read_manifest_skipping

        for m in (self.train, self.dev):
            FeatureCache.open_or_build(read_manifest_skipping(m), self.teacher.frontend,
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
        from ...prune.metrics import LayerScores

        if self._scores is not None:
            return self._scores
        path = self.out / "teacher" / "scores.json"
        if path.is_file():
            self._scores = LayerScores.load(path)
            return self._scores
        import random

        import torch

        from ...data.dataset import ASRDataset, BucketBatchSampler, collate
        from ...data.manifest import read_manifest_skipping
        from ...prune.metrics import score_layers
        from ...tokenizer import Tokenizer

        self.echo(f"scoring the teacher's {self.n} layers on {self.budget.score_utts} dev utterances "
                  "(all metrics and the removal oracle)")
        rows = read_manifest_skipping(self.dev)
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
    def result_path(self, spec: ExperimentSpec) -> Path:
        return self.out / "results" / f"{spec.id}.json"

    def train_cfg(self, spec: ExperimentSpec):
        from ...train import TrainConfig

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

    def oneshot_model(self, spec: ExperimentSpec):
        from ...prune.metrics import LayerScores, oneshot_prune

        scores = self.teacher_scores()
        metrics = {k: v for k, v in scores.metrics.items() if k != "random"}     # seeded per run instead
        scores = LayerScores(scores.num_layers, metrics, scores.original_layers, scores.num_utterances,
                             scores.info)
        return oneshot_prune(self.teacher, scores, spec.metric, ratio=spec.ratio, seed=spec.seed)

    def run(self, spec: ExperimentSpec) -> dict:
        import torch

        from ...model import load_model
        from ...prune.distill import build_student, distill
        from ...prune.iterative import iterative_prune
        from ...train import latest_checkpoint, train_model

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
                with torch.random.fork_rng(devices=[]):     # the seed's initial weights; torch's own generator
                    torch.manual_seed(spec.seed)            # is left as it was
                    model = build_student(self.small_config(spec.layers), self.teacher)
                res = train_model(None, self.train, self.dev, run_dir, cfg, resume=resume, device=self.device,
                                  progress=self.progress, model=model, feature_cache=self.feature_cache)
            elif spec.kind == "distill":
                scratch = self.out / "runs" / ExperimentSpec("scratch", spec.seed, spec.layers).id / "model.pt"
                if not self.result_path(ExperimentSpec("scratch", spec.seed, spec.layers)).is_file():
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
