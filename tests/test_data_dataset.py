"""Dataset, feature cache, bucketing sampler, collate, SpecAugment, speed perturbation, CMVN."""
import logging

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from slimasr.data.augment import SpecAugment, SpecAugmentConfig, speed_perturb  # noqa: E402
from slimasr.data.cmvn import compute_cmvn  # noqa: E402
from slimasr.data.dataset import ASRDataset, BucketBatchSampler, FeatureCache, collate  # noqa: E402
from slimasr.audio import load_audio  # noqa: E402
from slimasr.features import FrontendConfig, compute_features  # noqa: E402


class CharTok:
    """Stand-in tokenizer: one id per letter."""

    def encode(self, text):
        return [ord(c) - 96 for c in text.lower() if c.isalpha()]


@pytest.fixture()
def rows(tmp_path):
    g = np.random.default_rng(0)
    out = []
    for k, sec in enumerate([0.5, 1.0, 0.8, 0.3]):
        p = tmp_path / f"u{k}.wav"
        sr = 22050 if k == 2 else 16000        # one file is resampled (the same way in the cache and on the fly)
        sf.write(p, (g.standard_normal(int(sr * sec)) * 0.1).astype(np.float32), sr)
        out.append({"audio_filepath": str(p), "duration": sec, "text": f"abc {'d' * k}"})
    return out


def test_dataset_items_and_filters(rows, tmp_path):
    extra = [{"audio_filepath": str(tmp_path / "u0.wav"), "duration": 0.5, "text": "!!"},  # no tokens
             {"audio_filepath": str(tmp_path / "u0.wav"), "duration": 0.05, "text": "a"},  # < 7 frames
             {"audio_filepath": str(tmp_path / "u0.wav"), "duration": 0.1, "text": "abcdefghijkl"}]  # > T/4 tokens
    ds = ASRDataset(rows + extra, CharTok())
    assert len(ds) == 4 and ds.filtered == {"no_tokens": 1, "too_short": 1, "too_many_tokens": 1}
    feats, tokens = ds[1]
    assert feats.shape == (100, 80) and feats.dtype == torch.float32
    assert tokens.tolist() == [1, 2, 3, 4] and tokens.dtype == torch.long
    assert ds.durations == [0.5, 1.0, 0.8, 0.3]


def test_missing_audio_skipped_and_counted(rows, caplog):
    rows[2]["audio_filepath"] += ".gone"
    ds = ASRDataset(rows, CharTok())
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)
    assert "u2.wav.gone" in caplog.text
    assert [b["feats"].shape[0] for b in batches] == [2, 1] and batches[1]["num_skipped"] == 1
    assert ds.skipped == 1 and ds.end_epoch() == 1 and ds.end_epoch() == 0
    assert collate([None, None]) is None


def test_skip_counter_across_workers(rows):
    rows[0]["audio_filepath"] += ".gone"
    ds = ASRDataset(rows, CharTok())
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate, num_workers=2)
    assert sum(b is not None for b in loader) == 3
    assert ds.skipped == 1


def test_collate_shapes():
    batch = [(torch.ones(5, 80), torch.tensor([1, 2])), (torch.ones(9, 80), torch.tensor([3, 4, 5]))]
    b = collate(batch)
    assert b["feats"].shape == (2, 9, 80) and b["feats"].dtype == torch.float32
    assert b["feats"][0, 5:].abs().sum() == 0
    assert b["feats_lens"].tolist() == [5, 9] and b["feats_lens"].dtype == torch.int64
    assert b["targets"].tolist() == [[1, 2, -1], [3, 4, 5]]
    assert b["target_lens"].tolist() == [2, 3] and b["target_lens"].dtype == torch.int64


