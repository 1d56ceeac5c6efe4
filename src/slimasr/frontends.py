"""STFT log-mel front-ends of imported models (torch-free: numpy only).

Two toolkits compute their features with an STFT and a mel matrix instead of Kaldi's fbank:

* ESPnet's ``DefaultFrontend`` (``espnet2/asr/frontend/default.py``, ``espnet2/layers/stft.py``,
  ``espnet2/layers/log_mel.py``): periodic Hann window of ``win_length`` centred in ``n_fft``, reflect padding by
  ``n_fft // 2`` at both ends, power spectrum, mel matrix (``frontend.logmel.melmat`` in the checkpoint),
  ``log(max(x, 1e-10))``; then ``utterance_mvn`` (mean only, by default) or a global mean/variance that the model's
  encoder applies.
* NeMo's ``AudioToMelSpectrogramPreprocessor`` (``nemo/collections/asr/parts/preprocessing/features.py``,
  ``FilterbankFeatures``): pre-emphasis 0.97, symmetric Hann window of 400 samples centred in ``n_fft`` 512, zero
  padding, magnitude squared, mel matrix (``preprocessor.featurizer.fb``), ``log(x + 2^-24)``, then per-feature
  normalisation over the utterance (mean and unbiased standard deviation + 1e-5).

Both mel matrices come from the source checkpoint and travel with the model in :class:`StftMelConfig` (inside
:class:`slimasr.features.FrontendConfig`, ``kind="stft_mel"``), so nothing is recomputed or guessed. The
per-utterance normalisations are :func:`utterance_normalize`; they need the whole utterance.

Whole utterances (:func:`stft_mel_features`) and streams (:class:`slimasr.features.OnlineFeatureExtractor`) run
one computation, :class:`StftComputer`: a frame is computed as soon as the samples it reads have arrived; the
centre padding at the start reflects samples that have arrived, the padding at the end waits for the end of the
input. So the log-mel features of a model whose normalisation is global (ESPnet's ``global_mvn``, applied inside
the encoder) stream, and equal the whole-utterance ones.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["StftComputer", "StftMelConfig", "encode_matrix", "stft_mel_features", "utterance_normalize",
           "stft_num_frames", "UTTERANCE_NORMS"]

WINDOWS = ("hann", "hann_symmetric")
PAD_MODES = ("reflect", "constant")
LOG_GUARDS = ("clamp", "add")
# Per-utterance normalisations defined here (slimasr.features.FrontendConfig.cmvn): "utterance_mean" (ESPnet
# UtteranceMVN defaults: subtract the mean), "utterance_nemo" (NeMo per_feature: unbiased std + 1e-5).
UTTERANCE_NORMS = ("utterance_mean", "utterance_nemo")
_NEMO_STD_CONSTANT = 1e-5


def encode_matrix(m: np.ndarray) -> str:
    """A float32 matrix as base64 of its little-endian bytes (row-major)."""
    return base64.b64encode(np.ascontiguousarray(m, dtype="<f4").tobytes()).decode("ascii")


@dataclass(frozen=True)
class StftMelConfig:
    """STFT -> power spectrum -> mel matrix -> log -> per-utterance normalisation (see the module docstring).

    Attributes:
        sample_rate: Hz. n_fft / win_length / hop_length: samples.
        window: ``hann`` (periodic, ``torch.hann_window`` default: ESPnet) or ``hann_symmetric`` (NeMo).
        center: pad ``n_fft // 2`` samples at both ends (``pad_mode`` ``reflect``: ESPnet; ``constant``: NeMo).
        preemph: ``x[t] - preemph * x[t-1]`` before the STFT (NeMo 0.97; 0 = off). sample_scale: multiplies the
            float samples in [-1, 1] first.
        log_guard: ``clamp`` = log(max(x, v)) (ESPnet), ``add`` = log(x + v) (NeMo), v = ``log_guard_value``.
        mel_matrix: (n_fft // 2 + 1, num_mel_bins) float32 as base64 (:func:`encode_matrix`), from the checkpoint.
        trim_last_frame: keep ``S // hop`` frames, not ``1 + S // hop`` (NeMo's ``get_seq_len``: the last centred
            frame is padding, excluded from the normalisation statistics and from the encoder's input).
    """

    num_mel_bins: int = 80
    mel_matrix: str = ""
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 128
    window: str = "hann"
    center: bool = True
    pad_mode: str = "reflect"
    preemph: float = 0.0
    sample_scale: float = 1.0
    log_guard: str = "clamp"
    log_guard_value: float = 1e-10
    trim_last_frame: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (("window", self.window, WINDOWS), ("pad_mode", self.pad_mode, PAD_MODES),
                                     ("log_guard", self.log_guard, LOG_GUARDS)):
            if value not in allowed:
                raise ValueError(f"unsupported STFT front-end {name} {value!r}; supported: {', '.join(allowed)}")
        if not 0 < self.win_length <= self.n_fft or self.hop_length <= 0:
            raise ValueError(f"need 0 < win_length <= n_fft and hop_length > 0, got {self.win_length}, "
                             f"{self.n_fft}, {self.hop_length}")
        if self.mel_matrix and self.mel.shape != (self.n_fft // 2 + 1, self.num_mel_bins):
            raise ValueError(f"mel matrix must be ({self.n_fft // 2 + 1}, {self.num_mel_bins}), got {self.mel.shape}")

    @property
    def mel(self) -> np.ndarray:
        """(n_fft // 2 + 1, num_mel_bins) float32 mel matrix."""
        m = np.frombuffer(base64.b64decode(self.mel_matrix), dtype="<f4")
        return m.reshape(self.n_fft // 2 + 1, -1).astype(np.float32)

    @property
    def frame_shift_ms(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "STFT front-end settings") -> "StftMelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown StftMelConfig fields in {what}: {', '.join(sorted(unknown))}")
        return cls(**d)


def stft_num_frames(num_samples: int, cfg: StftMelConfig) -> int:
    """Frames of :func:`stft_mel_features` for ``num_samples`` samples: ``1 + S // hop`` when centred."""
    if cfg.center:
        return num_samples // cfg.hop_length + (0 if cfg.trim_last_frame else 1)
    return 0 if num_samples < cfg.n_fft else 1 + (num_samples - cfg.n_fft) // cfg.hop_length


def _window(cfg: StftMelConfig) -> np.ndarray:
    n = cfg.win_length
    denom = n if cfg.window == "hann" else n - 1
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / max(denom, 1))
    left = (cfg.n_fft - n) // 2                                   # torch.stft centres a short window in n_fft
    out = np.zeros(cfg.n_fft, np.float64)
    out[left:left + n] = w
    return out.astype(np.float32)


class StftComputer:
    """The frames of :func:`stft_mel_features`, computable from a stream (the interface of slimasr.features'
    Kaldi fbank computer: :meth:`first_sample`, :meth:`num_frames`, :meth:`features`).

    Frame ``t`` reads the (pre-emphasised) samples ``t * hop - n_fft // 2 .. + n_fft`` when centred; indices
    before 0 and from the end of the input on are the centre padding (``reflect``: mirrored without repeating
    the edge sample, as ``torch.stft`` / ``np.pad``; ``constant``: zeros).
    """

    def __init__(self, cfg: StftMelConfig) -> None:
        if not cfg.mel_matrix:
            raise ValueError("the STFT front-end has no mel matrix (it comes from the imported checkpoint)")
        self.cfg = cfg
        self.half = cfg.n_fft // 2 if cfg.center else 0
        self.window = _window(cfg).astype(np.float64)
        self.mel = cfg.mel
        self.dim = cfg.num_mel_bins

    def first_sample(self, frame: int) -> int:
        """Absolute index of the first sample ``frame`` reads (one earlier with pre-emphasis; negative: padding)."""
        return frame * self.cfg.hop_length - self.half - (1 if self.cfg.preemph else 0)

    def num_frames(self, num_samples: int, flush: bool) -> int:
        """Frames computable from ``num_samples`` samples: all of them (:func:`stft_num_frames`) at the end of the
        input, else those whose samples, and the samples their start padding reflects, have all arrived."""
        cfg = self.cfg
        if self.half and cfg.pad_mode == "reflect" and num_samples <= self.half:
            return 0                                   # frame 0 mirrors sample n_fft // 2 (a stream this short
        total = stft_num_frames(num_samples, cfg)      # has no frames; whole utterances refuse it)
        if flush:
            return total
        n = (num_samples - cfg.n_fft + self.half) // cfg.hop_length + 1     # frames ending within the input
        return max(0, min(n, total))

    def features(self, samples: np.ndarray, offset: int, total: int, f0: int, f1: int,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        """Log-mel features of frames ``f0 .. f1 - 1``: float32 ``(f1 - f0, num_mel_bins)``.

        Args:
            samples: float32 samples (already scaled) from absolute index ``offset`` on.
            total: samples of the input so far (the end padding starts there once the input is finished).
            rng: unused (no dither in these front-ends).
        """
        cfg = self.cfg
        if f1 <= f0:
            return np.zeros((0, self.dim), np.float32)
        j = (np.arange(f0, f1)[:, None] * cfg.hop_length - self.half) + np.arange(cfg.n_fft)[None, :]
        inside = (j >= 0) & (j < total)
        if cfg.pad_mode == "reflect":
            j = np.abs(j)
            j = np.where(j >= total, 2 * (total - 1) - j, j)
            inside = np.ones_like(inside)
        j = np.clip(j, 0, total - 1)
        lo = int(j.min()) - (1 if cfg.preemph and j.min() > 0 else 0)
        if lo < offset or int(j.max()) >= offset + samples.size:
            raise RuntimeError(f"frames {f0}..{f1 - 1} need samples {lo}..{int(j.max())}, held: {offset}.."
                               f"{offset + samples.size - 1}")
        x = samples[j - offset]
        if cfg.preemph:                                     # x[t] - c x[t - 1]; x[0] kept
            prev = np.where(j > 0, samples[np.maximum(j - 1 - offset, 0)], np.float32(0))
            x = x - np.float32(cfg.preemph) * prev
        x = np.where(inside, x, np.float32(0))
        spec = np.fft.rfft(x.astype(np.float64) * self.window, n=cfg.n_fft, axis=-1)
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)       # (n, n_fft // 2 + 1)
        mel = power @ self.mel
        if cfg.log_guard == "clamp":
            return np.log(np.maximum(mel, np.float32(cfg.log_guard_value))).astype(np.float32)
        return np.log(mel + np.float32(cfg.log_guard_value)).astype(np.float32)


def stft_mel_features(samples: np.ndarray, cfg: StftMelConfig) -> np.ndarray:
    """(S,) float samples in [-1, 1] -> (T, num_mel_bins) float32 log-mel features, T = :func:`stft_num_frames`.

    Raises:
        ValueError: the front-end has no mel matrix, or the input is too short for one frame.
    """
    comp = StftComputer(cfg)
    x = np.asarray(samples, dtype=np.float32).reshape(-1) * np.float32(cfg.sample_scale)
    if cfg.center and cfg.pad_mode == "reflect" and 0 < x.size <= comp.half:
        raise ValueError(f"input too short for the STFT front-end: {x.size} samples, need more than {comp.half}")
    n = stft_num_frames(x.size, cfg) if x.size else 0
    return comp.features(x, 0, x.size, 0, n)


def utterance_normalize(feats: np.ndarray, kind: str) -> np.ndarray:
    """Per-utterance, per-feature normalisation of (T, F) features (:data:`UTTERANCE_NORMS`); float32.

    ``utterance_mean``: ESPnet ``utterance_mvn`` (``espnet2/layers/utterance_mvn.py``) with its defaults
    (``norm_means=True, norm_vars=False``); ``utterance_nemo``: NeMo ``normalize_batch(..., "per_feature")``.
    """
    if kind not in UTTERANCE_NORMS:
        raise ValueError(f"unsupported utterance normalisation {kind!r}; supported: {', '.join(UTTERANCE_NORMS)}")
    if feats.shape[0] == 0:
        return feats
    x = feats.astype(np.float32)
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    x = x - mean
    if kind == "utterance_nemo":
        n = x.shape[0]
        std = np.sqrt((x.astype(np.float64) ** 2).sum(axis=0) / max(n - 1, 1)) if n > 1 else np.zeros(x.shape[1])
        x = x / (std + _NEMO_STD_CONSTANT).astype(np.float32)
    return x.astype(np.float32)
