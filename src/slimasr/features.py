"""The front-end: audio samples -> the feature frames a model reads (torch-free: numpy and kaldi-native-fbank).

One definition serves training (feature cache and on-the-fly items), ``slimasr decode``, the runtime, the server
and bench. Its settings are part of the model: :class:`FrontendConfig` is saved in every checkpoint
(:meth:`slimasr.model.ASRModel.save`) and written into every export's metadata (key ``slimasr_frontend``), and
the runtime reads it back from there.

Entry points:

* :func:`compute_features` -- a whole utterance, ``(S,)`` samples -> ``(T, D)`` frames;
* :class:`OnlineFeatureExtractor` -- the same frames, bit for bit, from audio that arrives in pieces;
* :func:`num_frames` -- ``T`` for ``S`` samples.

The one kind implemented, ``"kaldi_fbank"``, is Kaldi's log-mel filterbank (``compute-fbank-feats``) with the
settings sherpa-onnx uses for WeNet-style CTC models, computed the way kaldi-native-fbank (sherpa-onnx's
front-end) computes it (see :class:`_FbankComputer`).

Input samples are float in [-1, 1]; :mod:`slimasr.audio` loads, mixes down, checks and resamples them. The
front-end itself never turns finite input into NaN/inf: samples are clamped to +-:data:`_SAFE_ABS_SAMPLE`
before scaling (far beyond any audio, far below float32 overflow in the power spectrum).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .frontends import StftComputer, StftMelConfig, stft_mel_features, stft_num_frames, utterance_normalize

__all__ = ["FRONTEND_KINDS", "FbankConfig", "FrontendConfig", "OnlineFeatureExtractor", "StreamFeatures",
           "check_audio_length", "compute_features", "min_num_samples", "num_frames"]

SAMPLE_RATE = 16000
FRONTEND_KINDS = ("kaldi_fbank", "stft_mel")   # FrontendConfig.kind values this module computes
# FrontendConfig.cmvn values: "global" (in the model), "utterance" (zero mean, unit variance), "utterance_mean"
# (ESPnet UtteranceMVN defaults: mean only), "utterance_nemo" (NeMo per_feature: unbiased std + 1e-5)
CMVN_KINDS = ("global", "utterance", "utterance_mean", "utterance_nemo")
_BLOCK_FRAMES = 32  # frames per vectorised fbank step (see _FbankComputer.features)
# |samples| are clamped to this before scaling: 1e6 * 32768 * (window and FFT gains < 2e3) squared stays < 1e30,
# so the float32 power spectrum, mel energies and their logs stay finite for any finite input.
_SAFE_ABS_SAMPLE = 1e6


def _fields_from_dict(cls, d: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what}: expected a mapping, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields in {what}: {', '.join(sorted(unknown))}")
    return dict(d)


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi-compatible fbank settings (Kaldi's ``FbankOptions``; Kaldi defaults except where noted)."""

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

    @property
    def dim(self) -> int:
        """Values per frame: ``num_mel_bins`` (+ 1 with ``use_energy``)."""
        return self.num_mel_bins + int(self.use_energy)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "fbank settings") -> "FbankConfig":
        return cls(**_fields_from_dict(cls, d, what))


