"""Greedy CTC decoding (torch optional: works on numpy arrays and torch tensors); scoring is slimasr.scoring."""
from __future__ import annotations

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
