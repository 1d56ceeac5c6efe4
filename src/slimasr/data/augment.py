"""Training-time augmentation: SpecAugment on features, speed perturbation on waveforms."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

__all__ = ["SpecAugment", "SpecAugmentConfig", "speed_perturb", "random_speed_perturb"]


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
