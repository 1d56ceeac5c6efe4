"""PyTorch on a CUDA GPU: RTF, throughput and GPU memory at batch 1, 8 and 32, offline and chunked, in fp32, fp16
and bf16, and the WER change of the half-precision modes on the default model. One prepared script.

Per model (``--model LABEL=PATH``, repeatable; ``default`` is the embedded model, the ``paper``-scale one is
``exp/paper_scale/p20.pt`` from ``python benchmarks/paper_scale.py --part models``), per dtype (fp32; fp16 and
bf16 under ``torch.autocast``) and batch size B:

* offline: B copies of the test utterances' features padded into one batch, ``ASRModel.ctc_log_probs``
  (full context); time per batch (CUDA-synchronised, best of ``--repeats``), RTF per stream and throughput
  (audio seconds per second over the batch);
* chunked: B streams fed in lockstep, one ``ASRModel.stream_step`` call per chunk of 16 encoder frames with
  4 left chunks; p50 / p95 time per chunk call and RTF per stream;
* peak GPU memory (``torch.cuda.max_memory_allocated``) of each point.

WER: the default model decodes ``--data`` greedily at batch 1 offline in each dtype (slimasr.scoring), reported
with its change from fp32. The ``paper``-scale model has random weights: speed and memory only.

onnxruntime-gpu and TensorRT are not measured here; the JSON records whether they are importable.

Without a CUDA GPU the script measures nothing: it writes ``{"measured": false, "reason": ...}`` and exits with
status 2, saying so on stderr. No GPU figures have been committed from this script so far.

Example (a few minutes on one GPU)::

    python benchmarks/paper_scale.py --part models --work exp/paper_scale
    python benchmarks/gpu_bench.py --model default --model paper=exp/paper_scale/p20.pt \\
        --data data/synth8/test.jsonl --out benchmarks/results/gpu_bench.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

DTYPES = ("fp32", "fp16", "bf16")


def _gpu_env() -> dict:
    import importlib.util

    import torch

    env = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "python": platform.python_version(),
           "tensorrt_importable": importlib.util.find_spec("tensorrt") is not None}
    try:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime_providers"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, bf16_supported=torch.cuda.is_bf16_supported())
    return env


def _autocast(dtype: str):
    import contextlib

    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])


def _features(model, rows) -> list:
    import torch

    from slimasr.audio import load_audio
    from slimasr.features import compute_features

    return [torch.from_numpy(compute_features(load_audio(r["audio_filepath"]), model.frontend)) for r in rows]


def _batch(feats: list, b: int):
    """B utterances (the test features repeated) padded into (B, T, F) and their (B,) lengths."""
    import torch

    items = [feats[i % len(feats)] for i in range(b)]
    lens = torch.tensor([len(f) for f in items])
    x = torch.zeros(b, int(lens.max()), items[0].shape[1])
    for i, f in enumerate(items):
        x[i, : len(f)] = f
    return x, lens


def _offline(model, feats, b: int, dtype: str, repeats: int) -> dict:
    import torch

    x, lens = _batch(feats, b)
    x, lens = x.cuda(), lens.cuda()
    audio_s = float(lens.sum()) / 100.0                     # 10 ms frames
    torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode(), _autocast(dtype):
        for i in range(repeats + 1):                         # the first call warms up (kernels, allocator)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.ctc_log_probs(x, lens)
            torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    best = min(times)
    return {"batch_s": best, "rtf_per_stream": best / (audio_s / b), "throughput_x_realtime": audio_s / best,
            "audio_s_per_batch": audio_s, "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


def _chunked(model, feats, b: int, dtype: str, chunk: int, left: int) -> dict:
    import numpy as np
    import torch

    from slimasr.chunking import Chunking

    x, _ = _batch([feats[0]] * b, b)                      # lockstep streams: equal lengths
    x = x.cuda()
    shift = Chunking.for_model(model.config, chunk, left).shift
    torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode(), _autocast(dtype):
        for warm in (True, False):
            state = model.init_state(b, torch.device("cuda"))
            for s in range(0, x.size(1), shift):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                _, state = model.stream_step(x[:, s:s + shift], state, chunk, left, final=s + shift >= x.size(1))
                torch.cuda.synchronize()
                if not warm:
                    times.append(time.perf_counter() - t0)
    audio_s = x.size(1) / 100.0
    return {"chunk_p50_ms": float(np.percentile(times, 50)) * 1e3, "chunk_p95_ms": float(np.percentile(times, 95)) * 1e3,
            "rtf_per_stream": sum(times) / audio_s, "throughput_x_realtime": b * audio_s / sum(times),
            "chunks": len(times), "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


def _wer(model, feats, rows, dtype: str) -> dict:
    import torch

    from slimasr.decoding import greedy_ctc
    from slimasr.scoring import error_rates
    from slimasr.tokenizer import Tokenizer

    tok = Tokenizer.from_bytes(model.tokenizer_bytes)
    hyps = []
    with torch.inference_mode(), _autocast(dtype):
        for f in feats:
            lp, _ = model.ctc_log_probs(f[None].cuda())
            hyps.append(tok.decode(greedy_ctc(lp.float())[0]))
    return error_rates([r["text"] for r in rows], hyps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, help="LABEL=PATH or 'default' [default: default].")
    ap.add_argument("--data", required=True, help="Test manifest (JSON lines).")
    ap.add_argument("--limit", type=int, default=16, help="Utterances used (sorted by audio_filepath).")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--left-chunks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", required=True, help="Results (JSON).")
    args = ap.parse_args(argv)

    import torch

    from slimasr.bench import ModelSpec
    from slimasr.bench.runner import load_rows, machine_info
    from slimasr.model import load_model

    env = _gpu_env()
    result = {"measured": False, "environment": env, "machine": machine_info(), "settings": vars(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        result["reason"] = "no CUDA GPU is visible to PyTorch: no GPU figure was measured"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"gpu_bench: {result['reason']} (wrote {out})", file=sys.stderr)
        return 2
    try:
        specs = [ModelSpec.parse(m) for m in (args.model or ["default"])]
        batches = [int(b) for b in args.batches.split(",")]
        dtypes = [d for d in args.dtypes.split(",")]
    except ValueError as e:
        print(f"gpu_bench: {e}", file=sys.stderr)
        return 2
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or any(b < 1 for b in batches):
        print(f"gpu_bench: --dtypes must be a subset of {','.join(DTYPES)} and --batches positive integers",
              file=sys.stderr)
        return 2
    if "bf16" in dtypes and not env.get("bf16_supported"):
        dtypes.remove("bf16")
        result["bf16_skipped"] = f"{env['gpu']} has no bf16 support"
    rows = load_rows(args.data, args.limit)
    result["points"], result["wer"] = [], {}
    for spec in specs:
        model = load_model(spec.path, device="cuda").eval()
        feats = _features(model, rows)
        trained = spec.path is None
        for dtype in dtypes:
            if trained:
                result["wer"].setdefault(spec.label, {})[dtype] = _wer(model, feats, rows, dtype)
            for b in batches:
                for mode in ("offline", "chunked"):
                    try:
                        m = (_offline(model, feats, b, dtype, args.repeats) if mode == "offline"
                             else _chunked(model, feats, b, dtype, args.chunk_size, args.left_chunks))
                    except torch.cuda.OutOfMemoryError as e:
                        m = {"error": f"out of GPU memory: {str(e)[:200]}"}
                        torch.cuda.empty_cache()
                    point = {"model": spec.label, "layers": len(model.encoder.layers), "dtype": dtype, "batch": b,
                             "mode": mode, **m}
                    print(json.dumps(point), flush=True)
                    result["points"].append(point)
        del model
        torch.cuda.empty_cache()
    for label, by_dtype in result["wer"].items():
        base = by_dtype.get("fp32", {}).get("wer")
        for d, r in by_dtype.items():
            r["wer_change_vs_fp32"] = None if base is None else r["wer"] - base
    result["measured"] = True
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