@dataclass(frozen=True)
class FrontendConfig:
    """Everything between float samples and the encoder's input; part of the model (checkpoint and export).

    Attributes:
        kind: the feature computation, one of :data:`FRONTEND_KINDS` (``"kaldi_fbank"``: Kaldi log-mel fbank;
            ``"stft_mel"``: an STFT log-mel with a stored mel matrix, ESPnet's and NeMo's front-ends, see
            :mod:`slimasr.frontends`).
        fbank: its settings when ``kind == "kaldi_fbank"``.
        stft: its settings when ``kind == "stft_mel"`` (:class:`slimasr.frontends.StftMelConfig`).
        cmvn: ``"global"``: features go to the model as computed, and the model's encoder applies the global mean
            and inverse standard deviation it stores (WeNet's ``GlobalCMVN``; identity until set);
            ``"utterance"``: each utterance's features are normalised to zero mean and unit variance per bin
            before the model (ESPnet's ``UtteranceMVN``; whole utterances only, not streamable);
            ``"utterance_mean"``: the mean only (ESPnet's default ``utterance_mvn``); ``"utterance_nemo"``: NeMo's
            ``per_feature`` normalisation (unbiased standard deviation + 1e-5).
    """

    kind: str = "kaldi_fbank"
    fbank: FbankConfig = FbankConfig()
    cmvn: str = "global"
    stft: "StftMelConfig | None" = None

    def __post_init__(self) -> None:
        if isinstance(self.fbank, Mapping):           # from_dict / JSON give the nested config as a dict
            object.__setattr__(self, "fbank", FbankConfig.from_dict(self.fbank))
        if isinstance(self.stft, Mapping):
            object.__setattr__(self, "stft", StftMelConfig.from_dict(self.stft))
        if (self.kind == "stft_mel") != (self.stft is not None):
            raise ValueError("the stft settings belong to (and are needed by) kind 'stft_mel' only")
        if self.kind not in FRONTEND_KINDS:
            raise ValueError(f"unknown front-end kind {self.kind!r}; this slimasr computes {', '.join(FRONTEND_KINDS)}")
        if self.cmvn not in CMVN_KINDS:
            raise ValueError(f"unknown cmvn {self.cmvn!r}; expected one of {', '.join(CMVN_KINDS)}")

    @classmethod
    def for_model(cls, num_mel_bins: int) -> "FrontendConfig":
        """The default front-end for a model reading ``num_mel_bins`` features: Kaldi fbank with
        :class:`FbankConfig`'s defaults, global CMVN. Every slimasr checkpoint written before front-end settings
        were stored (checkpoint version 1, including the embedded default model) was trained with exactly this."""
        return cls(fbank=FbankConfig(num_mel_bins=int(num_mel_bins)))

    @property
    def sample_rate(self) -> int:
        """Hz; audio is resampled to this."""
        return self.stft.sample_rate if self.stft is not None else self.fbank.sample_rate

    @property
    def frame_shift(self) -> int:
        """Samples between frames (160 at 16 kHz)."""
        return self.stft.hop_length if self.stft is not None else self.fbank.frame_shift

    @property
    def frame_shift_ms(self) -> float:
        return self.stft.frame_shift_ms if self.stft is not None else self.fbank.frame_shift_ms

    @property
    def dim(self) -> int:
        """Values per frame (the model's ``num_mel_bins``)."""
        return self.stft.num_mel_bins if self.stft is not None else self.fbank.dim

    @property
    def streamable(self) -> bool:
        """Whether :class:`OnlineFeatureExtractor` can compute these features: per-utterance CMVN cannot (it needs
        the whole utterance); both kinds of features can."""
        return self.cmvn == "global"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "front-end settings") -> "FrontendConfig":
        return cls(**_fields_from_dict(cls, d, what))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, what: str = "front-end settings") -> "FrontendConfig":
        """Parse :meth:`to_json`'s output. Raises ValueError naming ``what`` if it is not valid JSON settings."""
        try:
            d = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{what}: not JSON ({e})") from None
        return cls.from_dict(d, what)


def _as_frontend(cfg: "FrontendConfig | FbankConfig") -> FrontendConfig:
    if isinstance(cfg, FrontendConfig):
        return cfg
    if isinstance(cfg, FbankConfig):
        return FrontendConfig(fbank=cfg)
    raise ValueError(f"expected a FrontendConfig, got {type(cfg).__name__}")


def num_frames(num_samples: int, cfg: "FrontendConfig | FbankConfig" = FrontendConfig()) -> int:
    """Number of feature frames for ``num_samples`` samples (what kaldi-native-fbank produces)."""
    fe = _as_frontend(cfg)
    if fe.stft is not None:
        return stft_num_frames(int(num_samples), fe.stft)
    return _computer(fe.fbank).num_frames(int(num_samples), flush=True)


def min_num_samples(frames: int, cfg: "FrontendConfig | FbankConfig" = FrontendConfig()) -> int:
    """The fewest samples for which :func:`num_frames` gives at least ``frames`` frames (its inverse)."""
    if num_frames(0, cfg) >= frames:             # e.g. a centred STFT has one frame for no samples
        return 0
    lo, hi = 0, 1
    while num_frames(hi, cfg) < frames:          # num_frames grows with the samples: double, then bisect
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if num_frames(mid, cfg) >= frames else (mid, hi)
    return hi


