"""Training-time augmentation: SpecAugment on features, speed perturbation and a speaker / room / noise / channel
chain on waveforms (library calls: audiomentations, pyroomacoustics, praat-parselmouth, soxr, torchaudio)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

__all__ = ["NOISE_COLORS", "SpecAugment", "SpecAugmentConfig", "WaveAugmentConfig", "augment_waveform",
           "random_speed_perturb", "seeded_global_rng", "speed_perturb"]


@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment (Park et al. 2019) settings; masks are filled with the utterance's mean feature value."""

    num_freq_masks: int = 2
    max_freq_width: int = 15  # bins, of 80
    num_time_masks: int = 2
    max_time_width: int = 40  # frames
    max_time_ratio: float = 0.2  # a time mask covers at most this fraction of the utterance
    time_warp: int = 0  # max warp distance in frames; 0 disables warping (WeNet uses 80 when on)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"SpecAugmentConfig.{f.name} must be >= 0, got {getattr(self, f.name)}")
        if self.max_time_ratio > 1:
            raise ValueError(f"max_time_ratio must be in [0, 1], got {self.max_time_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SpecAugmentConfig":
        return cls(**d)


def _randint(low: int, high: int, g: torch.Generator | None) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (1,), generator=g))


def time_warp(feats: torch.Tensor, window: int, g: torch.Generator | None = None) -> torch.Tensor:
    """Warp ``(T, F)`` along time: a random centre moves by up to ``window`` frames (linear interpolation)."""
    T = feats.shape[0]
    if window <= 0 or T <= 2 * window + 1:
        return feats
    centre = _randint(window, T - window - 1, g)
    warped = _randint(centre - window + 1, centre + window - 1, g)
    x = feats.t().unsqueeze(0)  # (1, F, T)
    left = torch.nn.functional.interpolate(x[..., :centre], size=warped, mode="linear", align_corners=False)
    right = torch.nn.functional.interpolate(x[..., centre:], size=T - warped, mode="linear", align_corners=False)
    return torch.cat([left, right], dim=-1)[0].t().contiguous()  # (T, F)


