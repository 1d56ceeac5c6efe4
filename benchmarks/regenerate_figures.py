"""Regenerate every model-dependent figure the README cites, for one model, with the current code.

Every WER in these figures is :func:`slimasr.scoring.error_rates` (references and hypotheses normalised alike,
empty references counted, the unknown token one error). Run it again whenever the model changes (``--model``: a
replacement for the shipped default model); each part writes the result files the README cites:

* ``layer_scores``: ``slimasr prune score --metric all`` on the first ``--score-batches`` batches of 8 dev
  utterances (every metric, the oracle's dev loss and dev WER, Kendall tau with the oracle)
  -> ``OUT/layer_scores/default_dev96.json`` and ``.png``;
* ``bench``: ``benchmarks/run_all.py`` (torch / onnx / int8 / sherpa-onnx, offline and chunked 16/4, beam + LM,
  the 20% and 40% one-shot correlation-pruned models without fine-tuning) -> ``OUT/bench.json``, ``.md``,
  ``bench_rtf_wer.png``;
* ``sherpa``: ``benchmarks/sherpa_agreement.py`` (transcripts identical to sherpa-onnx's; no WER)
  -> ``OUT/sherpa_agreement.json``, ``.md``;
* ``bench_vs_sherpa``: ``slimasr bench`` of our runtime against sherpa-onnx's, fp32 and int8, chunked 16/4, both
  thread policies, ``--vs-sherpa-rounds`` interleaved rounds on the first ``--limit`` test utterances
  -> ``OUT/bench_vs_sherpa.json``, ``.md``;
* ``chunk_vs_sherpa``: ``benchmarks/chunk_vs_sherpa.py`` (the decoding step alone, both runtimes in one process,
  ``--chunk-rounds`` rounds of ``--chunk-limit`` utterances) -> ``OUT/chunk_vs_sherpa.json``, ``.md``;
* ``default_eval``: ``benchmarks/default_model_eval.py`` (WER per held-out voice and engine, offline and chunked;
  real recordings with ``--real``) -> ``OUT/default_model/eval_NAME.json``, ``.md`` (``--name``, default
  ``cpu_finetune``: the shipped model's file);
* ``demo``: ``slimasr demo`` (what ``make demo`` prints: offline, chunked, pruned and ONNX streaming WER on the
  demo's own held-out set; its synthesised data is kept in ``--work-dir/demo`` and reused)
  -> ``OUT/demo.json``.

The speed parts (``bench``, ``bench_vs_sherpa``, ``chunk_vs_sherpa``) are only meaningful on an otherwise idle
machine. Each part's command, model hash, wall time and load average (start and end) are appended to
``OUT/regenerate.json``; then ``OUT/figures_summary.md`` is rewritten from the result files in ``OUT``: the
headline figures of every part in the README's layout, each with the file it came from and the model it measured
(``--summary-only`` rewrites just that). Work files (exports, pruned models, the LM) go to
``--work-dir/MODEL_SHA256[:12]``, so a replaced model never reuses its predecessor's.

Example (the corpus: ``slimasr data synth --out data/synth8 --hours 8 --seed 0 --splits dev,test
--piper-fraction 0``, about 1.5 minutes; its test split is the same audio as ``data/eval8``'s; all parts about 12
minutes on 2 idle cores)::

    python benchmarks/regenerate_figures.py --model exp/voices/model.pt --data-dir data/synth8 \\
        --real data/real --lm-text data/synth3/lm_text.txt
    python benchmarks/regenerate_figures.py --data-dir data/eval8 --parts bench_vs_sherpa,chunk_vs_sherpa
    python benchmarks/regenerate_figures.py --summary-only
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PARTS = ("layer_scores", "bench", "sherpa", "bench_vs_sherpa", "chunk_vs_sherpa", "default_eval", "demo")
NEEDS = {"layer_scores": ["dev.jsonl"], "bench": ["dev.jsonl", "test.jsonl", "lm_text.txt"],
         "sherpa": ["test.jsonl"], "bench_vs_sherpa": ["test.jsonl"], "chunk_vs_sherpa": ["test.jsonl"],
         "default_eval": ["test_espeak.jsonl"], "demo": []}
HERE = Path(__file__).resolve().parent


def _model_file(model: str | None) -> Path:
    from slimasr.model.asr import default_model_path

    path = Path(model) if model else default_model_path()
    if not path.is_file():
        raise SystemExit(f"--model {path}: no such model file; expected a slimasr .pt model")
    from slimasr.model.asr import load_checkpoint_file

    try:
        load_checkpoint_file(path)
    except ValueError as e:
        raise SystemExit(f"--model {e}") from None
    return path


def _commands(args, model: str | None, work: Path) -> dict[str, list[str]]:
    """Each part's command line (run from the repository root)."""
    py, out, data = sys.executable, args.out, args.data_dir
    with_model = ["--model", model] if model else []
    return {
        "layer_scores": [py, "-m", "slimasr.cli", "prune", "score", *with_model, "--data", str(data / "dev.jsonl"),
                         "--metric", "all", "--max-batches", str(args.score_batches),
                         "--out", str(out / "layer_scores" / "default_dev96.json"),
                         "--plot", str(out / "layer_scores" / "default_dev96.png")],
        "bench": [py, str(HERE / "run_all.py"), *with_model, "--data-dir", str(data), "--limit", str(args.limit),
                  "--rounds", str(args.rounds), "--threads", str(args.threads), "--work-dir", str(work / "bench"),
                  "--out", str(out)],
        "sherpa": [py, str(HERE / "sherpa_agreement.py"), *with_model, "--data", str(data / "test.jsonl"),
                   "--out", str(out)],
        "bench_vs_sherpa": [py, "-m", "slimasr.cli", "bench", "--model", f"full={model or 'default'}",
                            "--data", str(data / "test.jsonl"), "--backend", "onnx", "--backend", "onnx-int8",
                            "--backend", "sherpa-onnx", "--backend", "sherpa-onnx-int8", "--mode", "chunked",
                            "--spin-threads", "both", "--threads", str(args.threads),
                            "--rounds", str(args.vs_sherpa_rounds), "--limit", str(args.limit),
                            "--work-dir", str(work / "bench_vs_sherpa"), "--json", str(out / "bench_vs_sherpa.json"),
                            "--markdown", str(out / "bench_vs_sherpa.md")],
        "chunk_vs_sherpa": [py, str(HERE / "chunk_vs_sherpa.py"), *with_model, "--data", str(data / "test.jsonl"),
                            "--limit", str(args.chunk_limit), "--rounds", str(args.chunk_rounds),
                            "--threads", str(args.threads), "--out", str(out)],
        "default_eval": [py, str(HERE / "default_model_eval.py"), *with_model, "--test-dir", str(data),
                         "--name", args.name, "--out", str(out / "default_model"), "--threads", str(args.threads),
                         *(["--real", str(args.real)] if args.real else []),
                         *(["--lm-text", str(args.lm_text)] if args.lm_text else []),
                         *[a for m in args.train for a in ("--train", str(m))]],
        "demo": [py, "-m", "slimasr.cli", "demo", *with_model, "--work", str(args.work_dir / "demo"),
                 "--threads", str(args.threads)],
    }