def test_feature_cache(rows, tmp_path):
    rows = rows + [{"audio_filepath": str(tmp_path / "missing.wav"), "duration": 1.0, "text": "x"}]
    cfg = FrontendConfig()
    cache = FeatureCache.open_or_build(rows, cfg, tmp_path / "cache", jobs=1, progress=False)
    assert len(cache) == 4 and str(tmp_path / "missing.wav") in cache.failed
    ds_c = ASRDataset(rows[:4], CharTok(), cfg, cache=cache)
    ds_f = ASRDataset(rows[:4], CharTok(), cfg)
    for i in range(4):
        a, b = ds_c[i][0], ds_f[i][0]
        assert torch.equal(a, b.half().float())  # one loader, resampler and fbank: equal up to float16 storage
    # the same rows and config reuse the cache; another config gets a new one
    again = FeatureCache.open_or_build(rows, cfg, tmp_path / "cache", progress=False)
    assert again.index_path == cache.index_path
    other = FeatureCache.key(rows, FrontendConfig.for_model(40))
    assert other != cache.index_path.stem


def test_feature_cache_subset_reads_a_covering_cache(rows, tmp_path):
    import os

    cfg = FrontendConfig()
    full = FeatureCache.open_or_build(rows, cfg, tmp_path / "cache", jobs=1, progress=False)
    sub = FeatureCache.open_or_build(rows[1:], cfg, tmp_path / "cache", jobs=1, progress=False)
    assert sub.index_path == full.index_path and len(list((tmp_path / "cache").glob("*.json"))) == 1
    # other settings, or a file changed since the cache was built: a new cache
    assert FeatureCache.find_covering(rows[1:], FrontendConfig.for_model(40), tmp_path / "cache") is None
    p = rows[1]["audio_filepath"]
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert FeatureCache.find_covering(rows[1:], cfg, tmp_path / "cache") is None
    fresh = FeatureCache.open_or_build(rows[1:], cfg, tmp_path / "cache", jobs=1, progress=False)
    assert fresh.index_path != full.index_path
    np.testing.assert_array_equal(fresh.get(rows[2]["audio_filepath"]), full.get(rows[2]["audio_filepath"]))


@pytest.mark.slow
def test_feature_cache_parallel(rows, tmp_path):
    a = FeatureCache.build(rows, FrontendConfig(), tmp_path / "c1", jobs=1, progress=False)
    b = FeatureCache.build(rows, FrontendConfig(), tmp_path / "c2", jobs=2, progress=False)
    for r in rows:
        np.testing.assert_array_equal(a.get(r["audio_filepath"]), b.get(r["audio_filepath"]))


def _durations(n=137, seed=0):
    return list(np.random.default_rng(seed).uniform(0.5, 15.0, n))


def test_bucket_sampler_covers_each_index_once():
    d = _durations()
    s = BucketBatchSampler(d, max_frames_per_batch=6000, seed=3)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(d)))
        for b in batches:  # budget respected (a single over-long utterance may exceed it)
            assert len(b) == 1 or len(b) * max(int(d[i] / 0.01) + 1 for i in b) <= 6000


def test_bucket_sampler_deterministic():
    d = _durations()
    a = BucketBatchSampler(d, max_frames_per_batch=6000, seed=1)
    b = BucketBatchSampler(d, max_frames_per_batch=6000, seed=1)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)
    c = BucketBatchSampler(d, max_frames_per_batch=6000, seed=2)
    c.set_epoch(4)
    assert list(a) != list(c)


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_bucket_sampler_ddp_shards(replicas):
    d = _durations(101)
    for kw in ({"max_frames_per_batch": 5000}, {"batch_size": 7}):
        shards = []
        for rank in range(replicas):
            s = BucketBatchSampler(d, seed=0, num_replicas=replicas, rank=rank, **kw)
            s.set_epoch(2)
            shards.append(list(s))
        assert len({len(sh) for sh in shards}) == 1  # equal batch counts
        flat = [i for sh in shards for b in sh for i in b]
        assert sorted(flat) == list(range(len(d)))  # disjoint and complete


def test_bucket_sampler_fixed_size_and_eval_order():
    d = _durations(20)
    s = BucketBatchSampler(d, batch_size=6, shuffle=False)
    batches = list(s)
    assert [len(b) for b in batches] == [6, 6, 6, 2]
    flat = [i for b in batches for i in b]
    assert [d[i] for i in flat] == sorted(d)
    with pytest.raises(ValueError):
        BucketBatchSampler(d)


