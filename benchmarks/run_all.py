"""The committed benchmark: the default model and its 20% / 40% one-shot pruned versions on every backend.

Steps (everything but the results goes to --work-dir):

1. score the default model's layers by correlation on the dev set (``slimasr prune score``) and prune 20% and
   40% of them in one shot (``slimasr prune oneshot``), without fine-tuning unless --p20 / --p40 give
   fine-tuned models (the labels say which);
2. build a 4-gram KenLM on the corpus's training sentences (``slimasr lm build``) for the beam-search run;
3. run the benchmark (``slimasr.bench``): PyTorch eager, onnxruntime fp32 and int8 (our runtime), sherpa-onnx's
   C++ runtime on the same streaming file (our runtime with its default thread policy and spinning, as
   sherpa-onnx's threads do), TensorRT (skipped without a GPU); offline and chunked; greedy and,
   for the default model, beam search 100 with the LM; every run in its own process;
4. write ``bench.json``, ``bench.md`` and ``bench_rtf_wer.png`` to --out.

Run from the repository root (``make bench`` runs it with the defaults)::

    python benchmarks/run_all.py --data-dir data/synth8 --limit 120 --threads 2
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from slimasr.bench import ModelSpec, RunSpec, run_benchmark, write_outputs

log = logging.getLogger("run_all")


def _slimasr(*args: str) -> None:
    """Run a slimasr command in a child process (as a user would), failing loudly."""
    cmd = [sys.executable, "-m", "slimasr.cli", *args]
    log.info("$ slimasr %s", " ".join(args))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"slimasr {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    if proc.stdout.strip():
        log.info("%s", proc.stdout.strip())


def _prune(data_dir: Path, work: Path, score_batches: int, model: str | None = None) -> dict:
    scores = work / "scores.json"
    with_model = ("--model", model) if model else ()
    if not scores.is_file():
        _slimasr("prune", "score", *with_model, "--data", str(data_dir / "dev.jsonl"), "--metric", "correlation",
                 "--max-batches", str(score_batches), "--out", str(scores))
    out = {}
    for pct in (20, 40):
        path = work / f"pruned{pct}.pt"
        if not path.is_file():
            _slimasr("prune", "oneshot", *with_model, "--scores", str(scores), "--metric", "correlation", "--ratio",
                     str(pct / 100), "--out", str(path))
        out[pct] = path
    return out


def _lm(data_dir: Path, work: Path) -> Path | None:
    lm = work / "lm" / "lm.bin"
    if lm.is_file():
        return lm
    try:
        _slimasr("lm", "build", "--text", str(data_dir / "lm_text.txt"), "--order", "4", "--out", str(lm))
    except SystemExit as e:
        log.warning("no LM, the beam run is skipped: %s", e)
        return None
    return lm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data/synth8", type=Path,
                    help="corpus from `slimasr data synth` (dev.jsonl, test.jsonl, lm_text.txt)")
    ap.add_argument("--model", default=None,
                    help="the full model (.pt) to benchmark and prune (default: the embedded default model)")
    ap.add_argument("--limit", type=int, default=120,
                    help="test utterances: the first N sorted by audio_filepath (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved shards: every configuration runs once per shard, round by round")
    ap.add_argument("--score-batches", type=int, default=30, help="dev batches (of 8) the layers are scored on")
    ap.add_argument("--p20", type=Path, default=None, help="a fine-tuned 20%%-pruned model to use instead")
    ap.add_argument("--p40", type=Path, default=None, help="a fine-tuned 40%%-pruned model to use instead")
    ap.add_argument("--work-dir", type=Path, default=Path("exp/bench"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    t0 = time.time()
    test = args.data_dir / "test.jsonl"
    for f in (test, args.data_dir / "dev.jsonl", args.data_dir / "lm_text.txt"):
        if not f.is_file():
            raise SystemExit(f"{f} is missing: synthesize the corpus first (slimasr data synth --out "
                             f"{args.data_dir} --hours 8 --seed 0)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    pruned = _prune(args.data_dir, args.work_dir, args.score_batches, args.model)
    lm = _lm(args.data_dir, args.work_dir)

    def label(pct: int, given: Path | None) -> ModelSpec:
        if given is not None:
            return ModelSpec(f"p{pct} (fine-tuned)", str(given))
        return ModelSpec(f"p{pct} (no fine-tuning)", str(pruned[pct]))

    full, p20, p40 = ModelSpec("full", args.model), label(20, args.p20), label(40, args.p40)
    common = dict(data=str(test), limit=args.limit or None, threads=args.threads, chunk_size=16, left_chunks=4,
                  feed_ms=100, warmup=2)

    def spec(m: ModelSpec, backend: str, mode: str, **kw) -> RunSpec:
        return RunSpec(model=m.label, model_path=m.path, backend=backend, mode=mode, **{**common, **kw})

    specs = [spec(full, "torch", "offline"), spec(full, "onnx", "offline"), spec(full, "onnx-int8", "offline"),
             spec(full, "torch", "chunked"), spec(full, "onnx", "chunked"), spec(full, "sherpa-onnx", "chunked"),
             spec(full, "onnx-int8", "chunked"), spec(full, "sherpa-onnx-int8", "chunked"),
             # sherpa-onnx's onnxruntime threads spin between operators: compare at the same policy too
             spec(full, "onnx", "chunked", spin_threads=True), spec(full, "onnx-int8", "chunked", spin_threads=True)]
    if lm is not None:
        specs.append(spec(full, "onnx", "offline", decoder="beam", lm=str(lm), beam_size=100, lm_weight=0.6))
    specs.append(spec(full, "tensorrt", "offline"))
    for m in (p20, p40):
        specs += [spec(m, "torch", "offline"), spec(m, "onnx", "offline"), spec(m, "onnx-int8", "offline"),
                  spec(m, "onnx", "chunked")]

    result = run_benchmark(specs, work_dir=args.work_dir / "exports", rounds=args.rounds)
    # no paths of this machine in the committed files
    n = next((r["utterances"] for r in result["runs"] if "utterances" in r), None)
    result["settings"]["data"] = (f"{args.data_dir.name}/test.jsonl" + (f", the first {n} utterances by "
                                  "audio_filepath" if args.limit else ""))
    for r in result["runs"]:
        mp = r.get("model_path")
        r["model_path"] = "default (embedded)" if mp in (None, "default") else Path(mp).name
    scores = json.loads((args.work_dir / "scores.json").read_text())
    result["pruning"] = {
        "method": "one-shot, correlation metric (slimasr prune score / oneshot)",
        "scored_on": f"{args.data_dir.name}/dev.jsonl (at most {args.score_batches} batches of 8)",
        "fine_tuned": {"p20": args.p20 is not None, "p40": args.p40 is not None},
        "correlation_prune_order": scores["metrics"]["correlation"]["prune_order"],
        "scored_utterances": scores.get("num_utterances"),
    }
    result["settings"]["wall_s"] = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    title = "Benchmark: default model, 20% and 40% pruned"
    write_outputs(result, args.out / "bench.json", args.out / "bench.md", args.out / "bench_rtf_wer.png", title)
    print((args.out / "bench.md").read_text())
    log.info("done in %.0f s", time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