def _relative(arg: str) -> str:
    """A command-line argument as shown in the log: paths under the working directory relative to it."""
    p = Path(arg)
    if p.is_absolute() and p.is_relative_to(Path.cwd()):
        return str(p.relative_to(Path.cwd()))
    return arg


def _after(part: str, args) -> None:
    """What a part leaves outside --out and the README cites: copied in."""
    if part == "demo":
        shutil.copyfile(args.work_dir / "demo" / "demo.json", args.out / "demo.json")


# ------------------------------------------------------------------------------------------------- summary
def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _rel(offline: float, chunked: float) -> str:
    """Chunked WER relative to offline, as the README's per-voice table writes it."""
    return f"{100 * (chunked / offline - 1):+.0f}%" if offline else "-"


def _layer_scores(out: Path) -> tuple[list[str], list[str]]:
    path = out / "layer_scores" / "default_dev96.json"
    d = json.loads(path.read_text())
    labels = [("correlation", "correlation (cosine, default)"), ("correlation_raw", "correlation_raw (eq. 2)"),
              ("energy", "energy (eq. 3)"), ("gradient", "gradient (eq. 4, k=1)"),
              ("hessian", "hessian (eq. 4, k=2)"), ("taylor", "taylor (ours)"), ("oracle", "oracle (dev loss)"),
              ("oracle_wer", "oracle (dev WER)"), ("last", "last layers"), ("random", "random")]
    tau, info = d.get("oracle_agreement", {}), d.get("info", {})
    lines = [f"{d['num_utterances']} dev utterances; the full model: dev loss {info.get('oracle_full_loss', 0):.2f}, "
             f"dev WER {_pct(info.get('oracle_full_wer'))}.", "",
             "| metric | prune order | τ vs oracle |", "|---|---|---:|"]
    for key, label in labels:
        m = d["metrics"].get(key)
        if m is None:
            continue
        order = " ".join(map(str, m["prune_order"]))
        t = "—" if key == "oracle" else f"{tau[key]:+.2f}" if key in tau else "-"
        lines.append(f"| {label} | {order} | {t} |")
    return [str(path)], lines


