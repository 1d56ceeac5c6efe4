"""Audio loading, torch side (slimasr.data.audio) and torch-free side (slimasr.features)."""
import numpy as np
import pytest
import soundfile as sf

from slimasr.features import load_audio_numpy

torch = pytest.importorskip("torch")
from slimasr.data.audio import AudioError, load_audio  # noqa: E402


def _tone(sr: int, seconds: float = 1.0, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100])
def test_resample_to_16k(tmp_path, sr):
    p = tmp_path / f"t{sr}.wav"
    sf.write(p, _tone(sr), sr)
    for y in (load_audio(p).numpy(), load_audio_numpy(p)):
        assert y.dtype == np.float32 and y.ndim == 1
        assert abs(len(y) - 16000) <= 1
        # still a 440 Hz tone of amplitude 0.5
        spec = np.abs(np.fft.rfft(y))
        assert abs(np.argmax(spec) * 16000 / len(y) - 440) < 2
        assert abs(np.abs(y[1000:-1000]).max() - 0.5) < 0.02


def test_stereo_downmix(tmp_path):
    p = tmp_path / "st.wav"
    x = np.stack([_tone(16000), np.zeros(16000, np.float32)], axis=1)
    sf.write(p, x, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(p).numpy(), x.mean(1), atol=1e-6)
    np.testing.assert_allclose(load_audio_numpy(p), x.mean(1), atol=1e-6)


def test_missing_file_names_it(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav"):
        load_audio(p)
    with pytest.raises(ValueError, match="nope.wav"):
        load_audio_numpy(p)


def test_unreadable_file_names_it(tmp_path):
    p = tmp_path / "junk.wav"
    p.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="junk.wav"):
        load_audio(p)
    with pytest.raises(ValueError, match="junk.wav"):
        load_audio_numpy(p)


def test_nan_rejected(tmp_path):
    p = tmp_path / "nan.wav"
    x = _tone(16000)
    x[100] = np.nan
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(p)
    with pytest.raises(ValueError, match="nan.wav.*NaN"):
        load_audio_numpy(p)
    with pytest.raises(ValueError, match="NaN"):
        load_audio_numpy(x, sample_rate=16000)


def test_empty_rejected(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        load_audio(p)
    with pytest.raises(ValueError, match="empty"):
        load_audio_numpy(p)


def test_array_input():
    y = load_audio_numpy(_tone(8000), sample_rate=8000)
    assert abs(len(y) - 16000) <= 1
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio_numpy(_tone(8000))
