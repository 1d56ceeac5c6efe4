"""Waveform augmentation chain: deterministic per seed, each stage does what it says, bad input is refused."""
import random

import numpy as np
import pytest

pytest.importorskip("audiomentations", reason="audiomentations is not installed (pip install 'slimasr[voices]')")
pytest.importorskip("parselmouth", reason="praat-parselmouth is not installed (pip install 'slimasr[voices]')")

from slimasr.data.augment import WaveAugmentConfig, augment_waveform, seeded_global_rng  # noqa: E402

SR = 16000
OFF = dict(p_speaker=0.0, p_pitch=0.0, p_speed=0.0, p_room=0.0, p_noise=0.0, p_telephone=0.0, p_codec=0.0)


def _voiced(seconds: float = 1.5, f0: float = 120.0) -> np.ndarray:
    """A crude voiced sound: harmonics of ``f0`` with a slow amplitude envelope (Praat finds a pitch in it)."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 25))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)
    return (0.3 * x / np.abs(x).max() * env).astype(np.float32)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())


def test_same_seed_same_output_and_caller_rng_untouched():
    x = _voiced()
    cfg = WaveAugmentConfig(p_speaker=1.0, p_speed=1.0, p_room=1.0, p_noise=1.0, p_codec=1.0)
    random.seed(5)
    np.random.seed(5)
    before = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    a, applied_a = augment_waveform(x, SR, seed=11, cfg=cfg)
    after = (random.random(), np.random.rand())
    assert before == after  # the global generators the libraries use are restored
    b, applied_b = augment_waveform(x, SR, seed=11, cfg=cfg)
    np.testing.assert_array_equal(a, b)
    assert applied_a == applied_b and [s.split()[0] for s in applied_a] == ["speaker", "speed", "room", "noise", "mp3"]
    c, _ = augment_waveform(x, SR, seed=12, cfg=cfg)
    assert a.shape != c.shape or not np.allclose(a, c)
    assert a.dtype == np.float32 and np.abs(a).max() <= 0.99 + 1e-6


def test_many_seeds_deterministic_with_default_config():
    x = _voiced(1.0)
    seen = set()
    for seed in range(12):
        a, applied = augment_waveform(x, SR, seed)
        b, _ = augment_waveform(x, SR, seed)
        np.testing.assert_array_equal(a, b)
        seen.update(s.split()[0] for s in applied)
    assert {"speaker", "speed", "room", "noise"} <= seen  # the default probabilities do fire


def test_nothing_enabled_is_identity():
    x = _voiced(0.5)
    y, applied = augment_waveform(x, SR, 3, WaveAugmentConfig(**OFF))
    assert applied == [] and np.array_equal(x, y)


def test_speed_changes_length():
    x = _voiced(1.0)
    y, applied = augment_waveform(x, SR, 1, WaveAugmentConfig(**{**OFF, "p_speed": 1.0, "speed": (1.25, 1.25)}))
    assert applied == ["speed 1.25"] and abs(y.size - x.size / 1.25) < 20


def test_noise_snr_range():
    x = _voiced(1.0)
    cfg = WaveAugmentConfig(**{**OFF, "p_noise": 1.0, "snr_db": (10.0, 10.0)})
    y, _ = augment_waveform(x, SR, 2, cfg)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y.astype(np.float64) - x) ** 2))
    assert abs(snr - 10.0) < 0.5


def test_telephone_removes_out_of_band_energy():
    x = _voiced(1.0, f0=100.0)
    x = x + 0.05 * np.random.default_rng(0).standard_normal(x.size).astype(np.float32)  # energy up to 8 kHz
    y, applied = augment_waveform(x, SR, 4, WaveAugmentConfig(**{**OFF, "p_telephone": 1.0}))
    assert applied == ["telephone"] and y.size == x.size
    assert _band_energy(x, 4200, 8000) > 0.01
    assert _band_energy(y, 4200, 8000) < 1e-4  # 8 kHz sampling: nothing above 4 kHz


def test_speaker_change_moves_pitch():
    parselmouth = pytest.importorskip("parselmouth")
    x = _voiced(1.5, f0=120.0)
    cfg = WaveAugmentConfig(**{**OFF, "p_speaker": 1.0, "pitch_ratio": (1.5, 1.5), "formant_ratio": (1.1, 1.1)})
    y, applied = augment_waveform(x, SR, 5, cfg)
    assert applied == ["speaker f=1.10 p=1.50"]

    def median_f0(s):
        p = parselmouth.Sound(s.astype(np.float64), sampling_frequency=SR).to_pitch(pitch_floor=75, pitch_ceiling=600)
        f = p.selected_array["frequency"]
        return float(np.median(f[f > 0]))

    assert abs(median_f0(y) / median_f0(x) - 1.5) < 0.1


def test_seeded_global_rng_restores_state():
    np.random.seed(1)
    ref = np.random.rand(3)
    np.random.seed(1)
    with seeded_global_rng(99):
        inside = np.random.rand()
    np.testing.assert_array_equal(np.random.rand(3), ref)
    with seeded_global_rng(99):
        assert np.random.rand() == inside


def test_bad_input_and_config():
    with pytest.raises(ValueError, match="non-empty"):
        augment_waveform(np.zeros((2, 10), np.float32), SR, 0)
    with pytest.raises(ValueError, match="non-empty"):
        augment_waveform(np.zeros(0, np.float32), SR, 0)
    with pytest.raises(ValueError, match="p_room"):
        WaveAugmentConfig(p_room=1.5)
    with pytest.raises(ValueError, match="snr_db"):
        WaveAugmentConfig(snr_db=(30.0, 5.0))
    cfg = WaveAugmentConfig(p_noise=0.2)
    assert WaveAugmentConfig.from_dict(cfg.to_dict()) == cfg


def test_room_simulation_is_the_same_for_any_thread_count():
    # pyroomacoustics sums the image sources' partial responses per thread: the chain pins one thread
    constants = pytest.importorskip("pyroomacoustics.parameters").constants
    cfg = WaveAugmentConfig(p_speaker=0, p_pitch=0, p_speed=0, p_room=1.0, p_noise=0, p_telephone=0, p_codec=0)
    x = (np.sin(np.arange(16000) / 7) * 0.3 * np.hanning(16000)).astype(np.float32)
    before = constants.get("num_threads")
    outs = []
    try:
        for threads in (1, 3):
            constants.set("num_threads", threads)
            y, applied = augment_waveform(x, 16000, 4, cfg)
            assert applied == ["room"] and constants.get("num_threads") == threads  # the setting is restored
            outs.append(y)
    finally:
        constants.set("num_threads", before)
    np.testing.assert_array_equal(outs[0], outs[1])
