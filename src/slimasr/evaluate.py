"""Decoding a manifest with a PyTorch model: hypotheses, WER/CER (:mod:`slimasr.scoring`), RTF."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def decode_manifest(model, manifest: str, chunk_size: int | None = None, left_chunks: int | None = None,
                    out: str | None = None, batch_seconds: float = 120.0, threads: int | None = None,
                    device: str = "cpu") -> dict:
    """Greedy CTC decoding of every utterance of ``manifest``.

    Args:
        model: a model path, an ``ASRModel``, or None (the embedded default model).
    Audio is read by :func:`slimasr.data.manifest.load_utterance` (the whole file or its segment, with
    :func:`slimasr.audio.load_audio`) and turned into features by the model's own front-end
    (:func:`slimasr.features.compute_features` with ``model.frontend``); unreadable or too short utterances are
    skipped, logged and counted.

    Returns:
        dict(wer, cer, utterances, skipped, rtf, audio_s, compute_s, hyps=[...]) plus the counts of
        :func:`slimasr.scoring.error_rates`; each hyp holds the raw ``reference`` and hypothesis ``text``.
    """
    import torch

    from .data.manifest import load_utterance, read_manifest
    from .decoding import greedy_ctc
    from .features import compute_features
    from .model import load_model
    from .scoring import error_rates
    from .tokenizer import Tokenizer

    if threads:
        torch.set_num_threads(threads)
    m = model if hasattr(model, "ctc_log_probs") else load_model(model, device=device)
    m.eval()
    if not m.tokenizer_bytes:
        raise ValueError("the model has no tokenizer attached; cannot turn tokens into text")
    tok = Tokenizer.from_bytes(m.tokenizer_bytes)
    rows = read_manifest(manifest)
    rows = sorted(rows, key=lambda r: float(r.get("duration", 0)))
    hyps, skipped, audio_s, compute_s = [], 0, 0.0, 0.0
    batch: list[tuple[dict, "torch.Tensor"]] = []

    def flush():
        nonlocal compute_s
        if not batch:
            return
        feats = [f for _, f in batch]
        lens = torch.tensor([f.size(0) for f in feats])
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            lp, olens = m.ctc_log_probs(x, lens.to(device), chunk_size, left_chunks)
        ids = greedy_ctc(lp, olens)
        compute_s += time.perf_counter() - t0
        for (row, _), seq in zip(batch, ids):
            hyps.append({"audio_filepath": row["audio_filepath"], "text": tok.decode(seq),
                         "reference": row["text"], **({"speaker": row["speaker"]} if "speaker" in row else {})})
        batch.clear()

    secs = 0.0
    for row in rows:
        try:
            wav = load_utterance(row, m.frontend.sample_rate)  # the whole file or its segment
        except ValueError as e:
            log.warning("skipping: %s", e)
            skipped += 1
            continue
        seconds = wav.size / m.frontend.sample_rate
        feats = torch.from_numpy(compute_features(wav, m.frontend))
        if feats.size(0) < m.min_frames:
            log.warning("skipping %s: shorter than %.0f ms", row["audio_filepath"],
                        m.min_frames * m.frontend.frame_shift_ms)
            skipped += 1
            continue
        batch.append((row, feats))
        audio_s += seconds
        secs += seconds
        if secs >= batch_seconds:
            flush()
            secs = 0.0
    flush()
    if not hyps:
        raise ValueError(f"no utterance of {manifest} could be decoded ({skipped} skipped)")
    rates = error_rates([h["reference"] for h in hyps], [h["text"] for h in hyps])
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            for h in hyps:
                f.write(json.dumps(h) + "\n")
    if skipped:
        log.warning("%d utterances skipped (unreadable or too short)", skipped)
    return {**rates, "skipped": skipped, "rtf": compute_s / max(audio_s, 1e-9), "audio_s": audio_s,
            "compute_s": compute_s, "hyps": hyps}
