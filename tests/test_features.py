"""The front-end: settings (FrontendConfig), frame counts, finite features from any finite input, and the settings
travelling with the model (kaldi-native-fbank agreement and streaming: test_features_numpy.py)."""
import subprocess

import numpy as np
import pytest

from slimasr.features import FbankConfig, FrontendConfig, OnlineFeatureExtractor, compute_features, num_frames

knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank is not installed")


@pytest.mark.parametrize("n", [0, 79, 80, 239, 240, 399, 400, 401, 16000, 16079, 16080])
def test_frame_count(n):
    x = np.full(n, 0.01, np.float32)
    assert compute_features(x).shape == (num_frames(n), 80) and num_frames(n) == (n + 80) // 160


def _alternating(value: float, n: int = 4000) -> np.ndarray:
    x = np.full(n, value, np.float32)
    x[::3] *= -1
    return x


@pytest.mark.parametrize("value", [1e20, 1e38, np.finfo(np.float32).max, 1e-40, 1e-45, 0.0, 5.0])
def test_finite_input_gives_finite_features(value):
    """Samples of 1e20 used to overflow the power spectrum to inf and NaN (then NaN poisoned a stream's caches)."""
    x = _alternating(value)
    whole = compute_features(x)
    assert whole.shape == (25, 80) and np.isfinite(whole).all()
    ext = OnlineFeatureExtractor()
    for s in range(0, x.size, 333):
        ext.accept_waveform(x[s:s + 333])
    ext.input_finished()
    np.testing.assert_array_equal(ext.get_frames(0, ext.num_frames_ready), whole)
    mixed = np.concatenate([_alternating(value, 1600), 0.1 * np.sin(np.arange(8000, dtype=np.float32) / 7)])
    assert np.isfinite(compute_features(mixed)).all()


def test_silence_floor_and_loud_ceiling():
    floor = np.float32(np.log(np.finfo(np.float32).eps))
    assert np.all(compute_features(np.zeros(1600, np.float32)) == floor)       # log of knf's energy floor
    assert np.all(compute_features(_alternating(1e-45)) == floor)              # denormals: no underflow trap
    assert compute_features(_alternating(1e38)).max() < 80                     # clamped far below float32 overflow


def test_config_round_trip_and_errors():
    fe = FrontendConfig()
    assert FrontendConfig.from_dict(fe.to_dict()) == fe == FrontendConfig.from_json(fe.to_json())
    assert FrontendConfig.for_model(80) == fe and FrontendConfig.for_model(40).dim == 40
    assert fe.sample_rate == 16000 and fe.frame_shift == 160 and fe.dim == 80
    assert FbankConfig(use_energy=True).dim == 81
    with pytest.raises(ValueError, match="unknown FbankConfig fields.*bogus"):
        FrontendConfig.from_dict({**fe.to_dict(), "fbank": {**fe.fbank.to_dict(), "bogus": 1}})
    with pytest.raises(ValueError, match="unknown FrontendConfig fields.*extra"):
        FrontendConfig.from_dict({**fe.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="front-end kind 'nemo_mel'"):
        FrontendConfig(kind="nemo_mel")
    with pytest.raises(ValueError, match="cmvn 'speaker'"):
        FrontendConfig(cmvn="speaker")
    with pytest.raises(ValueError, match="meta: not JSON"):
        FrontendConfig.from_json("{", "meta")
    with pytest.raises(Exception):
        fe.kind = "x"  # frozen


def test_utterance_cmvn_is_offline_only():
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    fe = FrontendConfig(cmvn="utterance")
    f = compute_features(x, fe)
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-3)
    with pytest.raises(ValueError, match="cannot run on a stream"):
        OnlineFeatureExtractor(fe)


def test_dither_only_when_asked():
    x = (0.1 * np.random.default_rng(1).standard_normal(8000)).astype(np.float32)
    a = compute_features(x, dither=1.0, rng=np.random.default_rng(5))
    b = compute_features(x, dither=1.0, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)                                     # the caller's generator decides
    assert np.abs(a - compute_features(x)).max() > 0


def test_scale_matters():
    # features of [-1, 1] input are those of int16-scaled samples
    x = (np.random.default_rng(1).standard_normal(8000) * 0.1).astype(np.float32)
    a = compute_features(x)
    b = compute_features(x, FbankConfig(sample_scale=1.0))
    np.testing.assert_allclose(a - b, 2 * np.log(32768), atol=1e-3)


def test_settings_travel_with_the_model(tmp_path):
    torch = pytest.importorskip("torch")
    from slimasr.model import build_model, load_model
    from slimasr.model.asr import CHECKPOINT_VERSION, ASRModel, load_checkpoint_file

    m = build_model("tiny")
    fe = FrontendConfig(fbank=FbankConfig(num_mel_bins=m.config.num_mel_bins, low_freq=40.0))
    m.set_frontend(fe)
    m.save(tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt").frontend == fe
    ck = load_checkpoint_file(tmp_path / "m.pt")
    assert ck["version"] == CHECKPOINT_VERSION == 2 and ck["frontend"] == fe.to_dict()
    # a version-1 checkpoint (written before the settings were stored) gets what it was trained with
    old = {k: v for k, v in ck.items() if k != "frontend"}
    assert ASRModel.from_checkpoint_dict({**old, "version": 1}).frontend == FrontendConfig.for_model(
        m.config.num_mel_bins)
    with pytest.raises(ValueError, match="no front-end settings"):
        ASRModel.from_checkpoint_dict(old, "m.pt")
    with pytest.raises(ValueError, match="40 values per frame"):
        m.set_frontend(FrontendConfig.for_model(40))
    assert load_model().frontend == FrontendConfig.for_model(80)       # the embedded default model (version 1)
    del torch


def test_torch_free_modules():
    import sys

    code = ("import sys, numpy as np, slimasr.features as f, slimasr.audio, slimasr.scoring, slimasr.tokenizer, "
            "slimasr.data.manifest, slimasr.data.synth, slimasr.data.cmvn, slimasr.cli.data, slimasr.cli.tokenizer; "
            "f.compute_features(np.zeros(1600, np.float32)); slimasr.audio.resample(np.zeros(800, np.float32), "
            "8000, 16000); assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_online_extractor_discards_consumed_frames():
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    ex = OnlineFeatureExtractor()
    ex.accept_waveform(x)
    ex.input_finished()
    ref = compute_features(x)
    ex.discard_before(40)
    np.testing.assert_array_equal(ex.get_frames(40, 10), ref[40:50])   # indices stay absolute
    assert ex.num_frames_ready == ref.shape[0]
    with pytest.raises(ValueError, match="discarded"):
        ex.get_frames(39, 1)