def test_specaugment():
    x = torch.randn(200, 80) + 5
    cfg = SpecAugmentConfig(num_freq_masks=2, max_freq_width=10, num_time_masks=2, max_time_width=20, time_warp=5)
    y = SpecAugment(cfg)(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    assert x.mean() > 4  # input untouched
    y0 = SpecAugment(SpecAugmentConfig(num_freq_masks=0, num_time_masks=0))(x)
    assert torch.equal(x, y0)
    assert SpecAugment()(torch.zeros(3, 80)).shape == (3, 80)
    with pytest.raises(ValueError):
        SpecAugmentConfig(num_time_masks=-1)


def test_speed_perturb_lengths():
    x = torch.randn(16000)
    assert abs(speed_perturb(x, 1.1).shape[0] - 16000 / 1.1) <= 1
    assert abs(speed_perturb(x, 0.9).shape[0] - 16000 / 0.9) <= 1
    assert speed_perturb(x, 1.0) is x


def test_speed_perturbed_dataset(rows):
    ds = ASRDataset(rows, CharTok(), speed_perturb=True)
    lens = {ds[1][0].shape[0] for _ in range(20)}
    assert lens <= {91, 100, 111} and len(lens) > 1


def test_cmvn(rows):
    mean, istd = compute_cmvn(rows, FrontendConfig())
    assert mean.shape == istd.shape == (80,) and mean.dtype == np.float32
    feats = torch.cat([torch.from_numpy(compute_features(load_audio(r["audio_filepath"]))) for r in rows])
    np.testing.assert_allclose(mean, feats.mean(0).numpy(), atol=1e-2)
    np.testing.assert_allclose(istd, 1 / feats.std(0, unbiased=False).numpy(), rtol=1e-2)
    with pytest.raises(ValueError, match="no readable audio"):
        compute_cmvn([{"audio_filepath": "/nonexistent.wav", "duration": 1, "text": ""}], FrontendConfig())


@pytest.mark.slow
def test_skip_counter_with_spawned_workers(rows):
    rows[1]["audio_filepath"] += ".gone"
    ds = ASRDataset(rows, CharTok())
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate, num_workers=1,
                                         multiprocessing_context="spawn")
    assert sum(b["feats"].shape[0] for b in loader) == 3
    assert ds.skipped == 1


def test_segments_read_from_their_recording(tmp_path):
    """Rows with ``offset`` (Kaldi segments) are that stretch of one recording, in the feature cache (one entry per
    segment) and on the fly, equal to the features of the stretch cut out as a file of its own."""
    g = np.random.default_rng(1)
    x = (g.standard_normal(3 * 16000) * 0.1).astype(np.float32)
    sf.write(tmp_path / "rec.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "cut.wav", x[16000:40000], 16000, subtype="FLOAT")
    rec = str(tmp_path / "rec.wav")
    rows = [{"audio_filepath": rec, "offset": 0.0, "duration": 1.0, "text": "abc"},
            {"audio_filepath": rec, "offset": 1.0, "duration": 1.5, "text": "de"}]
    cut = ASRDataset([{"audio_filepath": str(tmp_path / "cut.wav"), "duration": 1.5, "text": "de"}], CharTok())[0][0]
    on_the_fly = ASRDataset(rows, CharTok())
    assert on_the_fly[0][0].shape[0] == 100 and torch.equal(on_the_fly[1][0], cut)
    cache = FeatureCache.open_or_build(rows, FrontendConfig(), tmp_path / "cache", jobs=1, progress=False)
    assert len(cache) == 2
    cached = ASRDataset(rows, CharTok(), cache=cache)
    assert (cached[1][0] - cut).abs().max() < 0.05        # float16 storage


def test_dither_follows_torch_seed(rows):
    ds = ASRDataset(rows, CharTok(), dither=1.0)
    torch.manual_seed(3)
    a = ds[0][0]
    torch.manual_seed(3)
    assert torch.equal(a, ds[0][0])                  # reproducible with the training seed
    assert not torch.equal(a, ds[0][0])              # and fresh noise for the next draw
    assert not torch.equal(a, ASRDataset(rows, CharTok())[0][0])
