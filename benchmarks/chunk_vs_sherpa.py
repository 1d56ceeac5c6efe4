"""Per-chunk decode time of one streaming export in slimasr's runtime and in sherpa-onnx, in one process.

    python benchmarks/chunk_vs_sherpa.py --data data/eval8/test.jsonl --limit 20 --rounds 7 [--model M.pt]

``slimasr bench`` runs every configuration in a fresh process, with audio fed in real time; its per-chunk figure
includes feature extraction of the fed pieces. This script isolates the decoding step: whole utterances are
accepted first, then every ready chunk is decoded (``Recognizer.decode``, which decodes all ready chunks in one
call, timed per utterance and divided by its chunks / ``OnlineRecognizer.decode_stream``, one chunk a call),
alternating the runtimes round by round on the same file, threads and chunking. Ours runs twice: with its default
thread policy (onnxruntime's workers sleep between operators) and spinning, as sherpa-onnx's threads do. Writes
``chunk_vs_sherpa.json`` and ``.md`` to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=None, help="a slimasr model [default: the embedded one]")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--left-chunks", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    for name in ("limit", "rounds", "threads", "chunk_size", "left_chunks"):
        if getattr(a, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(a, name)}: expected a positive integer")
    if not Path(a.data).is_file():
        raise SystemExit(f"--data {a.data}: no such file; expected a JSON-lines test manifest")
    load_start = os.getloadavg()

    import sherpa_onnx

    from slimasr.data.manifest import read_manifest
    from slimasr.export.onnx import export_onnx
    from slimasr.audio import load_audio
    from slimasr.model import load_model
    from slimasr.chunking import SHERPA_ONNX_TAIL_SECONDS
    from slimasr.fileutil import file_sha256
    from slimasr.model.asr import default_model_path
    from slimasr.runtime import Recognizer, StreamingConfig

    rows = sorted(read_manifest(a.data), key=lambda r: r["audio_filepath"])[: a.limit]
    waves = [load_audio(r["audio_filepath"]) for r in rows]
    work = Path(tempfile.mkdtemp(prefix="chunk-vs-sherpa-"))
    files = export_onnx(load_model(a.model), work, streaming=True, chunk_size=a.chunk_size,
                        left_chunks=a.left_chunks)
    same_end = StreamingConfig.sherpa_onnx()           # the same chunks as sherpa-onnx, tail included
    ours = Recognizer.from_onnx(work, num_threads=a.threads, streaming=same_end)
    ours_spin = Recognizer.from_onnx(work, num_threads=a.threads, spin_threads=True, streaming=same_end)
    theirs = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(model=str(files["model"]), tokens=str(files["tokens"]),
                                                         chunk_size=a.chunk_size, num_left_chunks=a.left_chunks,
                                                         num_threads=a.threads)
    tail = np.zeros(int(SHERPA_ONNX_TAIL_SECONDS * 16000), np.float32)   # sherpa-onnx needs right context past the end

    def run_theirs() -> list[float]:
        times = []
        for w in waves:
            s = theirs.create_stream()
            s.accept_waveform(16000, np.concatenate([w, tail]))
            s.input_finished()
            while theirs.is_ready(s):
                t0 = time.perf_counter()
                theirs.decode_stream(s)
                times.append(time.perf_counter() - t0)
        return times

    def run_ours(rec) -> list[float]:
        runs = {"n": 0}
        session_run = rec._run

        def counted(feed):
            runs["n"] += 1
            return session_run(feed)

        rec._run = counted                              # count the chunks: one decode() runs all ready ones
        times = []
        try:
            for w in waves:
                s = rec.create_stream()
                s.accept_waveform(16000, w)
                s.input_finished()
                runs["n"] = 0
                t0 = time.perf_counter()
                while rec.is_ready(s):
                    rec.decode(s)
                dt = time.perf_counter() - t0
                times += [dt / runs["n"]] * runs["n"]
        finally:
            rec._run = session_run
        return times

    run_ours(ours), run_ours(ours_spin), run_theirs()   # warm-up
    rounds = []
    for _ in range(a.rounds):
        o, sp, t = run_ours(ours), run_ours(ours_spin), run_theirs()
        rounds.append({"slimasr_ms": 1000 * statistics.fmean(o), "slimasr_spin_ms": 1000 * statistics.fmean(sp),
                       "sherpa_ms": 1000 * statistics.fmean(t), "chunks": [len(o), len(sp), len(t)]})
    ratio = [r["slimasr_ms"] / r["sherpa_ms"] for r in rounds]
    ratio_spin = [r["slimasr_spin_ms"] / r["sherpa_ms"] for r in rounds]
    res = {"model": a.model or "default (embedded)", "model_sha256": file_sha256(a.model or default_model_path()),
           "data": f"{Path(a.data).parent.name}/{Path(a.data).name}", "utterances": len(waves),
           "threads": a.threads, "chunk_size": a.chunk_size, "left_chunks": a.left_chunks, "rounds": rounds,
           "ratio_median": statistics.median(ratio), "ratio_spin_median": statistics.median(ratio_spin),
           "load_average_start": load_start, "load_average": os.getloadavg(),
           "sherpa_onnx_version": getattr(sherpa_onnx, "__version__", "?")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "chunk_vs_sherpa.json").write_text(json.dumps(res, indent=1))
    md = [f"## Per-chunk decode time, one process ({len(waves)} utterances, {a.threads} threads, chunk "
          f"{a.chunk_size}, left {a.left_chunks})", "",
          "| round | slimasr (ms/chunk) | slimasr, spinning (ms/chunk) | sherpa-onnx (ms/chunk) | ratio | ratio, "
          "spinning |", "|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {i + 1} | {r['slimasr_ms']:.2f} | {r['slimasr_spin_ms']:.2f} | {r['sherpa_ms']:.2f} | "
           f"{r['slimasr_ms'] / r['sherpa_ms']:.2f}x | {r['slimasr_spin_ms'] / r['sherpa_ms']:.2f}x |"
           for i, r in enumerate(rounds)]
    md += ["", f"Median ratio {res['ratio_median']:.2f}x with slimasr's default thread policy (onnxruntime's "
           f"workers sleep between operators), {res['ratio_spin_median']:.2f}x spinning as sherpa-onnx's threads "
           f"do; load average {load_start[0]:.2f} at the start, {res['load_average'][0]:.2f} at the end; model sha256 "
           f"{res['model_sha256'][:12]}."]
    (out / "chunk_vs_sherpa.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
