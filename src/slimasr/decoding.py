"""Greedy CTC decoding and error rates (torch optional: works on numpy arrays and torch tensors)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def greedy_ctc(log_probs, lens=None, blank: int = 0) -> list[list[int]]:
    """Best-path CTC: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (B, T, V) array or tensor; lens: (B,) valid frames (default: all).
    Returns:
        one token-id list per utterance.
    """
    if hasattr(log_probs, "detach"):
        best = log_probs.detach().argmax(-1).cpu().numpy()
        lens = None if lens is None else lens.detach().cpu().numpy() if hasattr(lens, "detach") else lens
    else:
        best = np.asarray(log_probs).argmax(-1)
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : (int(lens[b]) if lens is not None else best.shape[1])]
        if seq.size == 0:
            out.append([])
            continue
        keep = np.ones(seq.shape, dtype=bool)
        keep[1:] = seq[1:] != seq[:-1]
        out.append([int(t) for t in seq[keep] if t != blank])
    return out


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER with jiwer (empty references are skipped by jiwer's conventions: we drop them)."""
    import jiwer

    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan"), "utterances": 0}
    refs, hyps = zip(*pairs)
    return {"wer": float(jiwer.wer(list(refs), list(hyps))), "cer": float(jiwer.cer(list(refs), list(hyps))),
            "utterances": len(pairs)}
