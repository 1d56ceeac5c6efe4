"""Log-mel filterbank features in torch (training side).

:func:`compute_fbank` uses ``torchaudio.compliance.kaldi.fbank`` with exactly the :class:`~slimasr.features.FbankConfig`
settings that the torch-free runtime (kaldi-native-fbank) and sherpa-onnx use; ``tests/test_features.py`` checks
the two agree.
"""
from __future__ import annotations

import torch

from slimasr.features import FbankConfig

__all__ = ["FbankConfig", "compute_fbank"]


def compute_fbank(
    waveform: torch.Tensor, cfg: FbankConfig = FbankConfig(), dither: float | None = None
) -> torch.Tensor:
    """Fbank of a mono float waveform in [-1, 1].

    Args:
        waveform: ``(S,)`` samples at ``cfg.sample_rate``.
        cfg: feature settings.
        dither: Gaussian dither amplitude (int16 scale) to use instead of ``cfg.dither``; give e.g. 1.0 during
            training only, never at evaluation.

    Returns:
        float32 ``(T, cfg.num_mel_bins)`` with ``T = (S + shift // 2) // shift`` (``snip_edges=False``).
    """
    import torchaudio.compliance.kaldi as kaldi

    if waveform.dim() != 1:
        raise ValueError(f"expected a 1-D waveform (S,), got shape {tuple(waveform.shape)}")
    if waveform.shape[0] < cfg.frame_length:
        # torchaudio needs at least one full window; Kaldi reflects the edges instead. These few frames are
        # computed by kaldi-native-fbank (the same algorithm), without dither.
        from slimasr.features import fbank_numpy

        return torch.from_numpy(fbank_numpy(waveform.detach().to(torch.float32).cpu().numpy(), cfg))
    x = waveform.to(torch.float32).unsqueeze(0) * cfg.sample_scale  # (1, S)
    return kaldi.fbank(
        x,
        sample_frequency=float(cfg.sample_rate),
        num_mel_bins=cfg.num_mel_bins,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
        window_type=cfg.window,
        low_freq=cfg.low_freq,
        high_freq=cfg.high_freq,
        dither=float(cfg.dither if dither is None else dither),
        snip_edges=cfg.snip_edges,
        use_energy=cfg.use_energy,
        energy_floor=cfg.energy_floor,
        remove_dc_offset=cfg.remove_dc_offset,
        preemphasis_coefficient=cfg.preemph_coeff,
    )  # (T, num_mel_bins)
