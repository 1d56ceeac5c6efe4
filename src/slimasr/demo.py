"""The demo pipeline (``slimasr demo`` / ``make demo``): from nothing to measured numbers on this machine.

1. synthesizes a small held-out test set (voices and sentences never seen in training) and a dev set;
2. decodes the test set with the embedded default model offline and chunked (PyTorch);
3. scores the layers on the dev set (correlation metric), prunes 20% and 40% one-shot, decodes again;
4. exports the model to ONNX (streaming; once, into the export cache :mod:`slimasr.export.cache`) and decodes
   chunk by chunk with the torch-free runtime, measuring per-chunk compute and the latency of the final result
   after the end of audio.

Everything lands in ``WORK`` (``demo.json``) and a table is printed.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _group(hyps: list[dict]) -> dict[str, float]:
    from .scoring import error_rates

    out = {}
    for name in ("espeak", "flite", "piper", "festival"):
        pred = (lambda n: lambda s: s.startswith(n))(name)
        sel = [h for h in hyps if pred(h.get("speaker", ""))]
        if sel:
            out[name] = error_rates([h["reference"] for h in sel], [h["text"] for h in sel])["wer"]
    return out


def run_demo(work: str | Path, hours: float = 1.2, threads: int = 2, export: bool = True, prune: bool = True,
             echo=print, model_path: str | Path | None = None) -> dict:
    """Run the demo in ``work`` (``threads``: synthesis jobs and runtime threads; PyTorch's are the caller's) on
    ``model_path`` (a slimasr ``.pt`` model; None: the embedded default model)."""
    from .data.manifest import read_manifest
    from .data.synth import synthesize
    from .decoding import decode_manifest
    from .model import load_model

    work = Path(work)
    t_all = time.perf_counter()
    steps = 2 + prune + export                          # numbered as they run: --no-prune gives 1/3 .. 3/3
    done = 0

    def step(title: str) -> None:
        nonlocal done
        done += 1
        echo(f"[{done}/{steps}] {title}")

    model = load_model(model_path)                      # a bad model fails before the synthesis
    step(f"held-out test and dev sets -> {work / 'data'}")
    rep = synthesize(work / "data", hours=hours, jobs=threads, splits=("dev", "test"), progress=False)
    echo(f"      {rep.summary()}")
    test = str(work / "data" / "test.jsonl")
    rows: list[dict] = []

    def decode(label: str, m, chunk=None, left=None):
        r = decode_manifest(m, test, chunk_size=chunk, left_chunks=left)
        for s in r["skipped_items"]:
            echo(f"      skipped {s['audio_filepath']}: {s['reason']}")
        row = {"model": label, "layers": len(m.encoder.layers), "mode": "offline" if chunk is None else
               f"chunk {chunk}/left {left}", "wer": r["wer"], "cer": r["cer"], "rtf": r["rtf"], **{
                   f"wer_{k}": v for k, v in _group(r["hyps"]).items()}}
        rows.append(row)
        groups = "  ".join(f"{k} {100 * v:.1f}%" for k, v in _group(r["hyps"]).items())
        echo(f"      {label:<18} {row['mode']:<16} WER {100 * r['wer']:6.2f}% ({groups})  RTF {r['rtf']:.4f}")
        return r

    step("default model (PyTorch), offline and chunked")
    decode("default", model)
    decode("default", model, 16, 4)

    if prune:
        from .data.dataset import ASRDataset, BucketBatchSampler, collate
        from .prune import oneshot_prune, score_layers
        from .tokenizer import Tokenizer

        step("layer scores on the dev set (correlation), one-shot pruning 20% / 40% (no fine-tuning)")
        tok = Tokenizer.from_bytes(model.tokenizer_bytes)
        dev = ASRDataset(read_manifest(work / "data" / "dev.jsonl"), tok, model.frontend)
        sampler = BucketBatchSampler(dev.durations, max_frames_per_batch=20000, shuffle=False)
        batches = [b for b in (collate([dev[i] for i in idx]) for idx in sampler) if b is not None]
        scores = score_layers(model, batches, metrics=("correlation",), progress=False)
        (work / "scores.json").write_text(json.dumps(scores.to_json(), indent=1))
        for ratio in (0.2, 0.4):
            pruned = oneshot_prune(model, scores, "correlation", ratio=ratio)
            decode(f"pruned {int(ratio * 100)}% (no FT)", pruned)

    stream = None
    if export:
        import numpy as np

        from .decoding import BackendConfig, cached_export, decode_rows, open_backend
        from .scoring import error_rates

        step("ONNX export (streaming, chunk 16, left 4) and the torch-free runtime")
        onnx_dir = cached_export(model, model_path, streaming=True, chunk_size=16, left_chunks=4)   # the export cache
        echo(f"      export: {onnx_dir}")
        backend = open_backend(onnx_dir, BackendConfig(backend="onnx", chunk_size=16, left_chunks=4, threads=threads))
        # fed 100 ms at a time, as a live client would (the loop slimasr decode and slimasr bench run)
        rep = decode_rows(backend, read_manifest(test), feed=1600)
        for s in rep.skipped:
            echo(f"      skipped {s.item}: {s.reason}")
        utts = rep.utterances
        r = error_rates([u["reference"] for u in utts], [u["text"] for u in utts])
        chunk_ms = [1000 * t for u in utts for t in u["chunk_times"]]
        final_ms = [1000 * u["final_latency"] for u in utts]
        stream = {"model": "default (ONNX runtime)", "layers": len(model.encoder.layers), "mode": "streaming 16/4",
                  "wer": r["wer"], "cer": r["cer"], "rtf": rep.compute_s / rep.audio_s,
                  "chunk_ms_p50": float(np.percentile(chunk_ms, 50)), "chunk_ms_p95": float(np.percentile(chunk_ms, 95)),
                  "final_latency_ms_p50": float(np.percentile(final_ms, 50)),
                  "final_latency_ms_p95": float(np.percentile(final_ms, 95))}
        rows.append(stream)
        echo(f"      {'default (ONNX)':<18} {'streaming 16/4':<16} WER {100 * r['wer']:6.2f}%  RTF {stream['rtf']:.4f}"
             f"  chunk p95 {stream['chunk_ms_p95']:.1f} ms (chunk = "
             f"{16 * 1000 * backend.frame_seconds:.0f} ms audio)"
             f"  final latency p95 {stream['final_latency_ms_p95']:.1f} ms")
    result = {"model": str(model_path) if model_path else "default (embedded)", "test_utterances":
              len(read_manifest(test)), "rows": rows, "seconds": time.perf_counter() - t_all}
    (work / "demo.json").write_text(json.dumps(result, indent=1))
    echo(f"done in {result['seconds']:.0f} s; results in {work / 'demo.json'}")
    return result
