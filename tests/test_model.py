"""The model contract: streaming equals chunk-masked offline, long input, bad input, save/load, pruning."""
import math

import pytest
import torch

import slimasr
from slimasr.model import PAPER, ModelConfig, build_model, load_model
from slimasr.prune import remove_layers

TOL = 1e-4


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    m = build_model("tiny", **kw).eval()
    # non-trivial CMVN so that it is exercised
    m.set_cmvn(torch.randn(80) * 0.1, 1.0 + 0.1 * torch.rand(80))
    return m


@pytest.mark.parametrize("chunk,left", [(1, None), (2, 1), (4, None), (4, 2), (5, 0), (8, 3), (16, None)])
@pytest.mark.parametrize("frames", [7, 37, 101, 203])
def test_stream_equals_chunked_offline(chunk, left, frames):
    m = _tiny()
    x = torch.randn(1, frames, 80)
    with torch.no_grad():
        off, lens = m.ctc_log_probs(x, torch.tensor([frames]), chunk, left)
        st = m.stream_log_probs(x, chunk, left)
    assert st.shape == off.shape, (st.shape, off.shape)
    assert int(lens[0]) == off.size(1) == ((frames - 1) // 2 - 1) // 2
    assert (st - off).abs().max().item() <= TOL


@pytest.mark.parametrize("feed", [1, 3, 50])
def test_stream_buffering_is_irrelevant(feed):
    m = _tiny()
    x = torch.randn(1, 90, 80)
    with torch.no_grad():
        ref = m.stream_log_probs(x, 4, 2)
        got = m.stream_log_probs(x, 4, 2, feed_frames=feed)
    assert (ref - got).abs().max().item() <= TOL


def test_chunking_changes_result():
    """A non-vacuous check: chunked and full-context outputs must differ (the masks do something)."""
    m = _tiny()
    x = torch.randn(1, 120, 80)
    with torch.no_grad():
        full, _ = m.ctc_log_probs(x)
        ch, _ = m.ctc_log_probs(x, chunk_size=2, left_chunks=1)
    assert (full - ch).abs().max().item() > 1e-3


def test_batched_offline_matches_single():
    m = _tiny()
    a, b = torch.randn(1, 80, 80), torch.randn(1, 51, 80)
    batch = torch.zeros(2, 80, 80)
    batch[0] = a[0]
    batch[1, :51] = b[0]
    with torch.no_grad():
        for chunk, left in [(None, None), (4, 1)]:
            lp, lens = m.ctc_log_probs(batch, torch.tensor([80, 51]), chunk, left)
            la, _ = m.ctc_log_probs(a, None, chunk, left)
            lb, _ = m.ctc_log_probs(b, None, chunk, left)
            assert (lp[0, : la.size(1)] - la[0]).abs().max() <= TOL
            assert (lp[1, : lb.size(1)] - lb[0]).abs().max() <= TOL
            assert lens.tolist() == [la.size(1), lb.size(1)]


@pytest.mark.parametrize("removed", [[0], [1, 2], [3]])
def test_pruned_model_streams_like_offline(removed):
    m = _tiny()
    p = remove_layers(m, removed)
    assert len(p.encoder.layers) == 4 - len(removed)
    assert p.config.num_layers == 4 - len(removed)
    assert list(p.config.original_layers) == [i for i in range(4) if i not in removed]
    x = torch.randn(1, 77, 80)
    with torch.no_grad():
        for chunk, left in [(3, 1), (4, None)]:
            off, _ = p.ctc_log_probs(x, None, chunk, left)
            st = p.stream_log_probs(x, chunk, left)
            assert (st - off).abs().max().item() <= TOL
    # the original is untouched
    assert len(m.encoder.layers) == 4


def test_remove_layers_remaps_intermediate_ctc_and_composes():
    m = build_model("tiny", num_layers=6, intermediate_ctc_layers=(2, 4))
    p = remove_layers(m, [1])                 # layers 0,2,3,4,5 kept: "after 2" -> after 1, "after 4" -> after 3
    assert p.config.intermediate_ctc_layers == (1, 3)
    q = remove_layers(p, [0])                 # drop original layer 0: original_layers compose
    assert q.config.original_layers == (2, 3, 4, 5)
    assert q.config.intermediate_ctc_layers == (2,)
    with pytest.raises(ValueError, match="out of range"):
        remove_layers(m, [6])
    with pytest.raises(ValueError):
        remove_layers(m, range(6))


def test_pruned_layers_are_the_same_weights():
    m = _tiny()
    p = remove_layers(m, [1])
    for new_i, old_i in enumerate([0, 2, 3]):
        a = p.encoder.layers[new_i].state_dict()
        b = m.encoder.layers[old_i].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_long_offline_input_and_hour_long_stream():
    m = _tiny()
    ten_minutes = 10 * 60 * 100                      # 10 ms frames
    x = torch.randn(1, ten_minutes, 80)
    with torch.no_grad():
        lp, lens = m.ctc_log_probs(x)
        assert lp.shape[1] == int(lens[0]) == ((ten_minutes - 1) // 2 - 1) // 2
        assert torch.isfinite(lp).all()
        # blocked attention on long input equals the unblocked computation on a prefix-consistent check:
        # the last frames of a chunked long decode equal the streaming result (limited left context)
        state = m.init_state()
        chunk, left = 64, 1                      # large chunks: fewer Python steps per hour of frames
        piece = torch.randn(1, chunk * 4 * 50, 80)
        frames = 0
        hour = 60 * 60 * 100
        while frames < hour:
            out, state = m.stream_step(piece, state, chunk, left)
            frames += piece.size(1)
        assert torch.isfinite(out).all()
        window, shift = (chunk - 1) * 4 + 7, chunk * 4
        assert state.offset == ((frames - window) // shift + 1) * chunk      # complete chunks only
        assert state.att_cache[0][0].size(2) == chunk * left


def test_blocked_attention_equals_plain(monkeypatch):
    import slimasr.model.encoder as enc
    m = _tiny()
    x = torch.randn(1, 400, 80)
    with torch.no_grad():
        ref, _ = m.ctc_log_probs(x, chunk_size=4, left_chunks=2)
        ref_full, _ = m.ctc_log_probs(x)
        monkeypatch.setattr(enc, "_ATTN_BLOCK_ELEMENTS", 500)    # force query blocks of 5 rows
        got, _ = m.ctc_log_probs(x, chunk_size=4, left_chunks=2)
        got_full, _ = m.ctc_log_probs(x)
    assert (ref - got).abs().max() <= TOL
    assert (ref_full - got_full).abs().max() <= TOL


def test_bad_input_errors():
    m = _tiny()
    with pytest.raises(ValueError, match="feature dimension"):
        m.ctc_log_probs(torch.randn(1, 50, 40))
    with pytest.raises(ValueError, match="too short"):
        m.ctc_log_probs(torch.randn(1, 0, 80))
    with pytest.raises(ValueError, match="too short"):
        m.ctc_log_probs(torch.randn(1, 5, 80))
    with pytest.raises(ValueError, match="chunk_size"):
        m.ctc_log_probs(torch.randn(1, 50, 80), chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        m.stream_log_probs(torch.randn(1, 50, 80), chunk_size=-2)
    with pytest.raises(ValueError, match="left_chunks"):
        m.ctc_log_probs(torch.randn(1, 50, 80), chunk_size=4, left_chunks=-1)
    with pytest.raises(ValueError, match="feature dimension"):
        m.stream_step(torch.randn(1, 10, 81), m.init_state(), 4)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown config"):
        build_model("huge")
    # non-finite features (audio far outside [-1, 1] overflowing the fbank) are refused, not decoded to nothing
    for bad in (float("nan"), float("inf")):
        x = torch.randn(1, 50, 80)
        x[0, 20, 3] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            m.ctc_log_probs(x)
        with pytest.raises(ValueError, match="NaN or infinite"):
            m.stream_step(x, m.init_state(), 4)


def test_front_end_arithmetic_follows_the_model():
    """slimasr.chunking takes S and R from the model: its output-frame count equals every unpadded front-end's
    own lengths (WeNet's x4 / x6 / x8 convolution stacks), and a chunk window of each gives exactly C frames."""
    from slimasr.chunking import Chunking, EndOfStream, output_frames

    t = torch.arange(0, 400)
    for variant, (s_want, r_want) in {"conv2d4": (4, 6), "conv2d6": (6, 10), "conv2d8": (8, 14)}.items():
        m = _tiny(subsampling=variant)
        cfg = m.config
        assert (cfg.subsampling_factor, cfg.right_context) == (s_want, r_want)
        ours = torch.tensor([output_frames(int(n), cfg.subsampling_factor, cfg.right_context) for n in t])
        lens = m.encoder.subsampling.output_lengths(t)
        ok = t >= m.min_frames
        assert (ours[ok] == lens[ok]).all() and (ours[~ok] == 0).all(), variant
    for s, r in ((4, 6), (6, 10), (8, 14)):
        c = Chunking(chunk_size=5, left_chunks=2, subsampling_factor=s, right_context=r)
        assert c.output_frames(c.window) == 5 and c.output_frames(c.window - 1) == 4
        assert c.output_frames(c.window + c.shift) == 10 and c.min_frames == r + 1
        # flush: full windows, then the rest (>= R + 1 frames) as a short last chunk; never before the end
        assert c.next_chunk(c.window, finished=False) == c.window
        assert c.next_chunk(c.window - 1, finished=False) == 0
        assert c.next_chunk(c.window - 1, finished=True) == c.window - 1
        assert c.next_chunk(r, finished=True) == 0
        # sherpa-onnx: strictly more frames than a window, nothing short
        sherpa = EndOfStream.sherpa_onnx()
        assert c.next_chunk(c.window, finished=True, end=sherpa) == 0
        assert c.next_chunk(c.window + 1, finished=False, end=sherpa) == c.window
        # the export's metadata round-trips; a window that does not match S and R is an error, not a guess
        meta = c.to_metadata()
        assert Chunking.from_metadata(meta) == c
        with pytest.raises(ValueError, match="slimasr_window"):
            Chunking.from_metadata({**meta, "slimasr_window": str(c.window + 1)})


def test_save_load_roundtrip(tmp_path):
    m = _tiny()
    m.attach_tokenizer(b"\x01\x02fake-spm")
    path = m.save(tmp_path / "m.pt")
    m2 = load_model(path)
    assert not m2.training
    assert m2.config == m.config
    assert m2.tokenizer_bytes == b"\x01\x02fake-spm"
    x = torch.randn(1, 60, 80)
    with torch.no_grad():
        assert torch.equal(m.ctc_log_probs(x)[0], m2.ctc_log_probs(x)[0])
    assert torch.equal(m2.encoder.cmvn_mean, m.encoder.cmvn_mean)
    # a pruned model round-trips with its provenance
    p = remove_layers(m, [2])
    p2 = load_model(p.save(tmp_path / "p.pt"))
    assert p2.config.original_layers == (0, 1, 3)
    assert len(p2.encoder.layers) == 3


def test_corrupt_checkpoints(tmp_path):
    m = _tiny()
    good = m.save(tmp_path / "m.pt")
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable slimasr checkpoint"):
        load_model(tmp_path / "trunc.pt")
    torch.save({"hello": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a slimasr model checkpoint"):
        load_model(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError):
        load_model(tmp_path / "text.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_model(tmp_path / "empty.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_training_loss_and_dynamic_chunk_backward():
    torch.manual_seed(0)
    m = build_model("tiny").train()
    x = torch.randn(3, 120, 80)
    lens = torch.tensor([120, 100, 64])
    y = torch.randint(1, 39, (3, 6))
    y[2, 4:] = -1
    ylens = torch.tensor([6, 6, 4])
    seen = set()
    for _ in range(8):
        out = m(x, lens, y, ylens)
        assert set(out) >= {"loss", "ctc", "att", "inter_ctc"}
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        seen.add(m.sample_chunking()[0] is None)
    assert seen == {True, False}          # dynamic chunk training draws both full and chunked batches
    assert all(p.grad is not None for n, p in m.named_parameters() if p.requires_grad)


def test_paper_config_parameter_count():
    m = build_model(PAPER)
    n = m.num_parameters()
    # ~150M with the decoder; see README for the exact figure
    assert 140e6 < n < 160e6, n
    assert len(m.encoder.layers) == 20


def test_public_api_lazy_torch():
    assert callable(slimasr.build_model) and callable(slimasr.load_model)


# ---------------------------------------------------------------- layer variants (imported models)
VARIANTS = {
    "wenet_causal_even_kernel": dict(causal_conv=True, kernel_size=8, pos_enc="abs_key"),
    "wenet_causal_abs_key": dict(causal_conv=True, pos_enc="abs_key", layer_norm_eps=1e-6),
    "abs_key_noncausal": dict(pos_enc="abs_key", conv_norm="none"),
    "conv2d6": dict(subsampling="conv2d6"),
    "conv2d8": dict(subsampling="conv2d8", xscaling=False),
    "nemo_striding4": dict(subsampling="striding4", final_norm=False, conv_norm="none"),
    "nemo_dw_striding8": dict(subsampling="dw_striding8", final_norm=False, conv_norm="none", layer_norm_eps=1e-12),
}


def _variant(name, seed=0):
    m = _tiny(seed, **VARIANTS[name])
    with torch.no_grad():                     # non-default biases and affines everywhere (hide nothing)
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("chunk,left", [(1, None), (4, 2), (8, None)])
@pytest.mark.parametrize("frames", [17, 64, 131])
def test_variant_stream_equals_chunked_offline(name, chunk, left, frames):
    m = _variant(name)
    cfg = m.config
    x = torch.randn(1, frames, 80)
    with torch.no_grad():
        off, lens = m.ctc_log_probs(x, torch.tensor([frames]), chunk, left)
        st = m.stream_log_probs(x, chunk, left)
        st_fed = m.stream_log_probs(x, chunk, left, feed_frames=5)
    assert off.size(1) == int(lens[0]) == int(m.encoder.subsampling.output_lengths(torch.tensor(frames)))
    assert st.shape == off.shape, (st.shape, off.shape)
    assert (st - off).abs().max().item() <= TOL
    assert (st_fed - off).abs().max().item() <= TOL
    if not cfg.causal_conv:                   # chunking must matter (the masks and positions do something)
        full, _ = m.ctc_log_probs(x)
        assert off.size(1) < 3 or chunk >= off.size(1) or (full - off).abs().max().item() > 1e-4


def _padded_reference(sub, x):
    """NeMo's padded subsampling the plain way: each stage a Conv2d with time padding p, batch 1."""
    h = x.unsqueeze(1)
    for (k, s, p), (a, b) in zip(sub.stages, sub._bounds):
        for mod in sub.conv[a:b]:
            if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size[0] > 1:
                h = torch.nn.functional.conv2d(h, mod.weight, mod.bias, mod.stride, (p, mod.padding[1]),
                                               groups=mod.groups)
            else:
                h = mod(h)
    b, c, t, f = h.shape
    y = sub.out(h.transpose(1, 2).reshape(b, t, c * f))
    return y * sub.scale if sub.scale is not None else y


@pytest.mark.parametrize("name", ["nemo_striding4", "nemo_dw_striding8"])
@pytest.mark.parametrize("frames", [15, 16, 17, 50, 61])
def test_padded_subsampling_equals_padded_convolutions(name, frames):
    m = _variant(name)
    x = torch.randn(1, frames, 80)
    with torch.no_grad():
        ref = _padded_reference(m.encoder.subsampling, (x - m.encoder.cmvn_mean) * m.encoder.cmvn_istd)
        ctx = m.config.left_context
        got = m.encoder.front_end(torch.nn.functional.pad(x, (0, 0, ctx, ctx)), -ctx, torch.tensor([frames]))
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-5


def test_variant_geometry():
    geo = {name: (ModelConfig(subsampling=name).subsampling_factor, ModelConfig(subsampling=name).right_context,
                  ModelConfig(subsampling=name).left_context)
           for name in ("conv2d4", "conv2d6", "conv2d8", "striding4", "dw_striding8")}
    assert geo == {"conv2d4": (4, 6, 0), "conv2d6": (6, 10, 0), "conv2d8": (8, 14, 0), "striding4": (4, 6, 3),
                   "dw_striding8": (8, 14, 7)}
    assert ModelConfig(causal_conv=True, kernel_size=8).conv_cache_frames == 7
    assert ModelConfig(kernel_size=15).conv_cache_frames == 7
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(kernel_size=8)
    with pytest.raises(ValueError, match="supported: rel, abs_key, legacy"):
        ModelConfig(pos_enc="rope")
    with pytest.raises(ValueError, match="subsampling"):
        ModelConfig(subsampling="conv1d2")
    # old checkpoints stored the fixed geometry; a mismatch is refused
    d = ModelConfig().to_dict()
    assert ModelConfig.from_dict(d) == ModelConfig()
    d["subsampling_factor"] = 8
    with pytest.raises(ValueError, match="does not match"):
        ModelConfig.from_dict(d)


def test_legacy_positions_offline_only_and_length_dependent():
    m = _tiny(pos_enc="legacy")
    x = torch.randn(1, 80, 80)
    with torch.no_grad():
        full, _ = m.ctc_log_probs(x)
        part, _ = m.ctc_log_probs(x[:, :60])
    assert torch.isfinite(full).all()
    # the square shift makes the first frames depend on the utterance length (why it cannot stream)
    assert (full[:, :5] - part[:, :5]).abs().max().item() > 1e-4
    with pytest.raises(ValueError, match="legacy relative positions.*cannot stream"):
        m.stream_log_probs(x, 4, 2)
    with pytest.raises(ValueError, match="whole utterances only"):
        m.ctc_log_probs(x, chunk_size=4)


def test_variant_save_load_and_prune(tmp_path):
    m = _variant("nemo_dw_striding8")
    p = remove_layers(m, [1])
    p2 = load_model(p.save(tmp_path / "v.pt"))
    assert p2.config == p.config and p2.config.subsampling == "dw_striding8"
    x = torch.randn(1, 70, 80)
    with torch.no_grad():
        assert torch.equal(p.ctc_log_probs(x)[0], p2.ctc_log_probs(x)[0])
    assert "encoder.after_norm.weight" not in p2.state_dict()
    assert not any(k.endswith("conv.norm.weight") for k in p2.state_dict())


@pytest.mark.parametrize("name", ["nemo_striding4", "nemo_dw_striding8"])
def test_padded_variant_stream_tail_lengths(name):
    """Padded front-ends: the last encoder frames read zero padding past the end; the stream's final chunk
    produces exactly them, for every remainder length."""
    m = _variant(name)
    for frames in range(15, 15 + 2 * m.config.subsampling_factor + 1):
        x = torch.randn(1, frames, 80)
        for chunk, left in ((1, None), (2, 1), (3, None)):
            with torch.no_grad():
                off, _ = m.ctc_log_probs(x, None, chunk, left)
                st = m.stream_log_probs(x, chunk, left)
            assert st.shape == off.shape, (frames, chunk, st.shape, off.shape)
            assert (st - off).abs().max().item() <= TOL


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_batched_offline_matches_single(name):
    """Padding in a batch never leaks into real frames (causal convolution masks its input, padded subsampling
    masks every stage)."""
    m = _variant(name)
    a, b = torch.randn(1, 90, 80), torch.randn(1, 53, 80)
    batch = torch.zeros(2, 90, 80)
    batch[0], batch[1, :53] = a[0], b[0]
    batch[1, 53:] = 5.0                       # loud padding: a leak would show
    with torch.no_grad():
        for chunk, left in [(None, None), (4, 1)]:
            lp, lens = m.ctc_log_probs(batch, torch.tensor([90, 53]), chunk, left)
            la, _ = m.ctc_log_probs(a, None, chunk, left)
            lb, _ = m.ctc_log_probs(b, None, chunk, left)
            assert lens.tolist() == [la.size(1), lb.size(1)]
            assert (lp[0, : la.size(1)] - la[0]).abs().max() <= TOL
            assert (lp[1, : lb.size(1)] - lb[0]).abs().max() <= TOL