def _bench_rows(result: dict) -> list[str]:
    """The runs of a ``slimasr bench`` result as rows of the README's benchmark table."""
    from slimasr.bench.report import _backend_label, _f, _ok, _pair   # the bench report's own cell formats

    rows = ["| model | backend | mode | layers | params (M) | file (MB) | WER % | RTF | encoder RTF | latency p50 / p95 "
            "(ms) | final p50 / p95 (ms) | peak RSS (MB) |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in filter(_ok, result["runs"]):
        chunked = r["mode"] == "chunked"
        backend = _backend_label(r).replace("(spin)", "(spinning)")
        if r["decoder"] == "beam":
            backend += f", beam {r.get('beam_size', 100)}" + (" + 4-gram LM" if r.get("lm") else "")
        lat = (_pair(r.get("chunk_p50_ms"), r.get("chunk_p95_ms"), ".1f") + " per chunk") if chunked else \
            _pair(r.get("latency_p50_ms"), r.get("latency_p95_ms"))
        rows.append(f"| {r['model']} | {backend} | {r['mode']} | {r['layers']} | {r['params'] / 1e6:.2f} | "
                    f"{r['model_file_mb']:.1f} | {_f(r['wer'], '.2f', 100)} | {_f(r['rtf'], '.4f')} | "
                    f"{_f(r.get('encoder_rtf'))} | {lat} | "
                    f"{_pair(r.get('final_latency_p50_ms'), r.get('final_latency_p95_ms'))} | {r['peak_rss_mb']:.0f} |")
    return rows


def _bench_header(result: dict) -> list[str]:
    m, s = result["machine"], result.get("settings", {})
    loads = sorted(x for r in result["runs"] for x in r.get("load_average_1min") or [])
    load = f"{loads[0]:.1f}-{loads[-1]:.1f} during the runs" if loads else "not recorded per run"
    wall = f"; wall {s['wall_s']:.0f} s" if s.get("wall_s") else ""
    return [f"Data {s.get('data')}, {s.get('limit')} utterances, threads {s.get('threads')}, {s.get('rounds')} "
            f"interleaved rounds, chunk {s.get('chunk_size')} / left {s.get('left_chunks')}; 1-minute load average "
            f"{load} (machine: start {m.get('load_average', ['?'])[0]}, end {m.get('load_average_end', ['?'])[0]})"
            f"{wall}."]


def _goals(result: dict, only: str | None = None) -> list[str]:
    from slimasr.bench.report import evaluate_goals, goals_table   # the bench report's own goal table

    return goals_table([g for g in evaluate_goals(result) if only is None or only in g["goal"]])


def _bench(out: Path) -> tuple[list[str], list[str]]:
    path = out / "bench.json"
    result = json.loads(path.read_text())
    return [str(path)], _bench_header(result) + [""] + _bench_rows(result) + ["", "Speed goals:", ""] + _goals(result)


def _bench_vs_sherpa(out: Path) -> tuple[list[str], list[str]]:
    path = out / "bench_vs_sherpa.json"
    result = json.loads(path.read_text())
    return [str(path)], _bench_header(result) + [""] + _bench_rows(result) + [""] + _goals(result, "vs sherpa-onnx")


def _chunk_vs_sherpa(out: Path) -> tuple[list[str], list[str]]:
    path = out / "chunk_vs_sherpa.json"
    d = json.loads(path.read_text())
    rounds = d["rounds"]
    ms = {k: statistics.median(r[k] for r in rounds) for k in ("slimasr_ms", "slimasr_spin_ms", "sherpa_ms")}
    spread = {k: (min(r[k] / r["sherpa_ms"] for r in rounds), max(r[k] / r["sherpa_ms"] for r in rounds))
              for k in ("slimasr_ms", "slimasr_spin_ms")}
    start = f"{d['load_average_start'][0]:.2f} at the start, " if d.get("load_average_start") else ""
    return [str(path)], [
        f"{d['utterances']} utterances of {d['data']}, {d['threads']} threads, chunk {d['chunk_size']} / left "
        f"{d['left_chunks']}, {len(rounds)} rounds; load average {start}{d['load_average'][0]:.2f} at the end.", "",
        f"* median ratio, ours (default policy: threads sleep) / sherpa-onnx: **{d['ratio_median']:.2f}x** (rounds "
        f"{spread['slimasr_ms'][0]:.2f}-{spread['slimasr_ms'][1]:.2f}x)",
        f"* median ratio, ours spinning / sherpa-onnx: **{d['ratio_spin_median']:.2f}x** (rounds "
        f"{spread['slimasr_spin_ms'][0]:.2f}-{spread['slimasr_spin_ms'][1]:.2f}x)",
        f"* median ms per chunk: ours {ms['slimasr_ms']:.2f}, ours spinning {ms['slimasr_spin_ms']:.2f}, "
        f"sherpa-onnx {ms['sherpa_ms']:.2f}"]


def _sherpa(out: Path) -> tuple[list[str], list[str]]:
    path = out / "sherpa_agreement.json"
    d = json.loads(path.read_text())
    n, same, tok = d["utterances"], d["identical"], d["identical_tokens"]
    return [str(path)], [
        f"{n} utterances of {d['data']}, chunk {d['chunk_size']} / left {d['left_chunks']}, sherpa-onnx "
        f"{d.get('sherpa_onnx_version')}, {d.get('seconds', 0):.0f} s.", "",
        f"* streaming: identical tokens **{_pct(tok['streaming'])}**, identical transcripts "
        f"**{_pct(same['streaming'])}** ({round(same['streaming'] * n)} of {n})",
        f"* offline: identical {_pct(same['offline'])} ({_pct(same['offline_noise_floor'])} with the -100 dB noise "
        f"floor)",
        f"* each runtime against itself, offline: sherpa-onnx {_pct(d['self_agreement']['sherpa_offline'])}, slimasr "
        f"{_pct(d['self_agreement']['slimasr_offline'])}"]


def _default_eval(out: Path, name: str) -> tuple[list[str], list[str]]:
    path = out / "default_model" / f"eval_{name}.json"
    d = json.loads(path.read_text())
    labels = {"espeak-ng held-out voices": "held-out espeak-ng voices", "flite slt (held-out voice)": "flite `slt`",
              "Festival (held-out engine)": "Festival (held-out engine)",
              "Piper joe, length_scale 1.3 (held-out setting)": "Piper joe, `length_scale` 1.3 (held-out setting)"}
    lines = ["| test set (never in training) | utts | offline | chunked 16/4 |", "|---|---:|---:|---:|"]
    for r in d["rows"]:
        if ": " in r["set"]:                                # one voice of a set: the README gives the sets
            continue
        label = labels.get(r["set"], r["set"])
        if r["set"].startswith("real recordings"):
            label = "real recordings, " + r["decoder"].split(" (")[0]      # without the LM weight
        elif r["decoder"] != "greedy":                     # every set has a beam search + LM row too
            label += ", " + r["decoder"].split(" (")[0]
        lines.append(f"| {label} | {r['utterances']} | {_pct(r['wer_offline'])} | {_pct(r['wer_chunked'])} "
                     f"({_rel(r['wer_offline'], r['wer_chunked'])}) |")
    return [str(path)], [f"Model: {d.get('model')}."] + [""] + lines


def _demo(out: Path) -> tuple[list[str], list[str]]:
    path = out / "demo.json"
    d = json.loads(path.read_text())
    lines = [f"{d['test_utterances']} held-out test utterances (the demo's own set), {d['seconds']:.0f} s.", "",
             "| model | mode | layers | WER | per engine | RTF |", "|---|---|---:|---:|---|---:|"]
    for r in d["rows"]:
        groups = ", ".join(f"{k} {_pct(v)}" for k, v in r.items() if k.startswith("wer_")).replace("wer_", "")
        extra = (f"; chunk p95 {r['chunk_ms_p95']:.1f} ms, final latency p95 {r['final_latency_ms_p95']:.0f} ms"
                 if "chunk_ms_p95" in r else "")
        lines.append(f"| {r['model']} | {r['mode']} | {r['layers']} | {_pct(r['wer'], 2)} | {groups or '-'}{extra} | "
                     f"{r['rtf']:.4f} |")
    return [str(path)], lines


def _recorded_sha(path: str) -> str | None:
    """The model sha256 a result file records itself (a bench result: its reference model's), if any."""
    d = json.loads(Path(path).read_text())
    if d.get("model_sha256"):
        return d["model_sha256"]
    runs = [r for r in d.get("runs", []) if r.get("model_sha256")]
    return next((r["model_sha256"] for r in runs if r.get("model") == "full"), runs[0]["model_sha256"] if runs else None)


def write_summary(out: Path, name: str, model_sha: str | None) -> Path:
    """Write ``OUT/figures_summary.md``: every part's headline figures from its result files in ``out``, with the
    run that made them (``regenerate.json``) and whether that run measured the model of sha256 ``model_sha``."""
    log_file = out / "regenerate.json"
    log = {r["part"]: r for r in json.loads(log_file.read_text())} if log_file.is_file() else {}
    makers = {"layer_scores": _layer_scores, "bench": _bench, "sherpa": _sherpa, "bench_vs_sherpa": _bench_vs_sherpa,
              "chunk_vs_sherpa": _chunk_vs_sherpa, "default_eval": lambda o: _default_eval(o, name), "demo": _demo}
    lines = ["# Model-dependent figures, per part", "",
             "Written by `python benchmarks/regenerate_figures.py` from the result files next to it; each part says "
             "which file its figures come from, the command that made it and the model it measured.",
             f"Model of this summary: sha256 `{model_sha}`." if model_sha else "", ""]
    for part in PARTS:
        lines.append(f"## {part}")
        lines.append("")
        try:
            files, body = makers[part](out)
        except FileNotFoundError as e:
            lines += [f"No result file ({Path(e.filename).name}): run `--parts {part}`.", ""]
            continue
        except (KeyError, TypeError, ValueError) as e:
            lines += [f"Result file not readable as expected ({type(e).__name__}: {e}).", ""]
            continue
        rec, own = log.get(part), _recorded_sha(files[0])
        shown = ", ".join(f"`{_relative(f)}`" for f in files)
        made = (f"made by `{rec['command']}` on {rec['started_utc']} UTC, {rec['wall_s']:.0f} s, load average "
                f"{rec['load_average_start'][0]} -> {rec['load_average_end'][0]}" if rec else
                "no run of this part in `regenerate.json` (made by another command)")
        measured = own or (rec or {}).get("model_sha256")
        if measured is None:
            which = "model not recorded"
        else:
            which = f"model sha256 `{measured[:12]}…`" + ("" if model_sha is None else " (this summary's model)"
                                                          if measured == model_sha else " (**another model: stale**)")
        lines.append(f"From {shown}; {made}; {which}.")
        lines += ["", *body, ""]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "figures_summary.md"
    path.write_text("\n".join(lines))
    return path


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model .pt (default: the embedded default model)")
    ap.add_argument("--data-dir", type=Path, default=Path("data/synth8"),
                    help="a `slimasr data synth` corpus with dev.jsonl, test.jsonl, test_*.jsonl and lm_text.txt "
                         "(parts that read only the test split: data/eval8 is the same audio)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    ap.add_argument("--score-batches", type=int, default=12, help="layer_scores: dev batches of 8 utterances")
    ap.add_argument("--limit", type=int, default=150,
                    help="bench, bench_vs_sherpa: the first N test utterances by audio_filepath")
    ap.add_argument("--rounds", type=int, default=5, help="bench: interleaved rounds of fresh processes")
    ap.add_argument("--vs-sherpa-rounds", type=int, default=6,
                    help="bench_vs_sherpa: interleaved rounds of fresh processes")
    ap.add_argument("--chunk-limit", type=int, default=20, help="chunk_vs_sherpa: the first N test utterances")
    ap.add_argument("--chunk-rounds", type=int, default=7, help="chunk_vs_sherpa: rounds, runtimes alternating")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real", type=Path, default=None, help="default_eval: a `slimasr data real-test` directory")
    ap.add_argument("--lm-text", type=Path, default=None, help="default_eval: LM text for the beam + LM rows")
    ap.add_argument("--train", type=Path, action="append", default=[],
                    help="default_eval: a training manifest, for the leak check and the OOV share (repeat per stage)")
    ap.add_argument("--name", default="cpu_finetune",
                    help="default_eval: result name, eval_NAME.md (the README cites eval_cpu_finetune for the shipped "
                         "model, eval_baseline for the model before it)")
    ap.add_argument("--work-dir", type=Path, default=Path("exp/figures"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--dry-run", action="store_true", help="print each part's command and run nothing")
    ap.add_argument("--summary-only", action="store_true",
                    help="only rewrite OUT/figures_summary.md from the result files already in OUT")
    args = ap.parse_args(argv)

    parts = list(dict.fromkeys(p.strip() for p in args.parts.split(",") if p.strip()))    # each part once
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise SystemExit(f"--parts {args.parts!r}: expected a comma-separated list of {', '.join(PARTS)}")
    for opt in ("score_batches", "limit", "rounds", "vs_sherpa_rounds", "chunk_limit", "chunk_rounds", "threads"):
        if getattr(args, opt) < 1:
            raise SystemExit(f"--{opt.replace('_', '-')} {getattr(args, opt)}: expected a positive integer")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        raise SystemExit(f"--name {args.name!r}: expected a file-name part (letters, digits, _ . -), no folders")
    if args.real is not None and not args.real.is_dir():
        raise SystemExit(f"--real {args.real}: no such folder; expected a `slimasr data real-test` directory")
    if args.lm_text is not None and not args.lm_text.is_file():
        raise SystemExit(f"--lm-text {args.lm_text}: no such file; expected LM training text, one sentence a line")
    for m in args.train:
        if not m.is_file():
            raise SystemExit(f"--train {m}: no such file; expected a training manifest (JSON lines)")
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"--out {args.out} is a file; expected a results folder")
    from slimasr.fileutil import file_sha256

    path = _model_file(args.model)
    sha = file_sha256(path)
    if args.summary_only:
        print(f"wrote {write_summary(args.out, args.name, sha)}")
        return 0
    missing = sorted({f for p in parts for f in NEEDS[p] if not (args.data_dir / f).is_file()})
    if missing:
        raise SystemExit(f"--data-dir {args.data_dir}: missing {', '.join(missing)}; synthesise it with `slimasr "
                         f"data synth --out {args.data_dir} --hours 8 --seed 0 --splits dev,test --piper-fraction 0`")
    work = args.work_dir / sha[:12]
    log_file = args.out / "regenerate.json"
    cmds = _commands(args, args.model, work)
    failed = []
    for part in parts:
        cmd = cmds[part]
        shown = " ".join(["python", *(_relative(c) for c in cmd[1:])])
        print(f"[{part}] {shown}", flush=True)
        if args.dry_run:
            continue
        (args.out / "layer_scores").mkdir(parents=True, exist_ok=True)
        load0, t0 = os.getloadavg(), time.time()
        rc = subprocess.run(cmd).returncode
        if rc == 0:
            _after(part, args)
        rec = {"part": part, "command": shown, "model": args.model or "default (embedded)", "model_sha256": sha,
               "started_utc": datetime.fromtimestamp(t0, timezone.utc).strftime("%Y-%m-%d %H:%M"),
               "wall_s": round(time.time() - t0, 1), "load_average_start": [round(x, 2) for x in load0],
               "load_average_end": [round(x, 2) for x in os.getloadavg()], "returncode": rc}
        print(f"[{part}] rc={rc} in {rec['wall_s']:.0f} s, load average {rec['load_average_start']} -> "
              f"{rec['load_average_end']}", flush=True)
        if rc != 0:
            failed.append(part)
            continue                         # one failed part does not stop the others
        log = json.loads(log_file.read_text()) if log_file.is_file() else []   # re-read: parts may run at once
        log = [r for r in log if r["part"] != part] + [rec]
        log_file.write_text(json.dumps(log, indent=1) + "\n")
    if args.dry_run:
        return 0
    print(f"wrote {write_summary(args.out, args.name, sha)}")
    if failed:
        print(f"failed: {', '.join(failed)} (their result files were not rewritten)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
