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

The recipe, by job:

* :mod:`.budget`   how much training every run gets (:class:`Budget`, :data:`BUDGETS`) and the cost estimate
* :mod:`.plan`     every run of a teacher, budget and seeds (:class:`ExperimentSpec`, :func:`plan_experiments`)
* :mod:`.runs`     one run: the teacher's scores and test result, training, evaluation, the work directory's files
* :mod:`.workers`  runs claimed from the work directory, in this process or in worker processes
* :mod:`.report`   ``reproduction.md``, ``reproduction.json`` and the figures
* this module      :func:`reproduce`, which ties them together (``slimasr reproduce``)
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .budget import (BUDGETS, DECODE_SECONDS_PER_AUDIO_HOUR_12L, SECONDS_PER_AUDIO_HOUR_12L, Budget, _device_kind,
                     _layer_scale, _measured_rate, _teacher_seconds, estimate_seconds)
from .plan import ExperimentSpec, plan_experiments
from .report import write_report
from .runs import ExperimentRunner, _load_results, evaluate_model, seed_work_dir
from .workers import _clear_claims, _spawn_workers, _work

__all__ = ["Budget", "BUDGETS", "ExperimentSpec", "plan_experiments", "reproduce", "evaluate_model",
           "estimate_seconds", "write_report", "seed_work_dir"]

log = logging.getLogger(__name__)


def reproduce(teacher: str | os.PathLike | None, data: str | os.PathLike, out: str | os.PathLike,
              results_dir: str | os.PathLike, seeds: Sequence[int] = (0, 1), budget: "Budget | str" = "small",
              epochs: int | None = None, max_runs: int | None = None,
              dry_run: bool = False, device: str | None = None, progress: bool = True,
              echo: Callable[[str], None] = log.info, feature_cache: bool = True, workers: int = 1,
              max_minutes: float | None = None, resume_from: str | os.PathLike | None = None) -> dict:
    """Run (or continue) the reproduction and write ``results_dir/reproduction.md`` and ``reproduction.json``.

    Args:
        teacher: the pre-trained model (None: the embedded default model).
        data: a directory with ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl`` (``speaker`` per row for the
            per-voice tables).
        out: the work directory (resumable: finished runs are skipped, interrupted ones resume).
        results_dir: where ``reproduction.md``, ``reproduction.json`` and the figures go.
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
    from ...model import default_model_path

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
    runner = ExperimentRunner(teacher_path, teacher is None, data, out, results_dir, budget, device, progress, echo,
                              feature_cache)
    settings = runner.check_settings()
    runner.settings = settings
    if resume_from is not None:
        n_seeded = seed_work_dir(resume_from, out, settings)
        echo(f"{n_seeded} finished runs taken from {resume_from}")
    plan = plan_experiments(runner.n, budget, list(seeds))
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
                                                  data=data, out=out, results_dir=results_dir, budget=budget,
                                                  device=device,
                                                  feature_cache=feature_cache, seeds=list(seeds)),
                                    max_runs, max_minutes, echo)
        for run_id, err in failed.items():
            echo(f"FAILED {run_id}: {err}")
    return write_report(out, results_dir, plan, settings, runner.teacher_is_default)
