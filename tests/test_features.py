"""Fbank: torch (training) vs kaldi-native-fbank (runtime) agreement, frame counts, streaming, config."""
import shutil
import subprocess

import numpy as np
import pytest

from slimasr.features import FbankConfig, OnlineFbankExtractor, fbank_numpy, load_audio_numpy, num_frames

knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank is not installed")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    wav = tmp_path_factory.mktemp("speech") / "u.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+m3", "-w", str(wav), "the quick brown fox jumps over the lazy dog"],
                   check=True, capture_output=True)
    return load_audio_numpy(wav)


def _diff(x: np.ndarray) -> np.ndarray:
    from slimasr.data.features import compute_fbank

    a = fbank_numpy(x)
    b = compute_fbank(torch.from_numpy(x)).numpy()
    assert a.shape == b.shape == (num_frames(len(x)), 80)
    return np.abs(a - b)


def test_torch_matches_knf_on_speech(speech):
    # Log-mel values span about -16..25. Measured on 60 synthetic utterances: mean |diff| 5e-6, median of the
    # per-utterance max 1.2e-3, worst 0.028 (float32 rounding in the lowest mel bins of quiet frames; 0.05% of
    # the values differ by more than 1e-3). This utterance: max ~5e-4.
    d = _diff(speech)
    assert d.mean() < 1e-4 and np.quantile(d, 0.999) < 1e-3 and d.max() < 0.05


def test_torch_matches_knf_on_noise():
    x = (np.random.default_rng(0).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    assert _diff(x).max() < 1e-2  # measured ~2e-4


@pytest.mark.parametrize("n", [0, 79, 80, 239, 240, 399, 400, 401, 16000, 16079, 16080])
def test_frame_count(n):
    from slimasr.data.features import compute_fbank

    x = np.full(n, 0.01, np.float32)
    t = fbank_numpy(x).shape[0]
    assert t == num_frames(n) == (n + 80) // 160
    assert compute_fbank(torch.from_numpy(x)).shape == (t, 80)


def test_streaming_equals_whole(speech):
    whole = fbank_numpy(speech)
    ext = OnlineFbankExtractor()
    got, done = [], 0
    for s in range(0, len(speech), 1234):
        ext.accept_waveform(speech[s:s + 1234])
        got.append(ext.get_frames(done, ext.num_frames_ready - done))
        done = ext.num_frames_ready
    ext.input_finished()
    got.append(ext.get_frames(done, ext.num_frames_ready - done))
    np.testing.assert_array_equal(np.concatenate(got), whole)
    with pytest.raises(ValueError):
        ext.get_frames(0, ext.num_frames_ready + 1)


def test_config_round_trip():
    cfg = FbankConfig()
    assert FbankConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.frame_shift == 160 and cfg.frame_length == 400
    with pytest.raises(ValueError, match="unknown"):
        FbankConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(Exception):
        cfg.num_mel_bins = 40  # frozen


def test_scale_matters():
    # features of [-1, 1] input are those of int16-scaled samples
    x = (np.random.default_rng(1).standard_normal(8000) * 0.1).astype(np.float32)
    a = fbank_numpy(x)
    b = fbank_numpy(x, FbankConfig(sample_scale=1.0))
    np.testing.assert_allclose(a - b, 2 * np.log(32768), atol=1e-3)


def test_torch_free_modules():
    import subprocess
    import sys

    code = ("import sys, numpy as np, slimasr.features as f, slimasr.tokenizer, slimasr.data.manifest, "
            "slimasr.data.synth, slimasr.data.cmvn, slimasr.cli.data, slimasr.cli.tokenizer; "
            "f.fbank_numpy(np.zeros(1600, np.float32)); f.load_audio_numpy(np.zeros(800, np.float32), 8000); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_online_extractor_discards_consumed_frames():
    import numpy as np
    import pytest

    from slimasr.features import OnlineFbankExtractor, fbank_numpy

    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    ex = OnlineFbankExtractor()
    ex.accept_waveform(x)
    ex.input_finished()
    ref = fbank_numpy(x)
    ex.discard_before(40)
    np.testing.assert_allclose(ex.get_frames(40, 10), ref[40:50], atol=1e-5)   # indices stay absolute
    assert ex.num_frames_ready == ref.shape[0]
    with pytest.raises(ValueError, match="discarded"):
        ex.get_frames(39, 1)
