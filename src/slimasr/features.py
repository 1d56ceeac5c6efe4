"""Log-mel filterbank features and audio loading without torch (numpy, soundfile, kaldi-native-fbank).

The settings in :class:`FbankConfig` are the ones sherpa-onnx uses for WeNet-style CTC models, so features
computed here, by :func:`slimasr.data.features.compute_fbank` (torch, training) and by sherpa-onnx agree.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["FbankConfig", "OnlineFbankExtractor", "fbank_file", "fbank_numpy", "load_audio_numpy", "num_frames"]

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi-compatible fbank settings (Kaldi defaults except where noted)."""

    sample_rate: int = SAMPLE_RATE  # Hz; audio is resampled to this
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window: str = "povey"
    low_freq: float = 20.0  # Hz
    high_freq: float = -400.0  # Hz; <= 0 means offset from Nyquist (-400 -> 7600 Hz at 16 kHz)
    dither: float = 0.0  # deterministic features; training may add dither explicitly
    snip_edges: bool = False  # frames centred on multiples of the shift: T = (S + shift/2) // shift
    sample_scale: float = 32768.0  # float waveforms in [-1, 1] are multiplied by this (int16 range)
    use_energy: bool = False
    energy_floor: float = 0.0
    remove_dc_offset: bool = True
    preemph_coeff: float = 0.97

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.num_mel_bins <= 0:
            raise ValueError(f"sample_rate and num_mel_bins must be positive, got {self.sample_rate}, "
                             f"{self.num_mel_bins}")
        if self.frame_shift_ms <= 0 or self.frame_length_ms < self.frame_shift_ms:
            raise ValueError(f"need 0 < frame_shift_ms <= frame_length_ms, got {self.frame_shift_ms}, "
                             f"{self.frame_length_ms}")

    @property
    def frame_shift(self) -> int:
        """Frame shift in samples (160 at 16 kHz)."""
        return int(round(self.sample_rate * self.frame_shift_ms / 1000))

    @property
    def frame_length(self) -> int:
        """Frame length in samples (400 at 16 kHz)."""
        return int(round(self.sample_rate * self.frame_length_ms / 1000))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FbankConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown FbankConfig fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def num_frames(num_samples: int, cfg: FbankConfig = FbankConfig()) -> int:
    """Number of feature frames for ``num_samples`` samples (what kaldi-native-fbank produces)."""
    shift, length = cfg.frame_shift, cfg.frame_length
    if cfg.snip_edges:
        return 0 if num_samples < length else 1 + (num_samples - length) // shift
    return (num_samples + shift // 2) // shift


def _knf_options(cfg: FbankConfig, dither: float | None = None):
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    fo = opts.frame_opts
    fo.samp_freq = float(cfg.sample_rate)
    fo.frame_length_ms = float(cfg.frame_length_ms)
    fo.frame_shift_ms = float(cfg.frame_shift_ms)
    fo.window_type = cfg.window
    fo.dither = float(cfg.dither if dither is None else dither)
    fo.snip_edges = bool(cfg.snip_edges)
    fo.remove_dc_offset = bool(cfg.remove_dc_offset)
    fo.preemph_coeff = float(cfg.preemph_coeff)
    mo = opts.mel_opts
    mo.num_bins = int(cfg.num_mel_bins)
    mo.low_freq = float(cfg.low_freq)
    mo.high_freq = float(cfg.high_freq)
    opts.use_energy = bool(cfg.use_energy)
    opts.energy_floor = float(cfg.energy_floor)
    return opts


class OnlineFbankExtractor:
    """Streaming fbank: feed float samples in [-1, 1] as they arrive, read frames as they become ready.

    Frames are indexed from the start of the stream; ``get_frames(start, n)`` returns ``(n, num_mel_bins)``.
    """

    def __init__(self, cfg: FbankConfig = FbankConfig()) -> None:
        import kaldi_native_fbank as knf

        self.cfg = cfg
        self._fbank = knf.OnlineFbank(_knf_options(cfg))
        self._finished = False
        self._popped = 0

    def accept_waveform(self, samples: np.ndarray, sample_rate: int | None = None) -> None:
        """Append float samples (1-D, range [-1, 1]) at ``cfg.sample_rate``."""
        if self._finished:
            raise RuntimeError("accept_waveform after input_finished")
        sr = self.cfg.sample_rate if sample_rate is None else sample_rate
        if sr != self.cfg.sample_rate:
            raise ValueError(f"expected {self.cfg.sample_rate} Hz samples, got {sr} Hz (resample first)")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size:
            self._fbank.accept_waveform(float(sr), x * np.float32(self.cfg.sample_scale))

    def input_finished(self) -> None:
        """Flush: the last frames (which need right context) become ready."""
        if not self._finished:
            self._fbank.input_finished()
            self._finished = True

    @property
    def num_frames_ready(self) -> int:
        return int(self._fbank.num_frames_ready)

    @property
    def finished(self) -> bool:
        return self._finished

    def discard_before(self, frame: int) -> None:
        """Free the frames before ``frame`` (absolute index); later frames keep their indices. Long streams call
        this as chunks are consumed, so memory stays bounded (an hour would otherwise hold ~140 MB)."""
        n = min(int(frame), self.num_frames_ready) - self._popped
        if n > 0:
            self._fbank.pop(n)
            self._popped += n

    def get_frames(self, start: int, n: int) -> np.ndarray:
        """Frames ``start .. start + n - 1`` as float32 ``(n, num_mel_bins)``."""
        if start < self._popped:
            raise ValueError(f"frame {start} was already discarded (first available: {self._popped})")
        if start < 0 or n < 0 or start + n > self.num_frames_ready:
            raise ValueError(f"frames [{start}, {start + n}) requested, {self.num_frames_ready} ready")
        out = np.empty((n, self.cfg.num_mel_bins), dtype=np.float32)
        for k in range(n):
            out[k] = self._fbank.get_frame(start + k)
        return out


def fbank_numpy(samples: np.ndarray, cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """Whole-utterance fbank of float samples in [-1, 1]: ``(S,)`` -> float32 ``(T, num_mel_bins)``."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    ext = OnlineFbankExtractor(cfg)
    ext.accept_waveform(x)
    ext.input_finished()
    return ext.get_frames(0, ext.num_frames_ready)


def _check_samples(x: np.ndarray, name: str) -> np.ndarray:
    if x.size == 0:
        raise ValueError(f"{name}: audio is empty (0 samples)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: audio contains NaN or infinite samples")
    return x


def to_mono_16k(x: np.ndarray, sr: int, target_sr: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """(S,) or (S, C) float array at ``sr`` -> float32 mono (S',) at ``target_sr`` (polyphase resampling)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    elif x.ndim != 1:
        raise ValueError(f"{name}: expected (samples,) or (samples, channels) audio, got shape {x.shape}")
    _check_samples(x, name)
    if sr != target_sr:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sr), int(target_sr))
        x = resample_poly(x, target_sr // g, int(sr) // g).astype(np.float32)
    return x


def load_audio_numpy(
    path_or_array: str | os.PathLike | np.ndarray, sample_rate: int | None = None, target_sr: int = SAMPLE_RATE
) -> np.ndarray:
    """Read an audio file (any format soundfile reads) or take an array; return float32 mono at 16 kHz.

    Args:
        path_or_array: a file path, or a ``(S,)`` / ``(S, C)`` float array (then ``sample_rate`` is required).
        sample_rate: the array's sample rate (ignored for files, which carry their own).

    Raises:
        ValueError: naming the file, if it is missing, unreadable, empty or has NaN/inf samples.
    """
    if isinstance(path_or_array, np.ndarray):
        if sample_rate is None:
            raise ValueError("sample_rate is required when passing an array")
        return to_mono_16k(path_or_array, sample_rate, target_sr, "array")
    import soundfile as sf

    path = Path(path_or_array)
    if not path.is_file():
        raise ValueError(f"audio file {path} does not exist")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError depending on the damage
        raise ValueError(f"audio file {path} is unreadable ({e}); expected a wav/flac/ogg file") from None
    return to_mono_16k(x, sr, target_sr, f"audio file {path}")


def fbank_file(path: str | os.PathLike, cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """:func:`fbank_numpy` of an audio file (read and resampled by :func:`load_audio_numpy`)."""
    return fbank_numpy(load_audio_numpy(path, target_sr=cfg.sample_rate), cfg)


def _fbank_file_job(args: tuple[str, dict]) -> np.ndarray | str:
    """Worker for the feature cache: float16 features, or the error message of an unreadable file."""
    path, cfg = args
    try:
        return fbank_file(path, FbankConfig.from_dict(cfg)).astype(np.float16)
    except ValueError as e:
        return str(e)
