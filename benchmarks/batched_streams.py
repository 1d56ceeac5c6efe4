"""Real-time streams with and without batched streams, on the same machine in one run.

Starts ``slimasr serve`` (the default model unless --model) once with ``--no-batched`` and once with
``--batched`` (otherwise the same options), and runs ``slimasr bench-server --find-max`` against each
(:func:`slimasr.serve.loadtest.find_max_streams`) with ``--max-latency`` as the real-time criterion (p95 partial
and final latency, no errors). ``--order`` may repeat the modes (``unbatched,batched,batched,unbatched``: the
load's drift then affects both alike); the ratio is that of the modes' medians. The machine's load average is
recorded before and after each sweep: on a shared machine the figures move with it, so compare the modes of one
run, never figures of different runs. ``--fast-streams N`` also measures throughput: N clients sending their
audio as fast as the server reads it (``bench-server --fast``), where chunks are always ready and batches full;
``--fixed-streams 64,128`` adds real-time runs at those N to every sweep: the CPU per stream-second of each mode
at the same load (``cpu_ratio_at_128``: unbatched's over batched's, the capacity ratio where CPU is the only
limit), far less at the mercy of other jobs than the largest real-time N. ``--skip-find-max`` measures only
these.

``--baseline SRC`` measures another version of slimasr in the same run: modes ``unbatched:baseline`` and
``batched:baseline`` in ``--order`` start the server with ``SRC`` (a checkout's ``src`` directory) first on
``PYTHONPATH``, so a change is measured before and after under the same load (``ratio_baseline`` compares the
baseline's modes, ``gain_*`` each mode after / before).

A mode may also name the server's batch size and batch wait: ``batched:bs16`` serves with ``--batch-size 16``
instead of ``--batch-size``, ``batched:bs32:w25`` also with ``--max-batch-wait-ms 25`` (``ratio_bs16``,
``ratio_bs32_w25``: the variant's median over the unbatched one's), so scheduler settings are compared in one run
(``--order unbatched,batched,batched:bs16,batched:bs16,batched,unbatched``).

Besides latency, each run records where the CPU went (``cpu_ms_per_stream_second``): the server's event loop
(its main thread) and workers (its other threads), from ``/proc``, and the load-test clients (this process),
per second of streamed audio, with the CPU seconds of all three per wall second (``cores_busy``: at the largest
real-time N a 2-core machine is at about 2) and the batched graph's chunks per call in that run. On a machine
where the clients share the server's cores they count against both modes alike.

Example::

    python benchmarks/batched_streams.py --data data/synth8/test_espeak.jsonl --duration 8 --fixed-streams 128 \\
        --max-latency 0.5 --out benchmarks/results/server/batched_streams.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_mode(spec: str, baseline: bool) -> tuple[bool, bool, int | None, float | None]:
    """``unbatched`` | ``batched``, then optionally ``:baseline``, ``:bsN`` and/or ``:wMS`` -> (batched, baseline,
    batch size or None for ``--batch-size``, batch wait in ms or None for ``--max-batch-wait-ms``). Raises
    ValueError naming the spec and what was expected."""
    base, *opts = spec.split(":")
    if base not in ("unbatched", "batched"):
        raise ValueError(f"mode {spec!r}: expected unbatched or batched, optionally followed by :baseline, :bsN, "
                         f":wMS")
    use_baseline, size, wait = False, None, None
    for o in opts:
        if o == "baseline" and baseline and not use_baseline:
            use_baseline = True
        elif o == "baseline":
            raise ValueError(f"mode {spec!r}: :baseline needs --baseline SRC (once)")
        elif o.startswith("bs") and o[2:].isdigit() and int(o[2:]) > 0 and size is None:
            size = int(o[2:])
        elif o.startswith("w") and o[1:].replace(".", "", 1).isdigit() and float(o[1:]) <= 1000 and wait is None:
            wait = float(o[1:])
        else:
            raise ValueError(f"mode {spec!r}: expected :baseline, :bsN (N a batch size > 0) or :wMS (a batch wait "
                             f"of 0-1000 ms), got :{o}")
    return base == "batched", use_baseline, size, wait


def _start_server(args, batched: bool, log_file: Path, src: str | None = None, batch_size: int | None = None,
                  wait_ms: float | None = None) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "slimasr.cli", "serve", "--port", str(port), "--max-streams", str(args.limit),
           "--batched" if batched else "--no-batched"]
    size = batch_size or args.batch_size
    wait_ms = args.max_batch_wait_ms if wait_ms is None else wait_ms
    if size is not None:                     # otherwise the server's own default (per mode)
        cmd += ["--batch-size", str(size)]
    if wait_ms is not None:
        cmd += ["--max-batch-wait-ms", str(wait_ms)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.model:
        cmd += ["--model", args.model]
    env = dict(os.environ)
    if src is not None:                      # another version of slimasr: its sources first on the path
        env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.Popen(cmd, stdout=log_file.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}): {log_file.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server not ready after 600 s: {log_file.read_text()[-2000:]}")


RUN_KEYS = ("streams", "real_time", "final_latency", "partial_latency", "errors", "server_rtf", "throughput_x_realtime",
            "cpu_ms_per_stream_second", "cores_busy", "chunks_per_batched_call")


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(main thread, other threads) CPU seconds of process ``pid`` so far, from ``/proc/PID/task/*/stat`` (utime +
    stime); None where ``/proc`` is not available. The server's main thread runs its event loop (the websocket
    work); the others are its decode workers (and onnxruntime's threads, if any)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    main = other = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:                      # a thread that ended meanwhile
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        if t == str(pid):
            main += cpu
        else:
            other += cpu
    return main, other


class _CpuMeter:
    """CPU time per stream-second of each load-test run: the server's event loop and workers (``/proc``), the
    load-test clients (this process's ``getrusage``: they run here, on the same cores), and the batched graph's
    chunks per call, as deltas between successive calls of :meth:`mark`."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port
        self._last = self._sample()

    def _sample(self) -> tuple:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF)
        return _cpu_seconds(self.pid), r.ru_utime + r.ru_stime, _batched_calls(self.port), time.monotonic()

    def mark(self, report: dict) -> None:
        """Add ``cpu_ms_per_stream_second`` (event_loop, workers, clients, total), ``cores_busy`` (the three's
        CPU seconds per wall second since the last mark) and ``chunks_per_batched_call`` to ``report``."""
        now = self._sample()
        (srv0, cli0, (calls0, chunks0), t0), (srv1, cli1, (calls1, chunks1), t1) = self._last, now
        self._last = now
        audio = report.get("audio_seconds") or 0
        calls = calls1 - calls0
        report["chunks_per_batched_call"] = round((chunks1 - chunks0) / calls, 2) if calls else None
        if srv0 is None or srv1 is None or audio <= 0:
            return
        parts = {"event_loop": srv1[0] - srv0[0], "workers": srv1[1] - srv0[1], "clients": cli1 - cli0}
        parts["total"] = sum(parts.values())
        report["cpu_ms_per_stream_second"] = {k: round(v * 1000 / audio, 2) for k, v in parts.items()}
        report["cores_busy"] = round(parts["total"] / (t1 - t0), 2) if t1 > t0 else None


