"""Workers of the reproduction: each takes the next unclaimed run (claims are directories, created atomically);
several workers run in processes of their own."""
from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from .budget import _measured_rate, estimate_seconds
from .plan import ExperimentSpec, plan_experiments
from .report import write_report
from .runs import ExperimentRunner, _load_results

log = logging.getLogger(__name__)


def _claim_dir(out: Path, spec: ExperimentSpec) -> Path:
    return out / "claims" / spec.id


def _clear_claims(out: Path) -> None:
    """Claims of an earlier, interrupted call (no worker is running when a call starts)."""
    import shutil

    shutil.rmtree(out / "claims", ignore_errors=True)


def _claim(out: Path, spec: ExperimentSpec) -> bool:
    d = _claim_dir(out, spec)
    d.parent.mkdir(parents=True, exist_ok=True)
    try:
        d.mkdir()
    except FileExistsError:
        return False
    (d / "owner").write_text(f"{platform.node()} {os.getpid()}\n", encoding="utf-8")
    return True


def _work_order(plan: list[ExperimentSpec]) -> list[ExperimentSpec]:
    """Scratch models first (the longest runs, and distillation starts from them), then the plan's order."""
    return sorted(plan, key=lambda s: s.kind != "scratch")


def _work(runner: "ExperimentRunner", plan: list[ExperimentSpec], max_runs: int | None, deadline: float | None,
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
                scratch = ExperimentSpec("scratch", spec.seed, spec.layers)
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


def _worker_main(i: int, threads: int, kwargs: dict, max_runs: int | None, deadline_wall: float | None,
                 queue) -> None:
    """One worker process's entry point: its logging, its share of the CPU threads (``threads``, given by the
    parent), its own runner (and CUDA context)."""
    import torch

    logging.basicConfig(level=logging.WARNING, format=f"w{i} %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    tag = f"w{i} "

    def echo(msg: str) -> None:
        queue.put(msg)

    runner = ExperimentRunner(Path(kwargs["teacher"]), kwargs["teacher_is_default"], Path(kwargs["data"]),
                              Path(kwargs["out"]), Path(kwargs["results_dir"]), kwargs["budget"], kwargs["device"],
                              False, echo, kwargs["feature_cache"])
    runner.settings = runner.check_settings()
    plan = plan_experiments(runner.n, kwargs["budget"], kwargs["seeds"])
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
    threads = max(1, (os.cpu_count() or 1) // n)          # the CPU threads shared out between the workers
    procs = [ctx.Process(target=_worker_main, args=(i, threads, kwargs, max_runs, deadline_wall, queue),
                         daemon=False) for i in range(n)]
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
