"""Regenerate the README's model figures for one model with the current code (one scorer: slimasr.scoring).

Every WER in these figures is :func:`slimasr.scoring.error_rates` (references and hypotheses normalised alike,
empty references counted, the unknown token one error). Run it again whenever the model changes (``--model``: a
replacement for the shipped default model); each part writes the result files the README cites:

* ``layer_scores``: ``slimasr prune score --metric all`` on the first ``--score-batches`` batches of 8 dev
  utterances (every metric, the oracle's dev loss and dev WER, Kendall tau with the oracle)
  -> ``OUT/layer_scores/default_dev96.json`` and ``.png``;
* ``bench``: ``benchmarks/run_all.py`` (torch / onnx / int8 / sherpa-onnx, offline and chunked 16/4, beam + LM,
  the 20% and 40% one-shot correlation-pruned models without fine-tuning) -> ``OUT/bench.json``, ``.md``,
  ``bench_rtf_wer.png``. Its speed figures are only meaningful on an otherwise idle machine;
* ``sherpa``: ``benchmarks/sherpa_agreement.py`` (transcripts identical to sherpa-onnx's; no WER)
  -> ``OUT/sherpa_agreement.json``, ``.md``;
* ``default_eval``: ``benchmarks/default_model_eval.py`` (WER per held-out voice and engine, offline and chunked;
  real recordings with ``--real``) -> ``OUT/default_model/eval_NAME.json``, ``.md`` (``--name``, default
  ``cpu_finetune``: the shipped model's file).

Each part's command, model hash, wall time and load average (start and end) are appended to
``OUT/regenerate.json``. Work files (exports, pruned models, the LM) go to ``--work-dir/MODEL_SHA256[:12]``, so a
replaced model never reuses its predecessor's.

Example (the corpus: ``slimasr data synth --out data/synth8 --hours 8 --seed 0 --splits dev,test
--piper-fraction 0``; about 10 minutes per part on 2 cores)::

    python benchmarks/regenerate_figures.py --data-dir data/synth8 --parts layer_scores,bench \\
        --limit 150 --rounds 3
    python benchmarks/regenerate_figures.py --model exp/voices/model.pt --data-dir data/synth8 \\
        --real data/real --lm-text data/synth3/lm_text.txt
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PARTS = ("layer_scores", "bench", "sherpa", "default_eval")
HERE = Path(__file__).resolve().parent


def _model_file(model: str | None) -> Path:
    from slimasr.model.asr import default_model_path

    path = Path(model) if model else default_model_path()
    if not path.is_file():
        raise SystemExit(f"--model {path}: no such model file; expected a slimasr .pt model")
    return path


def _commands(args, model: str | None, work: Path) -> dict[str, list[str]]:
    """Each part's command line (run from the repository root)."""
    py, out, data = sys.executable, args.out, args.data_dir
    with_model = ["--model", model] if model else []
    cmds = {
        "layer_scores": [py, "-m", "slimasr.cli", "prune", "score", *with_model, "--data", str(data / "dev.jsonl"),
                         "--metric", "all", "--max-batches", str(args.score_batches),
                         "--out", str(out / "layer_scores" / "default_dev96.json"),
                         "--plot", str(out / "layer_scores" / "default_dev96.png")],
        "bench": [py, str(HERE / "run_all.py"), *with_model, "--data-dir", str(data), "--limit", str(args.limit),
                  "--rounds", str(args.rounds), "--threads", str(args.threads), "--work-dir", str(work / "bench"),
                  "--out", str(out)],
        "sherpa": [py, str(HERE / "sherpa_agreement.py"), *with_model, "--data", str(data / "test.jsonl"),
                   "--out", str(out)],
        "default_eval": [py, str(HERE / "default_model_eval.py"), *with_model, "--test-dir", str(data),
                         "--name", args.name, "--out", str(out / "default_model"), "--threads", str(args.threads),
                         *(["--real", str(args.real)] if args.real else []),
                         *(["--lm-text", str(args.lm_text)] if args.lm_text else [])],
    }
    return cmds


def _relative(arg: str) -> str:
    """A command-line argument as shown in the log: paths under the working directory relative to it."""
    p = Path(arg)
    if p.is_absolute() and p.is_relative_to(Path.cwd()):
        return str(p.relative_to(Path.cwd()))
    return arg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model .pt (default: the embedded default model)")
    ap.add_argument("--data-dir", type=Path, default=Path("data/synth8"),
                    help="a `slimasr data synth` corpus with dev.jsonl, test.jsonl, test_*.jsonl and lm_text.txt")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    ap.add_argument("--score-batches", type=int, default=12, help="layer_scores: dev batches of 8 utterances")
    ap.add_argument("--limit", type=int, default=150, help="bench: the first N test utterances by audio_filepath")
    ap.add_argument("--rounds", type=int, default=3, help="bench: interleaved rounds of fresh processes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real", type=Path, default=None, help="default_eval: a `slimasr data real-test` directory")
    ap.add_argument("--lm-text", type=Path, default=None, help="default_eval: LM text for the real recordings")
    ap.add_argument("--name", default="cpu_finetune",
                    help="default_eval: result name, eval_NAME.md (the README cites eval_cpu_finetune for the shipped "
                         "model, eval_baseline for the model before it)")
    ap.add_argument("--work-dir", type=Path, default=Path("exp/figures"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise SystemExit(f"--parts {args.parts!r}: expected a comma-separated list of {', '.join(PARTS)}")
    needed = {"layer_scores": ["dev.jsonl"], "bench": ["dev.jsonl", "test.jsonl", "lm_text.txt"],
              "sherpa": ["test.jsonl"], "default_eval": ["test_espeak.jsonl"]}
    missing = sorted({f for p in parts for f in needed[p] if not (args.data_dir / f).is_file()})
    if missing:
        raise SystemExit(f"--data-dir {args.data_dir}: missing {', '.join(missing)}; synthesise it with `slimasr "
                         f"data synth --out {args.data_dir} --hours 8 --seed 0 --splits dev,test --piper-fraction 0`")
    from slimasr.fileutil import file_sha256

    path = _model_file(args.model)
    sha = file_sha256(path)
    work = args.work_dir / sha[:12]
    (args.out / "layer_scores").mkdir(parents=True, exist_ok=True)
    log_file = args.out / "regenerate.json"
    cmds = _commands(args, args.model, work)
    failed = []
    for part in parts:
        cmd = cmds[part]
        shown = " ".join(["python", *(_relative(c) for c in cmd[1:])])
        print(f"[{part}] {shown}", flush=True)
        load0, t0 = os.getloadavg(), time.time()
        rc = subprocess.run(cmd).returncode
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
    if failed:
        print(f"failed: {', '.join(failed)} (their result files were not rewritten)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
