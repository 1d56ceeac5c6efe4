"""slimasr.audio: file loading, mono mix-down, the sample-range check, and one resampler for files and streams."""
import io

import numpy as np
import pytest
import soundfile as sf

from slimasr.audio import (MAX_ABS_SAMPLE, AudioError, StreamResampler, check_samples, load_audio, open_audio,
                           resample, to_float_mono)


def _tone(sr: int, seconds: float = 1.0, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
def test_file_resampled_to_16k(tmp_path, sr):
    p = tmp_path / f"t{sr}.wav"
    sf.write(p, _tone(sr), sr)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == 16000
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / len(y) - 440) < 2            # still a 440 Hz tone of amplitude 0.5
    assert abs(np.abs(y[1000:-1000]).max() - 0.5) < 0.01
    np.testing.assert_array_equal(y, resample(sf.read(p, dtype="float32")[0], sr, 16000))


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("WAV", "FLOAT")])
def test_formats(tmp_path, fmt, subtype):
    p = tmp_path / f"a.{fmt.lower()}"
    sf.write(p, _tone(16000), 16000, format=fmt, subtype=subtype)
    y = load_audio(p)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1 and np.abs(y).max() < 1.0


def test_stereo_downmix(tmp_path):
    p = tmp_path / "st.wav"
    x = np.stack([_tone(16000), np.zeros(16000, np.float32)], axis=1)
    sf.write(p, x, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(p), x.mean(1), atol=1e-7)
    np.testing.assert_allclose(to_float_mono(x), x.mean(1), atol=1e-7)


def test_integer_pcm_is_scaled():
    np.testing.assert_array_equal(to_float_mono(np.array([0, 16384, -32768], np.int16)), [0.0, 0.5, -1.0])
    np.testing.assert_array_equal(to_float_mono(np.array([128, 255, 0], np.uint8)), [0.0, 127 / 128, -1.0])


@pytest.mark.parametrize("name,content,match", [
    ("nope.wav", None, "nope.wav does not exist"),
    ("junk.wav", b"not audio at all", "junk.wav is unreadable"),
    ("zero.wav", b"", "zero.wav is an empty file \\(0 bytes\\)"),     # was: unreadable (Format not recognised.)
])
def test_missing_or_unreadable_file_names_it(tmp_path, name, content, match):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(AudioError, match=match):
        load_audio(p)


def test_empty_input_in_memory_names_it():
    with pytest.raises(AudioError, match="^standard input is an empty file \\(0 bytes\\)$"):  # e.g. `: | transcribe -`
        open_audio(io.BytesIO(b""), "standard input")


def test_empty_file_names_it(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        load_audio(p)


@pytest.mark.parametrize("bad,match", [(np.nan, "NaN"), (np.inf, "infinite"), (1e20, "1e\\+20.*far outside"),
                                       (32767.0, "3.28e\\+04.*far outside")])
def test_bad_samples_refused_naming_the_problem(tmp_path, bad, match):
    x = _tone(16000)
    x[100] = bad
    p = tmp_path / "bad.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="bad.wav.*" + match):
        load_audio(p)
    with pytest.raises(ValueError, match="accept_waveform.*" + match):
        to_float_mono(x, "accept_waveform")


def test_range_check_bounds():
    check_samples(np.array([-MAX_ABS_SAMPLE, MAX_ABS_SAMPLE, 1.2], np.float32))      # overshoot is accepted
    with pytest.raises(AudioError, match="far outside"):
        check_samples(np.array([0.0, np.nextafter(MAX_ABS_SAMPLE, np.inf)]))
    with pytest.raises(AudioError, match="empty"):
        check_samples(np.zeros(0, np.float32), "x")
    with pytest.raises(AudioError, match="shape"):
        to_float_mono(np.zeros((2, 2, 2), np.float32))


def _speechlike(sr: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k for k, f in enumerate((130, 260, 1100, 3400, 7000), 1))
    return (0.2 * x * (np.sin(2 * np.pi * 3 * t) > 0) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("piece", [1, 37, 160, 4096, 10 ** 6])
def test_stream_equals_whole_file(sr, piece):
    x = _speechlike(sr, 1.3, sr)
    whole = resample(x, sr, 16000)
    rs = StreamResampler(sr, 16000)
    got = [rs.accept(x[s:s + piece]) for s in range(0, x.size, piece)] + [rs.flush()]
    streamed = np.concatenate(got)
    assert streamed.shape == whole.shape == (round(x.size * 16000 / sr),)
    np.testing.assert_array_equal(streamed, whole)             # measured max |diff|: 0 (bit-identical)
    with pytest.raises(AudioError, match="after flush"):
        rs.accept(x[:10])


def test_resample_quality():
    # a 3 kHz tone keeps its amplitude, a 7.9 kHz tone at 44.1 kHz is (nearly) removed above 8 kHz Nyquist
    y = resample(_tone(44100, 1.0, 3000.0), 44100, 16000)
    assert abs(np.abs(y[2000:-2000]).max() - 0.5) < 1e-3
    alias = resample(_tone(44100, 1.0, 9000.0), 44100, 16000)
    assert np.abs(alias[2000:-2000]).max() < 1e-3
    same = _tone(16000)
    np.testing.assert_array_equal(resample(same, 16000, 16000), same)
    with pytest.raises(AudioError, match="positive"):
        resample(same, 0, 16000)


def test_torch_free():
    import subprocess
    import sys

    code = ("import sys, numpy as np, slimasr.audio as a; a.resample(np.zeros(800, np.float32), 8000, 16000); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("content,match", [
    (None, r"does not exist"),
    (b"not audio at all", r"is unreadable \(.*\); expected a format libsndfile reads"),
    ("empty", r"is empty \(0 samples\)"),
])
def test_every_reader_refuses_a_bad_file_in_the_same_words(tmp_path, content, match):
    """Whole files, manifest segments and transcribe's block reader open audio through one function."""
    from slimasr.data.manifest import load_utterance
    from slimasr.decoding import audio_blocks

    p = tmp_path / "bad.wav"
    if content == "empty":
        sf.write(p, np.zeros(0, np.float32), 16000)
    elif content is not None:
        p.write_bytes(content)
    segment = {"audio_filepath": str(p), "offset": 0.1, "duration": 0.5, "text": ""}
    for read in (load_audio, lambda f: load_utterance(segment), audio_blocks):
        with pytest.raises(AudioError, match=r"audio file \S*bad.wav( \[0.100 s, 0.600 s\))? " + match) as e:
            read(p)
        assert "Error opening" not in str(e.value)            # libsndfile's reason, not soundfile's object repr