def check_audio_length(num_samples: int, cfg: "FrontendConfig | FbankConfig", min_frames: int,
                       name: str | None = None) -> None:
    """Refuse audio too short for one output frame of a model whose front-end is ``cfg``.

    Args:
        num_samples: samples at the front-end's rate.
        min_frames: feature frames the model needs for one encoder frame (:func:`slimasr.chunking.min_frames`:
            7 for the 4x convolutional subsampling).
        name: the input, for the message.
    Raises:
        ValueError: ``"[name: ]audio too short (D ms); at least M ms is needed (F feature frames for one output
            frame)"``, M from :func:`min_num_samples` (65 ms for 7 frames of Kaldi fbank, 25 ms windows every
            10 ms, not snipped at the edges).
    """
    if num_frames(num_samples, cfg) >= min_frames:
        return
    rate = _as_frontend(cfg).sample_rate

    def ms(samples: int, up: bool = False) -> str:         # a minimum is rounded up: that much always decodes
        x = 1000 * samples / rate
        return str(math.ceil(x) if up else round(x)) if x >= 10 or x == 0 else f"{x:.2g}"

    raise ValueError(f"{name + ': ' if name else ''}audio too short ({ms(num_samples)} ms); at least "
                     f"{ms(min_num_samples(min_frames, cfg), up=True)} ms is needed ({min_frames} feature frames "
                     f"for one output frame)")


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


