"""Global cepstral mean and variance normalisation statistics, accumulated one file at a time."""
from __future__ import annotations

import logging
from typing import Iterable, Mapping

import numpy as np

from slimasr.features import FrontendConfig

__all__ = ["compute_cmvn"]

log = logging.getLogger(__name__)


def compute_cmvn(
    manifest_rows: Iterable[Mapping], frontend: FrontendConfig, max_files: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse standard deviation of the fbank features over a manifest.

    Files are read one at a time (memory stays flat); sums are kept in float64. Unreadable files are logged and
    skipped.

    Args:
        manifest_rows: rows with ``audio_filepath`` (see :mod:`slimasr.data.manifest`).
        frontend: the model's front-end (:class:`slimasr.features.FrontendConfig`).
        max_files: use only the first ``max_files`` rows (statistics converge after a few hundred utterances).

    Returns:
        ``(mean, istd)``, float32 arrays of shape ``(num_mel_bins,)``; normalise with ``(feats - mean) * istd``.

    Raises:
        ValueError: if no file could be read.
    """
    from slimasr.data.dataset import utterance_features

    rows = list(manifest_rows)
    if max_files is not None:
        rows = rows[:max_files]
    d = frontend.dim
    s1, s2, n, skipped = np.zeros(d), np.zeros(d), 0, 0
    it = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, desc="cmvn", unit="utt")
    for row in it:
        try:
            feats = utterance_features(row, frontend)
        except ValueError as e:
            log.warning("cmvn: skipping %s", e)
            skipped += 1
            continue
        f = feats.astype(np.float64)
        s1 += f.sum(0)
        s2 += (f * f).sum(0)
        n += f.shape[0]
    if n == 0:
        raise ValueError(f"cmvn: no readable audio among {len(rows)} manifest rows")
    if skipped:
        log.warning("cmvn: skipped %d unreadable files of %d", skipped, len(rows))
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 1e-20)
    return mean.astype(np.float32), (1.0 / np.sqrt(var)).astype(np.float32)