def _batched_calls(port: int) -> tuple[float, float]:
    """(calls, chunks) of the server's batched graph so far, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("slimasr_batched_calls ", "slimasr_batched_chunks "))}
    return values.get("slimasr_batched_calls", 0.0), values.get("slimasr_batched_chunks", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="manifest (JSON lines) of the audio the clients stream")
    ap.add_argument("--model", default=None, help="streaming export with model.batched.onnx [default model]")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of audio per client")
    ap.add_argument("--ramp", type=float, default=2.0, help="clients start spread over this many seconds")
    ap.add_argument("--max-latency", type=float, default=0.5, help="real time: p95 partial and final latency")
    ap.add_argument("--start", type=int, default=8, help="first N of the sweep")
    ap.add_argument("--limit", type=int, default=256, help="largest N tried")
    ap.add_argument("--workers", type=int, default=None, help="server --workers [its default]")
    ap.add_argument("--batch-size", type=int, default=None, help="server --batch-size [the server's default]")
    ap.add_argument("--max-batch-wait-ms", type=float, default=None,
                    help="server --max-batch-wait-ms [the server's default]")
    ap.add_argument("--order", default="unbatched,batched,batched,unbatched",
                    help="modes (unbatched | batched, :bsN for another --batch-size, with --baseline also "
                         ":baseline), in the order they run; repeat them to average out drift")
    ap.add_argument("--baseline", default=None, metavar="SRC",
                    help="another slimasr's src directory, served in the :baseline modes (before/after in one run)")
    ap.add_argument("--fast-streams", type=int, default=0, help="also a throughput run with N fast clients")
    ap.add_argument("--fixed-streams", default="",
                    help="also real-time runs at these N (comma-separated) in every sweep, for the CPU per "
                         "stream-second of each mode at the same load")
    ap.add_argument("--skip-find-max", action="store_true", help="only the throughput and --fixed-streams runs")
    ap.add_argument("--out", required=True, help="JSON report (a .md summary is written beside it)")
    args = ap.parse_args()
    modes = args.order.split(",")
    try:
        fixed = [int(n) for n in args.fixed_streams.split(",") if n.strip()]
        if any(n < 1 for n in fixed):
            raise ValueError
    except ValueError:
        raise SystemExit(f"--fixed-streams {args.fixed_streams}: expected stream counts >= 1, e.g. 64,128") from None
    try:
        parsed = {m: parse_mode(m, bool(args.baseline)) for m in modes}
    except ValueError as e:
        raise SystemExit(f"--order {args.order}: {e}") from None
    if args.baseline and not (Path(args.baseline) / "slimasr" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: expected a src directory holding slimasr/__init__.py")

    import dataclasses

    from slimasr.serve.loadtest import BenchConfig, find_max_streams, format_report, load_audio_rows, run_bench

    try:
        audio = load_audio_rows(args.data)
    except (OSError, ValueError) as e:       # a missing or unreadable manifest: one line, no traceback
        raise SystemExit(f"--data {args.data}: {e}") from None
    cfg = BenchConfig(streams=args.start, duration=args.duration, ramp=args.ramp, max_latency=args.max_latency)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "machine": {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)}, "sweeps": []}
    for i, mode in enumerate(modes):
        batched, use_baseline, size, wait = parsed[mode]
        src = str(Path(args.baseline).resolve()) if use_baseline else None
        proc, port = _start_server(args, batched, out.with_suffix(f".{i}-{mode.replace(':', '-')}.log"), src, size,
                                   wait)
        try:
            before = _uptime()
            t0 = time.time()
            meter = _CpuMeter(proc.pid, port)
            fast = None
            if args.fast_streams:
                fast = run_bench(f"ws://127.0.0.1:{port}", audio,
                                 dataclasses.replace(cfg, streams=args.fast_streams, realtime=False))
                meter.mark(fast)
                print(mode, "fast", format_report(fast), flush=True)
            at_n = []
            for n in fixed:
                at_n.append(run_bench(f"ws://127.0.0.1:{port}", audio, dataclasses.replace(cfg, streams=n)))
                meter.mark(at_n[-1])
                print(mode, "fixed", format_report(at_n[-1]), flush=True)
            sweep = {"max_streams": None, "stopped_by": None, "runs": []} if args.skip_find_max else \
                find_max_streams(f"ws://127.0.0.1:{port}", audio, cfg, limit=args.limit,
                                 progress=lambda r: (meter.mark(r), print(mode, format_report(r), flush=True)))
            after = _uptime()
            calls, chunks = _batched_calls(port)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        best = next((r for r in sweep["runs"] if r["streams"] == sweep["max_streams"]), None)
        report["sweeps"].append({
            "mode": mode, "batch_size": size or args.batch_size,           # None: the server's default
            "max_batch_wait_ms": args.max_batch_wait_ms if wait is None else wait, "max_streams": sweep["max_streams"],
            "stopped_by": sweep["stopped_by"],
            "final_latency_p95": best["final_latency"]["p95"] if best else None,
            "partial_latency_p95": best["partial_latency"]["p95"] if best else None,
            "batched_calls": calls, "chunks_per_batched_call": round(chunks / calls, 2) if calls else None,
            "fast_throughput_x_realtime": fast["throughput_x_realtime"] if fast else None,
            "fast_server_rtf": fast["server_rtf"] if fast else None,
            "uptime_before": before, "uptime_after": after, "sweep_seconds": round(time.time() - t0, 1),
            "cpu_ms_per_stream_second_at_max": best.get("cpu_ms_per_stream_second") if best else None,
            "cores_busy_at_max": best.get("cores_busy") if best else None,
            "chunks_per_batched_call_at_max": best.get("chunks_per_batched_call") if best else None,
            "fast_cpu_ms_per_stream_second": fast.get("cpu_ms_per_stream_second") if fast else None,
            "runs": [{k: r.get(k) for k in RUN_KEYS} for r in sweep["runs"]],
            "fixed_runs": [{k: r.get(k) for k in RUN_KEYS} for r in at_n]})
        print(f"{mode}: {sweep['max_streams']} real-time streams ({sweep['stopped_by']}); load {before} -> "
              f"{after}", flush=True)
    import statistics

    report["modes"] = {}
    for m in dict.fromkeys(modes):
        mine = [w for w in report["sweeps"] if w["mode"] == m]
        r = report["modes"][m] = {}
        for key in ("max_streams", "fast_throughput_x_realtime"):
            values = [w[key] for w in mine if w[key] is not None]
            if values:
                r[key] = values
                r[f"{key}_median"] = round(statistics.median(values), 3)
        for n in fixed:
            totals = [f["cpu_ms_per_stream_second"]["total"] for w in mine for f in w["fixed_runs"]
                      if f["streams"] == n and f.get("cpu_ms_per_stream_second")]
            if totals:
                r[f"cpu_total_at_{n}"] = totals
                r[f"cpu_total_at_{n}_median"] = round(statistics.median(totals), 2)
    pairs = [("", "unbatched", "batched")]
    if args.baseline:
        pairs += [("_baseline", "unbatched:baseline", "batched:baseline"), ("gain_unbatched", "unbatched:baseline",
                  "unbatched"), ("gain_batched", "batched:baseline", "batched")]
    # batched variants (:bsN, :wMS) against the plain unbatched mode: ratio_bs16, ratio_bs32_w25, ...
    variants = {m: "_" + m.split(":", 1)[1].replace(":", "_").replace(".", "_") for m in dict.fromkeys(modes)
                if parsed[m][0] and not parsed[m][1] and m != "batched"}
    pairs += [(suffix, "unbatched", m) for m, suffix in variants.items()]
    cpu_named: list[tuple[str, str]] = []
    for suffix, m0, m1 in pairs:
        for key, name in (("max_streams", "ratio"), ("fast_throughput_x_realtime", "fast_ratio")):
            a, b = (report["modes"].get(m, {}).get(f"{key}_median") for m in (m0, m1))
            if a and b:
                label = f"{name}{suffix}" if not suffix.startswith("gain") else f"{suffix}_{name}"
                report[label] = round(b / a, 3)
        for n in fixed:                     # CPU per stream-second saved: unbatched's over the mode's
            a, b = (report["modes"].get(m, {}).get(f"cpu_total_at_{n}_median") for m in (m0, m1))
            if a and b and not suffix.startswith("gain"):
                report[f"cpu_ratio{suffix}_at_{n}"] = round(a / b, 3)
                cpu_named.append((f"cpu_ratio{suffix}_at_{n}", f"CPU per stream-second at N={n}, {m0} / {m1} (what "
                                  f"a stream costs less: the capacity ratio where CPU is the only limit)"))
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    ms = (lambda v: f"{v * 1000:.0f}" if v is not None else "n/a")
    load = (lambda u: u.split("load average:")[-1].strip())
    lines = ["# Batched streams: real-time streams with and without batching (one run)\n",
             f"`{report['command']}`\n",
             "| sweep | mode | real-time streams | p95 final (ms) | p95 partial (ms) | chunks per batched call | "
             f"server RTF at N={args.start} | fast x real time (N={args.fast_streams}) | load before -> after |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for i, w in enumerate(report["sweeps"]):
        lines.append(f"| {i + 1} | {w['mode']} | {w['max_streams']} | {ms(w['final_latency_p95'])} | "
                     f"{ms(w['partial_latency_p95'])} | {w['chunks_per_batched_call'] or '-'} | "
                     f"{next((r['server_rtf'] for r in w['runs'] if r['streams'] == args.start), None)} | "
                     f"{w['fast_throughput_x_realtime']} | "
                     f"{load(w['uptime_before'])} -> {load(w['uptime_after'])} |")
    lines.append("")
    for k, v in report["modes"].items():
        for key, what in (("max_streams", "real-time streams"), ("fast_throughput_x_realtime", "x real time fast")):
            if key in v:
                lines.append(f"{k}: median {v[key + '_median']} {what} ({', '.join(map(str, v[key]))})")
    if not args.skip_find_max:
        lines += ["", "CPU per second of a real-time stream at each sweep's largest real-time N (ms; the load-test "
                  "clients run on the same cores), the CPU seconds of all three per wall second (below about 1.8 "
                  "on 2 cores: other jobs took the rest), and the batched graph's chunks per call in that run:", "",
                  "| sweep | mode | N | server event loop | server workers | clients | total | cores busy | "
                  "chunks per call |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, w in enumerate([] if args.skip_find_max else report["sweeps"]):
        c = w["cpu_ms_per_stream_second_at_max"] or {}
        lines.append(f"| {i + 1} | {w['mode']} | {w['max_streams']} | {c.get('event_loop', 'n/a')} | "
                     f"{c.get('workers', 'n/a')} | {c.get('clients', 'n/a')} | {c.get('total', 'n/a')} | "
                     f"{w['cores_busy_at_max'] or 'n/a'} | {w['chunks_per_batched_call_at_max'] or '-'} |")
    if fixed:
        lines += ["", "CPU per second of a real-time stream at the same N in every sweep (ms; --fixed-streams):", "",
                  "| sweep | mode | N | real time | p95 final (ms) | server event loop | server workers | clients | "
                  "total | cores busy | chunks per call |", "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for i, w in enumerate(report["sweeps"]):
            for f in w["fixed_runs"]:
                c = f.get("cpu_ms_per_stream_second") or {}
                lines.append(f"| {i + 1} | {w['mode']} | {f['streams']} | {'yes' if f['real_time'] else 'no'} | "
                             f"{ms(f['final_latency']['p95'])} | {c.get('event_loop', 'n/a')} | "
                             f"{c.get('workers', 'n/a')} | {c.get('clients', 'n/a')} | {c.get('total', 'n/a')} | "
                             f"{f.get('cores_busy') or 'n/a'} | {f.get('chunks_per_batched_call') or '-'} |")
        lines.append("")
        for k, v in report["modes"].items():
            for n in fixed:
                if f"cpu_total_at_{n}" in v:
                    lines.append(f"{k}: median {v[f'cpu_total_at_{n}_median']} ms CPU per stream-second at N={n} "
                                 f"({', '.join(map(str, v[f'cpu_total_at_{n}']))})")
    lines.append(f"\nserver RTF: the server's decoding compute (its workers' time) per second of audio, from its "
                 f"/metrics, with N={args.start} clients: the same offered load in every sweep.")
    named = (("ratio", "batched / unbatched, real-time streams"),
             ("fast_ratio", "batched / unbatched, fast throughput"),
             ("ratio_baseline", "baseline: batched / unbatched, real-time streams"),
             ("fast_ratio_baseline", "baseline: batched / unbatched, fast throughput"),
             ("gain_unbatched_ratio", "unbatched after / before (baseline), real-time streams"),
             ("gain_batched_ratio", "batched after / before (baseline), real-time streams"),
             ("gain_unbatched_fast_ratio", "unbatched after / before (baseline), fast throughput"),
             ("gain_batched_fast_ratio", "batched after / before (baseline), fast throughput"))
    named += tuple((f"{k}{suffix}", f"{m} / unbatched, {w}") for m, suffix in variants.items()
                   for k, w in (("ratio", "real-time streams"), ("fast_ratio", "fast throughput")))
    named += tuple(cpu_named)
    for name, what in named:
        if name in report:
            lines.append(f"\n{what} (medians): {report[name]}x")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