class _FbankComputer:
    """Kaldi fbank of whole frames, vectorised over frames with numpy.

    The window and the mel filters are kaldi-native-fbank's own (``FeatureWindowFunction``, ``MelBanks``), and
    every step follows its ``ExtractWindow`` / ``ProcessWindow`` / ``FbankComputer::Compute``: reflection at
    the edges (``snip_edges=False``), dither, DC removal, raw log-energy, preemphasis, window, zero padding to
    a power of two, power spectrum, mel filters, ``log(max(x, float32 epsilon))``. The arithmetic is knf's:
    float32, sums in knf's order (so even the rounding residue of DC removal matches); only the FFT is
    numpy's (float64). Values agree with knf to its FFT's rounding: on 60 synthetic utterances mean |diff|
    2e-6, 99.9% of values within 2e-4, worst 0.013 (lowest mel bins of quiet frames); all-zero frames give
    ``log(float32 epsilon)`` in both.

    Each frame goes through the same element-wise and per-row operations (no matrix product, whose summation
    order may depend on the number of rows), so a frame's features do not depend on how many frames one call
    computes: streaming (a few frames at a time) and whole-utterance features are bit-identical.
    """

    def __init__(self, cfg: FbankConfig) -> None:
        import kaldi_native_fbank as knf

        opts = _knf_options(cfg)
        self.cfg = cfg
        self.length, self.shift = cfg.frame_length, cfg.frame_shift
        self.padded = 1 << (self.length - 1).bit_length()            # round_to_power_of_two
        self.window = np.asarray(knf.FeatureWindowFunction(opts.frame_opts).window, np.float32)  # (length,)
        mel = np.asarray(knf.MelBanks(opts.mel_opts, opts.frame_opts).get_matrix(), np.float32)  # (M, padded/2+1)
        if self.window.shape != (self.length,) or mel.shape != (cfg.num_mel_bins, self.padded // 2 + 1):
            raise RuntimeError(f"unexpected kaldi-native-fbank window {self.window.shape} / mel banks {mel.shape} "
                               f"for frame length {self.length}, FFT size {self.padded}")
        # Each mel bin is a run of consecutive FFT bins [lo, lo + width): as in Kaldi, energy = sum_j w_j p_{lo+j},
        # accumulated in that order. Stored as (W, M) indices and weights, zero weights past a bin's width.
        nz = mel != 0
        lo = np.where(nz.any(axis=1), nz.argmax(axis=1), 0)
        hi = np.where(nz.any(axis=1), mel.shape[1] - nz[:, ::-1].argmax(axis=1), 0)
        width = max(int((hi - lo).max()), 1)
        j = np.arange(width)[:, None]
        self._mel_idx = np.minimum(lo[None, :] + j, mel.shape[1] - 1)                          # (W, M)
        self._mel_w = np.where(lo[None, :] + j < hi[None, :], mel[np.arange(mel.shape[0])[None, :], self._mel_idx],
                               np.float32(0))[..., None]                                    # (W, M, 1) float32
        self.eps = np.finfo(np.float32).eps
        self.log_energy_floor = float(np.log(cfg.energy_floor)) if cfg.energy_floor > 0 else None
        self.dim = cfg.dim

    def first_sample(self, frame: int) -> int:
        """Absolute index of the first sample of ``frame`` (negative: reflected at the start)."""
        if self.cfg.snip_edges:
            return frame * self.shift
        return frame * self.shift + self.shift // 2 - self.length // 2

    def num_frames(self, num_samples: int, flush: bool) -> int:
        """Frames computable from ``num_samples`` samples; without ``flush`` only frames that lie wholly within
        them (knf's ``NumFrames``)."""
        if self.cfg.snip_edges:
            return 0 if num_samples < self.length else 1 + (num_samples - self.length) // self.shift
        n = (num_samples + self.shift // 2) // self.shift
        if flush:
            return n
        # the last frame must end at or before num_samples
        return max(0, min(n, (num_samples - self.length - self.first_sample(0)) // self.shift + 1))

    def extract(self, samples: np.ndarray, offset: int, total: int, f0: int, f1: int) -> np.ndarray:
        """The raw samples of frames ``f0 .. f1 - 1``: ``(f1 - f0, length)`` float32.

        Args:
            samples: float32 samples (already scaled) from absolute index ``offset`` on.
            total: samples of the signal so far; indices outside ``[0, total)`` are reflected as Kaldi does.
        """
        a, b = self.first_sample(f0), self.first_sample(f1 - 1) + self.length
        if a >= offset and b <= total:
            seg = samples[a - offset: b - offset]
        else:
            idx = np.arange(a, b) % (2 * total)                    # symmetric extension, period 2 * total
            idx = np.where(idx >= total, 2 * total - 1 - idx, idx) - offset
            if idx.min() < 0 or idx.max() >= samples.size:
                raise RuntimeError(f"frames {f0}..{f1 - 1} need samples that were already discarded")
            seg = samples[idx]
        step = seg.strides[0]                                      # as_strided: a tenth of sliding_window_view's cost
        return as_strided(seg, shape=(f1 - f0, self.length), strides=(self.shift * step, step)).copy()

    def features(self, samples: np.ndarray, offset: int, total: int, f0: int, f1: int,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        """Features of frames ``f0 .. f1 - 1`` (see :meth:`extract` for the arguments): float32 ``(f1 - f0, dim)``.

        Computed :data:`_BLOCK_FRAMES` frames at a time: the temporaries stay small, which matters more than
        the per-call overhead (large temporaries are fresh memory pages every call: page faults).
        """
        out = np.empty((f1 - f0, self.dim), np.float32)
        for a in range(f0, f1, _BLOCK_FRAMES):
            b = min(f1, a + _BLOCK_FRAMES)
            out[a - f0: b - f0] = self.compute(self.extract(samples, offset, total, a, b), rng)
        return out

    def compute(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Features of raw frames: ``(n, length)`` float32 (modified in place) -> float32 ``(n, dim)``."""
        cfg = self.cfg
        n = frames.shape[0]
        if cfg.dither != 0.0:
            noise = (rng or np.random.default_rng()).standard_normal(frames.shape, dtype=np.float32)
            frames += noise * np.float32(cfg.dither)
        if cfg.remove_dc_offset:   # knf sums in order in float32 (cumsum does too; np.sum would sum pairwise)
            frames -= (np.cumsum(frames, axis=1)[:, -1:] / np.float32(self.length)).astype(np.float32)
        if cfg.use_energy:         # knf's raw energy: after DC removal, before preemphasis and window
            energy = np.cumsum(frames * frames, axis=1)[:, -1]
            log_energy = np.log(np.maximum(energy, self.eps))
            if self.log_energy_floor is not None:
                log_energy = np.maximum(log_energy, np.float32(self.log_energy_floor))
        c = np.float32(cfg.preemph_coeff)
        if c != 0:
            frames[:, 1:] -= c * frames[:, :-1]                    # the right side is a temporary: old values
            frames[:, 0] -= c * frames[:, 0]
        padded = np.zeros((n, self.padded))                        # float64 FFT: knf's rounds differently
        np.multiply(frames, self.window, out=padded[:, : self.length])
        spec = np.fft.rfft(padded)                                 # (n, padded/2 + 1)
        re, im = spec.real.T.astype(np.float32), spec.imag.T.astype(np.float32)   # knf keeps float32 results
        power = re * re + im * im                                  # (padded/2 + 1, n)
        terms = np.take(power, self._mel_idx, axis=0)              # (W, M, n); take: faster than indexing
        terms *= self._mel_w
        mel = terms[0]                                             # (M, n), summed in knf's order
        for j in range(1, terms.shape[0]):
            mel += terms[j]
        np.maximum(mel, self.eps, out=mel)
        np.log(mel, out=mel)
        out = np.empty((n, self.dim), np.float32)
        out[:, self.dim - cfg.num_mel_bins:] = mel.T
        if cfg.use_energy:
            out[:, 0] = log_energy
        return out


@lru_cache(maxsize=8)
def _computer(cfg: FbankConfig) -> _FbankComputer:
    return _FbankComputer(cfg)


def _scaled(samples: np.ndarray, cfg: "FbankConfig | StftMelConfig") -> np.ndarray:
    """Float samples in [-1, 1] -> float32 at ``cfg.sample_scale``, clamped so that no finite input can overflow."""
    x = np.asarray(samples, dtype=np.float32)
    return np.clip(x, -_SAFE_ABS_SAMPLE, _SAFE_ABS_SAMPLE) * np.float32(cfg.sample_scale)


def _utterance_mvn(feats: np.ndarray) -> np.ndarray:
    """Per-bin zero mean, unit variance over the utterance (ESPnet ``UtteranceMVN`` with variance norm)."""
    if feats.shape[0] == 0:
        return feats
    f = feats.astype(np.float64)
    mean = f.mean(axis=0)
    std = np.sqrt(np.maximum((f * f).mean(axis=0) - mean * mean, 1e-20))
    return ((f - mean) / std).astype(np.float32)


def _normalize(feats: np.ndarray, cmvn: str) -> np.ndarray:
    """The per-utterance part of :attr:`FrontendConfig.cmvn` (``global`` CMVN happens inside the model)."""
    if cmvn == "utterance":
        return _utterance_mvn(feats)
    if cmvn in ("utterance_mean", "utterance_nemo"):
        return utterance_normalize(feats, cmvn)
    return feats


class OnlineFeatureExtractor:
    """Streaming features: feed float samples in [-1, 1] as they arrive, read frames as they become ready.

    Frames are indexed from the start of the stream; ``get_frames(start, n)`` returns ``(n, cfg.dim)``
    (with ``use_energy`` the log-energy first). A frame is computed as soon as its samples have arrived (frames
    that need the reflected end of the signal at ``input_finished``), exactly as kaldi-native-fbank's
    ``OnlineFbank`` does, and equals :func:`compute_features` of the whole signal bit for bit. The STFT log-mel
    front-ends stream the same way (:class:`slimasr.frontends.StftComputer`; equal to the whole-utterance
    features to float32 rounding of the mel product).

    Raises:
        ValueError: for a front-end that needs the whole utterance (per-utterance ``cmvn``).
    """

    def __init__(self, cfg: "FrontendConfig | FbankConfig" = FrontendConfig()) -> None:
        self.frontend = _as_frontend(cfg)
        if not self.frontend.streamable:
            raise ValueError(f"front-end {self.frontend.kind} with cmvn={self.frontend.cmvn!r} needs whole "
                             "utterances; it cannot run on a stream (decode offline)")
        stft = self.frontend.stft
        self.cfg = stft if stft is not None else self.frontend.fbank   # sample_rate, sample_scale
        self._comp = StftComputer(stft) if stft is not None else _computer(self.cfg)
        self._rng = np.random.default_rng() if getattr(self.cfg, "dither", 0.0) != 0.0 else None
        self._samples = np.zeros(0, np.float32)   # scaled samples from absolute index _offset on
        self._offset = 0
        self._total = 0                           # samples accepted
        self._feats = np.zeros((0, self._comp.dim), np.float32)  # rows: frames _feats_start .. (capacity)
        self._feats_start = 0
        self._ready = 0
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
            self._samples = np.concatenate((self._samples, _scaled(x, self.cfg)))
            self._total += x.size
            self._compute(flush=False)

    def input_finished(self) -> None:
        """Flush: the last frames (which need right context) become ready."""
        if not self._finished:
            self._finished = True
            self._compute(flush=True)

    def _compute(self, flush: bool) -> None:
        comp = self._comp
        n = comp.num_frames(self._total, flush)
        if n > self._ready:
            self._append(comp.features(self._samples, self._offset, self._total, self._ready, n, self._rng))
            self._ready = n
        drop = min(comp.first_sample(self._ready) - self._offset, self._samples.size)  # no later frame needs them
        if drop > 0:
            self._samples = self._samples[drop:]
            self._offset += drop

    def _append(self, feats: np.ndarray) -> None:
        used = self._ready - self._feats_start
        if used + feats.shape[0] > self._feats.shape[0]:          # grow, dropping the discarded frames
            live = self._feats[self._popped - self._feats_start: used]
            new = np.empty((max(2 * (live.shape[0] + feats.shape[0]), 256), self._comp.dim), np.float32)
            new[: live.shape[0]] = live
            self._feats, self._feats_start, used = new, self._popped, live.shape[0]
        self._feats[used: used + feats.shape[0]] = feats

    @property
    def num_frames_ready(self) -> int:
        return self._ready

    def samples_needed(self, frames: int) -> int:
        """Samples still to accept (beyond those accepted so far) before ``frames`` frames are ready without
        :meth:`input_finished`: the smallest such count, 0 when they already are."""
        comp, total = self._comp, self._total
        if comp.num_frames(total, False) >= frames:
            return 0
        lo, hi = 0, self.frontend.frame_shift
        while comp.num_frames(total + hi, False) < frames:   # num_frames grows with the samples: search
            lo, hi = hi, 2 * hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if comp.num_frames(total + mid, False) >= frames else (mid, hi)
        return hi

    @property
    def finished(self) -> bool:
        return self._finished

    def discard_before(self, frame: int) -> None:
        """Free the frames before ``frame`` (absolute index); later frames keep their indices. Long streams call
        this as chunks are consumed, so memory stays bounded (an hour would otherwise hold ~140 MB)."""
        self._popped = max(self._popped, min(int(frame), self._ready))

    def get_frames(self, start: int, n: int) -> np.ndarray:
        """Frames ``start .. start + n - 1`` as float32 ``(n, dim)``."""
        if start < self._popped:
            raise ValueError(f"frame {start} was already discarded (first available: {self._popped})")
        if start < 0 or n < 0 or start + n > self._ready:
            raise ValueError(f"frames [{start}, {start + n}) requested, {self._ready} ready")
        a = start - self._feats_start
        return self._feats[a: a + n].copy()


class StreamFeatures:
    """A stream's audio intake: samples at any sample rate -> the model's features, as they arrive.

    Locks the stream to the sample rate of its first :meth:`accept_waveform` call, resamples to the front-end's
    rate (:class:`slimasr.audio.StreamResampler`, equal to resampling the whole signal) and feeds
    :attr:`features` (an :class:`OnlineFeatureExtractor`), whose frames the stream's decoder reads. Both the
    runtime's :class:`slimasr.runtime.Stream` and the PyTorch backend's stream take audio through it.

    Raises:
        ValueError: for a front-end that needs whole utterances (see :class:`OnlineFeatureExtractor`).
    """

    def __init__(self, frontend: "FrontendConfig | FbankConfig") -> None:
        self.features = OnlineFeatureExtractor(frontend)
        self.frontend = self.features.frontend
        self.sample_rate: int | None = None      # Hz of the caller's audio, fixed by the first call
        self.samples_in = 0                      # samples accepted, at ``sample_rate``
        self.is_input_finished = False
        self._resampler = None

    def accept_waveform(self, sample_rate: int, samples) -> None:
        """Append audio: ``(S,)`` or ``(S, channels)`` samples at ``sample_rate`` Hz, float in [-1, 1] or integer
        PCM (:func:`slimasr.audio.to_float_mono`).

        Raises:
            ValueError: empty, NaN/inf or far out-of-range samples, a non-positive or changed sample rate, or
                audio after :meth:`input_finished`. Nothing of a refused call is kept.
        """
        from .audio import StreamResampler, to_float_mono

        x = to_float_mono(samples, "accept_waveform")
        sample_rate = int(sample_rate)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if self.is_input_finished:
            raise ValueError("accept_waveform after input_finished(); create a new stream")
        if self.sample_rate is None:
            self.sample_rate = sample_rate
            if sample_rate != self.frontend.sample_rate:
                self._resampler = StreamResampler(sample_rate, self.frontend.sample_rate)
        elif sample_rate != self.sample_rate:
            raise ValueError(f"sample rate changed within a stream: {self.sample_rate} Hz, now {sample_rate} Hz")
        self.samples_in += x.size
        if self._resampler is not None:
            x = self._resampler.accept(x)
        if x.size:
            self.features.accept_waveform(x)

    @property
    def resampling(self) -> bool:
        """Whether the audio is resampled (its sample rate is not the front-end's)."""
        return self._resampler is not None

    def input_finished(self, tail_samples: int = 0) -> None:
        """No more audio: flushes the resampler, appends ``tail_samples`` zeros at the front-end's rate (the
        sherpa-onnx end-of-stream padding, :meth:`slimasr.chunking.EndOfStream.tail_samples`) and flushes the
        feature extractor. Later calls do nothing."""
        if self.is_input_finished:
            return
        if self._resampler is not None:
            rest = self._resampler.flush()
            if rest.size:
                self.features.accept_waveform(rest)
        if tail_samples:
            self.features.accept_waveform(np.zeros(tail_samples, dtype=np.float32))
        self.features.input_finished()
        self.is_input_finished = True


def compute_features(samples: np.ndarray, cfg: "FrontendConfig | FbankConfig" = FrontendConfig(), *,
                     dither: float | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Whole-utterance features of float samples in [-1, 1]: ``(S,)`` -> float32 ``(T, cfg.dim)``.

    ``T = num_frames(S)`` (0 for fewer than half a frame shift of samples). Kaldi fbank values are
    kaldi-native-fbank's ``OnlineFbank`` ones (to its float32 FFT's rounding) and, bit for bit, those of
    :class:`OnlineFeatureExtractor` fed the samples in any pieces.

    Args:
        samples: ``(S,)`` float samples at ``cfg.sample_rate`` (see :mod:`slimasr.audio`).
        cfg: the front-end (a bare :class:`FbankConfig` means Kaldi fbank with global CMVN).
        dither: Gaussian dither amplitude (int16 scale) instead of the config's; training may pass e.g. 1.0,
            evaluation never does.
        rng: the generator for dither noise (default: a fresh one).
    Raises:
        ValueError: ``samples`` is not 1-D.
    """
    fe = _as_frontend(cfg)
    if fe.stft is not None:
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D waveform (S,), got shape {x.shape}")
        return _normalize(stft_mel_features(np.clip(x, -_SAFE_ABS_SAMPLE, _SAFE_ABS_SAMPLE), fe.stft), fe.cmvn)
    fb = fe.fbank
    if dither is not None and dither != fb.dither:
        fb = dataclasses.replace(fb, dither=float(dither))
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform (S,), got shape {x.shape}")
    comp = _computer(fb)
    t = comp.num_frames(x.size, flush=True)
    if t == 0:
        return np.empty((0, comp.dim), np.float32)
    if fb.dither != 0.0 and rng is None:
        rng = np.random.default_rng()
    feats = comp.features(_scaled(x, fb), 0, x.size, 0, t, rng)
    return _normalize(feats, fe.cmvn)


def file_features(path, cfg: "FrontendConfig | FbankConfig" = FrontendConfig()) -> np.ndarray:
    """:func:`compute_features` of an audio file read by :func:`slimasr.audio.load_audio` at the front-end's rate.

    Raises:
        slimasr.audio.AudioError: naming the file (missing, unreadable, empty, bad samples).
    """
    from .audio import load_audio

    fe = _as_frontend(cfg)
    return compute_features(load_audio(path, fe.sample_rate), fe)
