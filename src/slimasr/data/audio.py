"""Audio loading for training (torch side): any soundfile format -> 16 kHz mono float tensor."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["AudioError", "SAMPLE_RATE", "load_audio", "resample"]

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or holds NaN/inf samples; the message names the file."""


def resample(waveform: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Band-limited resampling of ``(..., S)`` with torchaudio; a no-op when the rates are equal."""
    if orig_sr == new_sr:
        return waveform
    import torchaudio.functional as AF

    return AF.resample(waveform, int(orig_sr), int(new_sr))


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read ``path`` and return float32 ``(num_samples,)`` in [-1, 1], mono (channels averaged), at 16 kHz.

    Raises:
        AudioError: if the file is missing, unreadable, empty or contains NaN/inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file {path} does not exist")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
    except Exception as e:  # LibsndfileError, RuntimeError, TypeError depending on the damage
        raise AudioError(f"audio file {path} is unreadable ({e}); expected a wav/flac/ogg file") from None
    if x.shape[0] == 0:
        raise AudioError(f"audio file {path} is empty (0 samples)")
    mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"audio file {path} contains NaN or infinite samples")
    return resample(torch.from_numpy(np.ascontiguousarray(mono)), sr, sample_rate)