class SpecAugment:
    """Callable ``(T, F) -> (T, F)``: optional time warp, then frequency masks, then time masks (on a copy)."""

    def __init__(self, cfg: SpecAugmentConfig = SpecAugmentConfig()) -> None:
        self.cfg = cfg

    def __call__(self, feats: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if feats.dim() != 2:
            raise ValueError(f"SpecAugment expects (T, F) features, got shape {tuple(feats.shape)}")
        cfg, g = self.cfg, generator
        x = time_warp(feats, cfg.time_warp, g) if cfg.time_warp else feats.clone()
        T, F = x.shape
        if T == 0:
            return x
        fill = x.mean()
        for _ in range(cfg.num_freq_masks):
            w = _randint(0, min(cfg.max_freq_width, F), g)
            f0 = _randint(0, F - w, g)
            x[:, f0:f0 + w] = fill
        max_t = min(cfg.max_time_width, int(cfg.max_time_ratio * T))
        for _ in range(cfg.num_time_masks):
            w = _randint(0, max_t, g)
            t0 = _randint(0, T - w, g)
            x[t0:t0 + w, :] = fill
        return x


def speed_perturb(waveform: torch.Tensor, factor: float, sample_rate: int = 16000) -> torch.Tensor:
    """Play ``(S,)`` ``factor`` times faster (pitch changes too, as with sox ``speed``): length ``S / factor``."""
    if factor == 1.0:
        return waveform
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    from slimasr.audio import resample

    return torch.from_numpy(resample(waveform.detach().cpu().numpy(), int(round(sample_rate * factor)), sample_rate))


def random_speed_perturb(
    waveform: torch.Tensor, factors: Sequence[float] = (0.9, 1.0, 1.1), sample_rate: int = 16000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`speed_perturb` with a factor drawn uniformly from ``factors``."""
    return speed_perturb(waveform, factors[_randint(0, len(factors) - 1, generator)], sample_rate)


# --------------------------------------------------------------------------------------------------
# Waveform augmentation: new speakers, rooms, noise and channels from few voices (library calls)
# --------------------------------------------------------------------------------------------------
NOISE_COLORS = ("white", "pink", "brown", "blue", "violet")


@dataclass(frozen=True)
class WaveAugmentConfig:
    """Waveform augmentation chain applied at synthesis time (``slimasr data synth --augment P``).

    Each stage fires with its own probability, in this order (the order of a real recording: a speaker, in a
    room, with noise, through a channel):

    1. **speaker** (``p_speaker``): Praat's *Change gender* (PSOLA; via ``praat-parselmouth``): the formant
       frequencies are scaled by a factor in ``formant_ratio`` (vocal-tract-length perturbation) and the median
       pitch by a factor in ``pitch_ratio``; otherwise, with ``p_pitch``, an ``audiomentations.PitchShift`` of up to
       ``pitch_semitones``.
    2. **speed** (``p_speed``): ``soxr`` resampling by a factor in ``speed`` (sox ``speed``: tempo and pitch).
    3. **room** (``p_room``): ``audiomentations.RoomSimulator`` (a shoebox room simulated by ``pyroomacoustics``,
       image source method; RT60 in ``rt60`` seconds).
    4. **noise** (``p_noise``): ``audiomentations.AddColorNoise`` (white, pink, brown, blue or violet noise) at an
       SNR in ``snr_db``.
    5. **channel**: with ``p_telephone`` telephone band-limiting (``audiomentations.BandPassFilter`` 300-3400 Hz,
       then 8 kHz G.711 mu-law: ``torchaudio.functional.mu_law_encoding``); otherwise with ``p_codec`` MP3 artefacts
       (``audiomentations.Mp3Compression``, ``codec_kbps``).

    The result depends only on the input and the seed (:func:`augment_waveform`), bit for bit, whatever the thread
    settings (the room simulation runs on one thread).
    """

    p_speaker: float = 0.5
    formant_ratio: tuple[float, float] = (0.85, 1.2)
    pitch_ratio: tuple[float, float] = (0.7, 1.5)
    p_pitch: float = 0.3
    pitch_semitones: float = 3.0
    p_speed: float = 0.4
    speed: tuple[float, float] = (0.9, 1.1)
    p_room: float = 0.35
    rt60: tuple[float, float] = (0.15, 0.7)
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_telephone: float = 0.1
    p_codec: float = 0.1
    codec_kbps: tuple[int, int] = (16, 64)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= v <= 1.0:
                raise ValueError(f"WaveAugmentConfig.{f.name} must be a probability in [0, 1], got {v}")
            if isinstance(v, tuple) and not (len(v) == 2 and 0 < v[0] <= v[1]):
                raise ValueError(f"WaveAugmentConfig.{f.name} must be a range (low, high) with 0 < low <= high, "
                                 f"got {v}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WaveAugmentConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class seeded_global_rng:
    """Context manager: seed Python's and numpy's global generators (which audiomentations and pyroomacoustics
    draw from) for one call, and restore both afterwards, so a caller's random state is untouched."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        import random

        import numpy as np

        self._py, self._np = random.getstate(), np.random.get_state()
        random.seed(self.seed)
        np.random.seed(self.seed % 2 ** 32)

    def __exit__(self, *exc) -> None:
        import random

        import numpy as np

        random.setstate(self._py)
        np.random.set_state(self._np)


class _room_threads_pinned:
    """Context manager: pyroomacoustics builds room impulse responses with one thread for one call.

    Its fractional-delay builder (``pyroomacoustics.simulation.ism``, ``libroom`` ``rir_builder``) splits the image
    sources among ``constants["num_threads"]`` threads (default: ``PRA_NUM_THREADS``, ``OMP_NUM_THREADS`` or the CPU
    count) and sums their partial responses, so the float result depends on the thread count. The previous value is
    restored afterwards.
    """

    def __enter__(self) -> "_room_threads_pinned":
        from pyroomacoustics.parameters import constants

        self._threads = constants.get("num_threads")
        constants.set("num_threads", 1)
        return self

    def __exit__(self, *exc) -> None:
        from pyroomacoustics.parameters import constants

        constants.set("num_threads", self._threads)


def augment_waveform(x, sample_rate: int, seed: int, cfg: WaveAugmentConfig = WaveAugmentConfig()):
    """Apply the :class:`WaveAugmentConfig` chain to one utterance.

    Args:
        x: ``(S,)`` float32 waveform in [-1, 1].
        sample_rate: Hz.
        seed: the same ``(x, seed, cfg)`` always gives the same output.
        cfg: stage probabilities and ranges.

    Returns:
        ``(waveform (S',) float32 in [-1, 1], applied)``: ``S'`` differs from ``S`` when the speed stage fired;
        ``applied`` names the stages and their drawn settings (e.g. ``["speaker f=1.08 p=0.83", "noise"]``).

    Raises:
        ValueError: ``x`` is not a non-empty 1-D array.
        ImportError: ``audiomentations`` / ``praat-parselmouth`` / ``soxr`` are not installed
            (``pip install 'slimasr[voices]'``).
    """
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"augment_waveform expects a non-empty (S,) waveform, got shape {x.shape}")
    import audiomentations as A

    rng = np.random.default_rng(seed)
    applied: list[str] = []
    with seeded_global_rng(seed):
        if rng.random() < cfg.p_speaker:
            f, p = rng.uniform(*cfg.formant_ratio), rng.uniform(*cfg.pitch_ratio)
            x = _change_gender(x, sample_rate, f, p, seed)
            applied.append(f"speaker f={f:.2f} p={p:.2f}")
        elif rng.random() < cfg.p_pitch:
            s = cfg.pitch_semitones
            x = A.PitchShift(min_semitones=-s, max_semitones=s, p=1.0)(x, sample_rate)
            applied.append("pitch")
        if rng.random() < cfg.p_speed:
            import soxr

            f = rng.uniform(*cfg.speed)
            x = soxr.resample(x, sample_rate * f, sample_rate).astype(np.float32)
            applied.append(f"speed {f:.2f}")
        if rng.random() < cfg.p_room:
            with _room_threads_pinned():
                x = A.RoomSimulator(min_target_rt60=cfg.rt60[0], max_target_rt60=cfg.rt60[1], calculation_mode="rt60",
                                    use_ray_tracing=False, max_order=10, leave_length_unchanged=True,
                                    p=1.0)(x, sample_rate)
            applied.append("room")
        if rng.random() < cfg.p_noise:
            x = A.AddColorNoise(min_snr_db=cfg.snr_db[0], max_snr_db=cfg.snr_db[1], p=1.0)(x, sample_rate)
            applied.append("noise")
        if rng.random() < cfg.p_telephone:
            x = _telephone(x, sample_rate)
            applied.append("telephone")
        elif rng.random() < cfg.p_codec:
            x = A.Mp3Compression(min_bitrate=cfg.codec_kbps[0], max_bitrate=cfg.codec_kbps[1], p=1.0)(x, sample_rate)
            applied.append("mp3")
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.99:  # reverberation and noise can push past full scale: scale down rather than clip
        x = x * np.float32(0.99 / peak)
    return np.asarray(x, dtype=np.float32), applied


def _change_gender(x, sample_rate: int, formant_ratio: float, pitch_ratio: float, seed: int):
    """Praat's ``Change gender`` (pitch floor 75 Hz, ceiling 600 Hz; new median = old median x ``pitch_ratio``).

    Its overlap-add draws random numbers; Praat's generator is seeded for the call and set back to unpredictable
    seeding afterwards (Praat's ``random_initializeWithSeedUnsafelyButPredictably``).
    """
    import numpy as np
    import parselmouth
    from parselmouth.praat import call, run

    snd = parselmouth.Sound(x.astype(np.float64), sampling_frequency=sample_rate)
    pitch = call(snd, "To Pitch", 0.0, 75, 600)
    median = call(pitch, "Get quantile", 0, 0, 0.5, "Hertz")
    new_median = float(median) * pitch_ratio if np.isfinite(median) and median > 0 else 0.0
    run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed) % 2 ** 31})\n")
    try:
        out = call(snd, "Change gender", 75, 600, formant_ratio, new_median, 1.0, 1.0)
    finally:
        run("random_initializeSafelyAndUnpredictably ()\n")
    return out.values[0].astype(np.float32)


def _telephone(x, sample_rate: int):
    """300-3400 Hz band, 8 kHz sampling and 8-bit G.711 mu-law companding, back at ``sample_rate``."""
    import audiomentations as A
    import numpy as np
    import soxr
    import torch
    import torchaudio.functional as AF

    # centre 1850 Hz, bandwidth 3100 Hz: 300-3400 Hz (audiomentations: bandwidth = fraction x centre)
    y = A.BandPassFilter(min_center_freq=1850.0, max_center_freq=1850.0, min_bandwidth_fraction=3100 / 1850,
                         max_bandwidth_fraction=3100 / 1850, min_rolloff=24, max_rolloff=24, p=1.0)(x, sample_rate)
    y = soxr.resample(y, sample_rate, 8000)
    q = AF.mu_law_encoding(torch.from_numpy(np.clip(y, -1, 1).astype(np.float32)), 256)
    y = AF.mu_law_decoding(q, 256).numpy()
    return soxr.resample(y, 8000, sample_rate).astype(np.float32)
