"""Compute per chunk of the batched streaming graph against the batch-1 graph, at several batch sizes.

For an export with ``model.batched.onnx`` (``slimasr export onnx --streaming --batched``): N chunks of streams at
their steady state (full caches), run as one batched call and as N batch-1 calls, in interleaved rounds; reports
the median milliseconds per chunk of each (wall and CPU time) and their ratio, and what stacking the streams'
caches into the call's inputs costs per chunk. This is the ceiling of what batching can buy a server
(which also spends time on features, decoding and the network); ``benchmarks/batched_streams.py`` measures the
server.

Example::

    python benchmarks/batched_chunk_cost.py --model exp/onnx-streaming --batch 1,2,4,8,16 --rounds 5 \\
        --out benchmarks/results/server/batched_chunk_cost.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="streaming export directory with model.batched.onnx")
    ap.add_argument("--batch", default="1,2,4,8,16", help="batch sizes (chunks per call)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--out", default=None, help="JSON report")
    args = ap.parse_args()

    from slimasr.runtime import Recognizer
    from slimasr.runtime.stream import ChunkInputs

    sizes = [int(b) for b in args.batch.split(",")]
    rec = Recognizer.from_onnx(args.model, num_threads=args.threads, batch_size=max(max(sizes), 2))
    if not rec.supports_batch:
        raise SystemExit(f"{args.model} has no batched graph (slimasr export onnx --streaming --batched)")
    p = rec.plan
    rng = np.random.default_rng(0)

    def chunk() -> ChunkInputs:
        cache = p.cache_frames
        return ChunkInputs(
            index=0, frames=p.chunk_size, x=rng.standard_normal((1, p.window, 80)).astype(np.float32),
            offset=np.array([cache + 10 * p.chunk_size], np.int64), required_cache_size=np.array([cache], np.int64),
            attn_cache=rng.standard_normal((p.layers, p.heads, cache, 2 * p.head_dim)).astype(np.float32),
            conv_cache=rng.standard_normal((p.layers, 1, p.d_model, rec.info.conv_cache_frames)).astype(np.float32),
            attn_mask=np.ones((1, 1, cache + p.chunk_size), bool))

    one = lambda c: rec._run_chunks([c])[0]                          # noqa: E731 - the batch-1 graph
    chunks = {n: [chunk() for _ in range(n)] for n in sizes}
    times: dict[int, dict[str, list[float]]] = {n: {"batched": [], "one_by_one": [], "batched_cpu": [],
                                                    "one_by_one_cpu": [], "stack": []} for n in sizes}
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rec._batched.run(chunks[max(sizes)], one)                        # warm-up
    one(chunks[sizes[0]][0])
    for _ in range(args.rounds):
        for n in sizes:
            cs = chunks[n]
            t, c0 = time.perf_counter(), time.process_time()
            rec._batched.run(cs, one) if n > 1 else one(cs[0])
            times[n]["batched"].append((time.perf_counter() - t) / n * 1000)
            times[n]["batched_cpu"].append((time.process_time() - c0) / n * 1000)
            t, c0 = time.perf_counter(), time.process_time()
            for c in cs:
                one(c)
            times[n]["one_by_one"].append((time.perf_counter() - t) / n * 1000)
            times[n]["one_by_one_cpu"].append((time.process_time() - c0) / n * 1000)
            t = time.perf_counter()                                  # stacking the caches of a call
            np.stack([c.attn_cache for c in cs]), np.stack([c.conv_cache[:, 0] for c in cs])
            times[n]["stack"].append((time.perf_counter() - t) / n * 1000)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = []
    print(f"{rec!r}\n{uptime_before}\n  N  batched ms/chunk  one-by-one ms/chunk  speed-up  CPU speed-up  "
          "stacking ms/chunk")
    for n in sizes:
        med = {k: statistics.median(v) for k, v in times[n].items()}
        b, o = med["batched"], med["one_by_one"]
        rows.append({"batch": n, "batched_ms_per_chunk": round(b, 2), "one_by_one_ms_per_chunk": round(o, 2),
                     "speedup": round(o / b, 2), "batched_cpu_ms_per_chunk": round(med["batched_cpu"], 2),
                     "one_by_one_cpu_ms_per_chunk": round(med["one_by_one_cpu"], 2),
                     "cpu_speedup": round(med["one_by_one_cpu"] / med["batched_cpu"], 2),
                     "stack_caches_ms_per_chunk": round(med["stack"], 3)})
        print(f"{n:3d}  {b:16.2f}  {o:19.2f}  {o / b:8.2f}  {rows[-1]['cpu_speedup']:12.2f}  {med['stack']:17.3f}")
    print(uptime_after)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "model": Path(args.model).name, "layers": p.layers, "d_model": p.d_model, "chunk_size": p.chunk_size,
            "left_chunks": p.left_chunks, "threads": args.threads, "rounds": args.rounds,
            "uptime_before": uptime_before, "uptime_after": uptime_after, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
