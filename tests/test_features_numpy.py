"""The one fbank (slimasr.features) against kaldi-native-fbank (sherpa-onnx's front-end); streaming == whole."""
import shutil
import subprocess

import numpy as np
import pytest

from slimasr import features
from slimasr.features import FbankConfig, OnlineFeatureExtractor, _knf_options, compute_features, num_frames

knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank is not installed")

LOG_EPS = float(np.log(np.finfo(np.float32).eps))   # knf's floor: log(max(energy, float32 epsilon))


def _knf(x: np.ndarray, cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """kaldi-native-fbank's OnlineFbank on the whole signal: (T, dim)."""
    f = knf.OnlineFbank(_knf_options(cfg))
    f.accept_waveform(float(cfg.sample_rate), np.asarray(x, np.float32) * np.float32(cfg.sample_scale))
    f.input_finished()
    dim = cfg.num_mel_bins + int(cfg.use_energy)
    return np.array([f.get_frame(i) for i in range(f.num_frames_ready)], np.float32).reshape(-1, dim)


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    """Voiced-speech-like audio: a gliding harmonic source under syllable-rate amplitude modulation, bursts of
    noise, pauses (near silence) and a little background noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    fricative = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 1.3 * t) > 0.8)
    x = 0.2 * voiced * envelope + 0.05 * fricative + 1e-4 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def test_matches_knf_on_speech(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    from slimasr.audio import load_audio

    wav = tmp_path / "u.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+m3", "-w", str(wav), "the quick brown fox jumps over the lazy dog"],
                   check=True, capture_output=True)
    x = load_audio(wav)
    ours, ref = compute_features(x), _knf(x)
    assert ours.shape == ref.shape == (num_frames(x.size), 80)
    d = np.abs(ours - ref)          # measured: mean 1.0e-6, max 1.6e-4 (log-mel values span about -16..25)
    assert d.mean() < 1e-5 and np.quantile(d, 0.999) < 1e-3 and d.max() < 0.05


def test_matches_knf_on_speech_like_audio():
    d = np.concatenate([np.abs(compute_features(x) - _knf(x)).ravel()
                        for x in (_speech_like(2.345, 0), _speech_like(3.0, 1), _speech_like(1.0001, 2))])
    # measured: mean ~2e-6, 99.9% < 2e-4; the largest differences (up to ~0.01) are knf's float32 FFT rounding
    # in the lowest mel bins of quiet frames
    assert d.mean() < 1e-5 and np.quantile(d, 0.999) < 1e-3 and d.max() < 0.05


@pytest.mark.parametrize("n", [0, 1, 79, 80, 81, 159, 160, 161, 239, 240, 279, 280, 399, 400, 401, 1001, 16001])
def test_matches_knf_at_any_length(n):
    # very short signals need repeated reflection (Kaldi's edge handling); 0..79 samples give no frame
    x = (np.random.default_rng(n).standard_normal(n) * 0.1).astype(np.float32)
    ours, ref = compute_features(x), _knf(x)
    assert ours.shape == ref.shape == (num_frames(n), 80)
    if n:
        np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


def test_silence_and_dc_like_knf():
    zeros = np.zeros(8000, np.float32)
    np.testing.assert_array_equal(compute_features(zeros), _knf(zeros))          # zero energy: log(eps)
    assert np.all(compute_features(zeros) == np.float32(LOG_EPS))
    # a constant signal: what remains after DC removal is float32 rounding residue, the same as knf's
    dc = np.full(1000, 0.3, np.float32)
    np.testing.assert_allclose(compute_features(dc), _knf(dc), atol=1e-3, rtol=0)


@pytest.mark.parametrize("cfg", [FbankConfig(use_energy=True, energy_floor=1.0), FbankConfig(snip_edges=True),
                                 FbankConfig(window="hamming", num_mel_bins=40, low_freq=0.0, high_freq=0.0),
                                 FbankConfig(preemph_coeff=0.0, remove_dc_offset=False)])
def test_other_settings_match_knf(cfg):
    x = _speech_like(1.5, 3)
    ours, ref = compute_features(x, cfg), _knf(x, cfg)
    assert ours.shape == ref.shape
    d = np.abs(ours - ref)
    assert np.quantile(d, 0.999) < 1e-3 and d.max() < 0.05


@pytest.mark.parametrize("piece", [1, 7, 160, 399, 1234, 100000])
def test_streaming_is_bit_identical_to_whole(piece):
    x = _speech_like(2.1, 4)
    ext, ref = OnlineFeatureExtractor(), knf.OnlineFbank(_knf_options(FbankConfig()))
    got, done = [], 0
    for s in range(0, x.size, piece):
        ext.accept_waveform(x[s:s + piece])
        ref.accept_waveform(16000.0, x[s:s + piece] * np.float32(32768))
        assert ext.num_frames_ready == ref.num_frames_ready     # frames become ready when knf's do
        got.append(ext.get_frames(done, ext.num_frames_ready - done))
        done = ext.num_frames_ready
        ext.discard_before(done - 2)
    ext.input_finished()
    ref.input_finished()
    assert ext.num_frames_ready == ref.num_frames_ready == num_frames(x.size)
    got.append(ext.get_frames(done, ext.num_frames_ready - done))
    np.testing.assert_array_equal(np.concatenate(got), compute_features(x))


def test_block_size_does_not_change_values(monkeypatch):
    x = _speech_like(1.3, 5)
    ref = compute_features(x)
    for block in (1, 5, 1000):
        monkeypatch.setattr(features, "_BLOCK_FRAMES", block)
        np.testing.assert_array_equal(compute_features(x), ref)


def test_discarded_frames_and_memory():
    ext = OnlineFeatureExtractor()
    x = _speech_like(30.0, 6)
    for s in range(0, x.size, 1600):
        ext.accept_waveform(x[s:s + 1600])
        ext.discard_before(ext.num_frames_ready - 10)
    assert ext._feats.shape[0] < 1000 and ext._samples.size <= 400 + 1600   # bounded, not 30 s worth
    with pytest.raises(ValueError, match="discarded"):
        ext.get_frames(0, 1)
    with pytest.raises(RuntimeError, match="after input_finished"):
        ext.input_finished()
        ext.accept_waveform(x[:10])
