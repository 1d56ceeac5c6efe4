"""ONNX export: onnxruntime equals PyTorch (offline, and streaming chunk by chunk the way sherpa-onnx runs it),
for the original and a pruned model and several chunk sizes; the interface, metadata and files; int8; long
input; bad input (library and CLI)."""
import base64
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from slimasr.cli import main
from slimasr.export import UntrainedChunkSizeWarning, export_onnx, read_metadata
from slimasr.export.onnx import STREAMING_INPUTS, StreamingCtcOnnx
from slimasr.features import FrontendConfig
from slimasr.model import build_model
from slimasr.prune import remove_layers

pytestmark = pytest.mark.slow  # exports ONNX graphs

TOL = 1e-4
C0, L0 = 4, 2          # the streaming export's chunking (the tiny model trains chunks up to 8)


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    m = build_model("tiny", **kw).eval()
    m.set_cmvn(torch.randn(80) * 0.1, 1.0 + 0.1 * torch.rand(80))   # CMVN must travel inside the graph
    return m


def _session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _sherpa_loop(step, feats, cfg, chunk, left, offset0=None):
    """sherpa-onnx's OnlineRecognizerCtcImpl + OnlineWenetCtcModel loop; ``step(feeds) -> (lp, attn, conv)``.

    Window (chunk-1)*4+7 frames, shift 4*chunk, decoded while start + window < frames; offset starts at
    chunk*left and grows by the output frames; zero caches; the first chunk*left - idx*chunk mask entries false.
    """
    n = cfg["layers"]
    cache = chunk * left
    att = np.zeros((n, cfg["heads"], cache, 2 * cfg["d_k"]), np.float32)
    conv = np.zeros((n, 1, cfg["d"], cfg["p"]), np.float32)
    offset = cache if offset0 is None else offset0
    base = offset
    window, shift = (chunk - 1) * 4 + 7, 4 * chunk
    start, outs = 0, []
    while start + window < feats.shape[0]:
        idx = (offset - base + cache) // chunk - left
        mask = np.ones((1, 1, cache + chunk), bool)
        if idx < left:
            mask[..., : cache - idx * chunk] = False
        lp, att, conv = step({"x": feats[None, start:start + window], "offset": np.array([offset], np.int64),
                              "required_cache_size": np.array([cache], np.int64), "attn_cache": att,
                              "conv_cache": conv, "attn_mask": mask})
        outs.append(lp[0])
        offset += lp.shape[1]
        start += shift
    return np.concatenate(outs)


def _dims(model):
    c = model.config
    return {"layers": len(model.encoder.layers), "heads": c.num_heads, "d_k": c.head_dim, "d": c.d_model,
            "p": c.conv_cache_frames}


def _torch_step(model):
    wrapper = StreamingCtcOnnx(model, C0).eval()

    def step(feeds):
        with torch.no_grad():
            out = wrapper(*(torch.from_numpy(np.asarray(feeds[k])) for k in STREAMING_INPUTS))
        return [o.numpy() for o in out]
    return step


def _ort_step(sess):
    return lambda feeds: sess.run(None, feeds)


@pytest.fixture(scope="module")
def models():
    m = _tiny()
    return {"original": m, "pruned": remove_layers(m, [1, 2])}


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedChunkSizeWarning)     # chunk 4 <= max_chunk_size 8: no warning
        for name, m in models.items():
            out[name, "offline"] = export_onnx(m, root / f"{name}-offline", int8=name == "original")
            out[name, "streaming"] = export_onnx(m, root / f"{name}-streaming", streaming=True, chunk_size=C0,
                                                 left_chunks=L0, int8=name == "original")
    return out


# ------------------------------------------------------------------------------------ numerics
@pytest.mark.parametrize("which", ["original", "pruned"])
def test_offline_onnxruntime_equals_pytorch(models, exports, which):
    m = models[which]
    sess = _session(exports[which, "offline"]["model"])
    torch.manual_seed(1)
    for n, t in [(1, 7), (3, 203), (2, 611)]:
        x = torch.randn(n, t, 80) * 3 + 5
        lens = torch.tensor([t] + [max(7, t - 37 * i) for i in range(1, n)])
        lp, lp_lens = sess.run(None, {"x": x.numpy(), "x_lens": lens.numpy()})
        with torch.no_grad():
            ref, ref_lens = m.ctc_log_probs(x, lens)
        assert lp.shape == tuple(ref.shape) and lp_lens.dtype == np.int64
        assert (lp_lens == ref_lens.numpy()).all()
        diff = max(np.abs(lp[i, :k] - ref[i, :k].numpy()).max() for i, k in enumerate(ref_lens.tolist()))
        assert diff <= TOL, (which, n, t, diff)


@pytest.mark.parametrize("which", ["original", "pruned"])
@pytest.mark.parametrize("chunk,left", [(1, 3), (2, 1), (4, 2), (8, 4)])
def test_streaming_onnxruntime_equals_pytorch_chunk_by_chunk(models, exports, which, chunk, left):
    """One exported file serves every chunking (dynamic time axes). Each chunk's ORT output equals the PyTorch
    wrapper's, and the whole stream equals the model's own streaming reference (growing, unpadded caches)."""
    m = models[which]
    sess = _session(exports[which, "streaming"]["model"])
    torch.manual_seed(2)
    feats = (torch.randn(4 * chunk * (left + 3) + 7, 80) * 3 + 5).numpy()     # the cache fills, then 3 more
    got = _sherpa_loop(_ort_step(sess), feats, _dims(m), chunk, left)
    via_torch = _sherpa_loop(_torch_step(m), feats, _dims(m), chunk, left)
    ref = m.stream_log_probs(torch.from_numpy(feats)[None], chunk, left)[0].numpy()
    assert got.shape[0] % chunk == 0 and got.shape[0] > 0
    assert np.abs(got - via_torch).max() <= TOL
    assert np.abs(got - ref[: got.shape[0]]).max() <= TOL


def test_streaming_equals_chunked_offline(models, exports):
    """The streaming graph, chunk by chunk, equals chunk-masked offline decoding (not vacuous: full context
    differs)."""
    m = models["original"]
    feats = (torch.randn(1, 180, 80) * 3 + 5)
    got = _sherpa_loop(_ort_step(_session(exports["original", "streaming"]["model"])), feats[0].numpy(),
                       _dims(m), C0, L0)
    with torch.no_grad():
        chunked, _ = m.ctc_log_probs(feats, chunk_size=C0, left_chunks=L0)
        full, _ = m.ctc_log_probs(feats)
    n = got.shape[0]
    assert np.abs(got - chunked[0, :n].numpy()).max() <= TOL
    assert np.abs(got - full[0, :n].numpy()).max() > 1e-3


@pytest.mark.parametrize("which", ["original", "pruned"])
@pytest.mark.parametrize("frames", [7, 10, 38, 61, 183])
def test_short_last_chunk_through_the_graph(models, exports, which, frames):
    """The end of a stream (slimasr.chunking, ``Chunking.next_chunk``): the remaining feature frames run through
    the streaming graph as a short last chunk, and the whole stream equals chunk-masked offline decoding, every
    frame of it (nothing lost at the end, nothing invented)."""
    m = models[which]
    sess = _session(exports[which, "streaming"]["model"])
    c = m.chunking(C0, L0)
    dims, cache = _dims(m), c.cache_frames
    feats = (np.random.default_rng(frames).standard_normal((frames, 80)) * 3 + 5).astype(np.float32)
    att = np.zeros((dims["layers"], dims["heads"], cache, 2 * dims["d_k"]), np.float32)
    conv = np.zeros((dims["layers"], 1, dims["d"], dims["p"]), np.float32)
    start, offset, outs, short = 0, cache, [], 0
    while n := c.next_chunk(frames - start, finished=True, first=not outs):
        mask = np.ones((1, 1, cache + c.output_frames(n)), bool)
        mask[..., : cache - min(len(outs) * C0, cache)] = False
        lp, att, conv = sess.run(None, {"x": feats[None, start:start + n], "offset": np.array([offset], np.int64),
                                        "required_cache_size": np.array([cache], np.int64), "attn_cache": att,
                                        "conv_cache": conv, "attn_mask": mask})
        outs.append(lp[0])
        offset += lp.shape[1]
        if n < c.window:
            short += 1
            break
        start += c.shift
    got = np.concatenate(outs)
    with torch.no_grad():
        ref, _ = m.ctc_log_probs(torch.from_numpy(feats)[None], chunk_size=C0, left_chunks=L0)
    assert got.shape == ref[0].shape and got.shape[0] == c.output_frames(frames)
    assert np.abs(got - ref[0].numpy()).max() <= TOL
    assert short == int(c.output_frames(frames) % C0 != 0)      # a short chunk ran exactly when one was needed


def test_offset_only_sets_positions(models, exports):
    """An hour-long stream has offset ~ 90000: outputs do not depend on how large the offset is."""
    m = models["original"]
    sess = _session(exports["original", "streaming"]["model"])
    feats = (np.random.default_rng(3).standard_normal((150, 80)) * 3 + 5).astype(np.float32)
    a = _sherpa_loop(_ort_step(sess), feats, _dims(m), C0, L0)
    b = _sherpa_loop(_ort_step(sess), feats, _dims(m), C0, L0, offset0=10**12)
    assert np.abs(a - b).max() <= 1e-5


@pytest.mark.slow
def test_hour_long_stream(models, exports):
    """One hour of 10 ms frames (360000) through the streaming graph: offset grows to 90000 without error."""
    m = models["pruned"]
    sess = _session(exports["pruned", "streaming"]["model"])
    chunk, left = 32, 1
    cache, window = chunk * left, (chunk - 1) * 4 + 7
    d = _dims(m)
    pool = (np.random.default_rng(4).standard_normal((16, 1, window, 80)) * 3 + 5).astype(np.float32)
    att = np.zeros((d["layers"], d["heads"], cache, 2 * d["d_k"]), np.float32)
    conv = np.zeros((d["layers"], 1, d["d"], d["p"]), np.float32)
    offset, mask = cache, np.ones((1, 1, cache + chunk), bool)
    calls = 360000 // (4 * chunk)
    for i in range(calls):
        lp, att, conv = sess.run(None, {"x": pool[i % 16], "offset": np.array([offset], np.int64),
                                        "required_cache_size": np.array([cache], np.int64), "attn_cache": att,
                                        "conv_cache": conv, "attn_mask": mask})
        offset += lp.shape[1]
    assert offset == cache + calls * chunk >= 90000
    assert np.isfinite(lp).all() and np.isfinite(att).all() and np.allclose(np.exp(lp).sum(-1), 1, atol=1e-4)


def test_long_offline_input(models, exports):
    """90 s in one call (no positional table, no length limit); PyTorch uses blocked attention here."""
    m = models["original"]
    sess = _session(exports["original", "offline"]["model"])
    x = torch.randn(1, 9000, 80) * 3 + 5
    lp, lens = sess.run(None, {"x": x.numpy(), "x_lens": np.array([9000])})
    with torch.no_grad():
        ref, _ = m.ctc_log_probs(x)
    assert lp.shape[1] == 2249 == int(lens[0])
    assert np.abs(lp - ref.numpy()).max() <= TOL


# ------------------------------------------------------------------------------------ interface and files
def test_graph_interface_checker_and_full_optimization(models, exports):
    for (which, kind), files in exports.items():
        m = onnx.load(str(files["model"]))
        onnx.checker.check_model(m, full_check=True)
        names = [i.name for i in m.graph.input]
        if kind == "offline":
            assert names == ["x", "x_lens"]
            assert [o.name for o in m.graph.output] == ["log_probs", "log_probs_lens"]
        else:
            assert names == list(STREAMING_INPUTS)          # all six survive export, in sherpa-onnx's order
            assert [o.name for o in m.graph.output] == ["log_probs", "next_attn_cache", "next_conv_cache"]
        sess = _session(files["model"])                     # loads with ORT_ENABLE_ALL
        types = {i.name: i.type for i in sess.get_inputs()}
        assert types["x"] == "tensor(float)"
        if kind == "streaming":
            assert types["offset"] == types["required_cache_size"] == "tensor(int64)"
            assert types["attn_mask"] == "tensor(bool)"
            cfg = models[which].config
            shapes = {i.name: i.shape for i in sess.get_inputs()}
            assert shapes["conv_cache"] == [len(models[which].encoder.layers), 1, cfg.d_model, cfg.conv_cache_frames]
            assert shapes["attn_cache"][0] == len(models[which].encoder.layers)
            assert shapes["attn_cache"][3] == 2 * cfg.head_dim


@pytest.mark.parametrize("which", ["original", "pruned"])
def test_metadata_json_and_tokens(models, exports, which):
    model = models[which]
    cfg = model.config
    files = exports[which, "streaming"]
    meta = read_metadata(files["model"])
    n = len(model.encoder.layers)
    sherpa = {"model_type": "wenet_ctc", "head": str(cfg.num_heads), "num_blocks": str(n),
              "output_size": str(cfg.d_model), "cnn_module_kernel": str((cfg.kernel_size - 1) // 2 + 1),
              "right_context": "6", "subsampling_factor": "4", "vocab_size": str(cfg.vocab_size),
              "chunk_size": str(C0), "left_chunks": str(L0)}
    assert {k: meta[k] for k in sherpa} == sherpa
    assert meta["slimasr_kernel_size"] == str(cfg.kernel_size)
    assert meta["slimasr_kind"] == "streaming"
    expected_layers = None if which == "original" else [0, 3]
    assert json.loads(meta["slimasr_original_layers"]) == expected_layers
    assert FrontendConfig.from_json(meta["slimasr_frontend"]) == FrontendConfig.for_model(80)
    # sherpa-onnx allocates conv_cache (num_blocks, 1, output_size, cnn_module_kernel - 1): must be the graph's
    shape = [d.dim_value for d in onnx.load(str(files["model"])).graph.input[4].type.tensor_type.shape.dim]
    assert shape == [n, 1, cfg.d_model, int(meta["cnn_module_kernel"]) - 1]

    js = json.loads(files["config"].read_text())
    assert js["format"] == "slimasr-export" and js["kind"] == "streaming"
    assert (js["chunk_size"], js["left_chunks"], js["required_cache_size"]) == (C0, L0, C0 * L0)
    assert (js["window"], js["shift"]) == ((C0 - 1) * 4 + 7, 4 * C0)
    assert (js["num_layers"], js["num_heads"], js["head_dim"], js["d_model"]) == (n, cfg.num_heads, cfg.head_dim,
                                                                                  cfg.d_model)
    assert (js["kernel_size"], js["conv_cache_frames"], js["vocab_size"]) == (cfg.kernel_size,
                                                                              cfg.conv_cache_frames, cfg.vocab_size)
    assert js["original_layers"] == expected_layers and js["model_config"]["num_layers"] == n
    assert FrontendConfig.from_dict(js["frontend"]) == FrontendConfig.for_model(80)
    assert [i["name"] for i in js["inputs"]] == list(STREAMING_INPUTS)
    assert js["files"]["model"] == "model.onnx" and js["files"]["tokens"] == "tokens.txt"

    lines = files["tokens"].read_text().splitlines()
    assert len(lines) == cfg.vocab_size
    assert lines[0] == "<blank> 0" and lines[-1] == f"<sos/eos> {cfg.vocab_size - 1}"
    assert all(line.split()[1] == str(i) for i, line in enumerate(lines))

    off = json.loads(exports[which, "offline"]["config"].read_text())
    assert off["kind"] == "offline" and off["chunk_size"] is None
    off_meta = read_metadata(exports[which, "offline"]["model"])
    assert off_meta["subsampling_factor"] == "4" and off_meta["slimasr_kind"] == "offline"
    assert "chunk_size" not in off_meta and "slimasr_window" not in off_meta


def test_tokenizer_travels(tmp_path):
    from slimasr.tokenizer import Tokenizer, train_tokenizer

    texts = ["the quick brown fox jumps over the lazy dog", "hello world this is a test",
             "streaming speech recognition with conformer models", "pack my box with five dozen liquor jugs",
             "sphinx of black quartz judge my vow"] * 4
    tok = train_tokenizer(texts, vocab_size=38, out_dir=tmp_path / "tok")
    m = _tiny()
    m.attach_tokenizer(tok.to_bytes())
    files = export_onnx(m, tmp_path / "out")
    assert files["tokens"].read_text() == (tmp_path / "tok" / "tokens.txt").read_text()
    assert files["tokenizer"].read_bytes() == tok.to_bytes()
    meta = read_metadata(files["model"])
    assert base64.b64decode(meta["slimasr_tokenizer"]) == tok.to_bytes()
    assert Tokenizer.from_bytes(files["tokenizer"].read_bytes()).pieces() == tok.pieces()

    bad = build_model("tiny", vocab_size=50)
    bad.attach_tokenizer(tok.to_bytes())
    with pytest.raises(ValueError, match="tokenizer has 40 symbols"):
        export_onnx(bad, tmp_path / "bad")


def test_int8(models, exports):
    for kind in ("offline", "streaming"):
        files = exports["original", kind]
        q = onnx.load(str(files["model_int8"]))
        onnx.checker.check_model(q, full_check=True)
        ops = {n.op_type for n in q.graph.node}
        assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
        assert files["model_int8"].stat().st_size < 0.9 * files["model"].stat().st_size
        assert read_metadata(files["model_int8"])["vocab_size"] == "40"
        js = json.loads(files["config"].read_text())
        assert js["int8"]["op_types"] == ["MatMul"] and js["files"]["model_int8"] == "model.int8.onnx"
    m = models["original"]
    x = (np.random.default_rng(5).standard_normal((1, 300, 80)) * 3 + 5).astype(np.float32)
    feeds = {"x": x, "x_lens": np.array([300])}
    f = _session(exports["original", "offline"]["model"]).run(None, feeds)[0]
    q = _session(exports["original", "offline"]["model_int8"]).run(None, feeds)[0]
    assert np.isfinite(q).all() and 0 < np.abs(f - q).max() < 1.0
    s = _sherpa_loop(_ort_step(_session(exports["original", "streaming"]["model_int8"])), x[0], _dims(m), C0, L0)
    assert np.isfinite(s).all()


def test_int8_with_conv(models, tmp_path):
    files = export_onnx(models["original"], tmp_path / "q", int8=True, int8_op_types=("MatMul", "Conv"))
    ops = {n.op_type for n in onnx.load(str(files["model_int8"])).graph.node}
    assert "ConvInteger" in ops
    x = np.zeros((1, 50, 80), np.float32)
    assert np.isfinite(_session(files["model_int8"]).run(None, {"x": x, "x_lens": np.array([50])})[0]).all()


# ------------------------------------------------------------------------------------ bad input
def test_bad_input_library(models, tmp_path):
    m = models["original"]
    with pytest.raises(ValueError, match="expected a slimasr ASRModel"):
        export_onnx(torch.nn.Linear(80, 40), tmp_path / "a")
    with pytest.raises(ValueError, match="left_chunks must be an integer >= 1"):
        export_onnx(m, tmp_path / "b", streaming=True, left_chunks=0)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        export_onnx(m, tmp_path / "b", streaming=True, chunk_size=0)
    with pytest.raises(ValueError, match="opset must be in"):
        export_onnx(m, tmp_path / "b", opset=9)
    with pytest.raises(ValueError, match="int8_op_types"):
        export_onnx(m, tmp_path / "b", int8=True, int8_op_types=("LSTM",))
    assert not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="already exists"):
        export_onnx(m, tmp_path / "c")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(ValueError, match="not a directory"):
        export_onnx(m, tmp_path / "f")


def test_untrained_chunk_size_warns(models, tmp_path):
    m = models["original"]                                   # max_chunk_size 8
    with pytest.warns(UntrainedChunkSizeWarning, match="max_chunk_size=8"):
        export_onnx(m, tmp_path / "a", streaming=True, chunk_size=16, left_chunks=1)
    full = build_model("tiny", dynamic_chunk=False)
    with pytest.warns(UntrainedChunkSizeWarning, match="full context only"):
        export_onnx(full, tmp_path / "c", streaming=True, chunk_size=4, left_chunks=1)


def test_force_overwrites_and_drops_stale_files(tmp_path):
    m = _tiny()
    m.train()                                                # the caller's model stays as it was
    before = {k: v.clone() for k, v in m.state_dict().items()}
    first = export_onnx(m, tmp_path / "o", int8=True)
    assert first["model_int8"].exists()
    second = export_onnx(m, tmp_path / "o", streaming=True, chunk_size=4, left_chunks=1, force=True)
    assert "model_int8" not in second and not (tmp_path / "o" / "model.int8.onnx").exists()
    assert json.loads(second["config"].read_text())["kind"] == "streaming"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary directory left behind
    assert m.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


# ------------------------------------------------------------------------------------ CLI
def test_cli_onnx(models, tmp_path):
    model_path = models["pruned"].save(tmp_path / "pruned.pt")
    r = CliRunner().invoke(main, ["export", "onnx", "--model", str(model_path), "--out", str(tmp_path / "s"),
                                  "--streaming", "--chunk-size", "4", "--left-chunks", "2", "--int8"])
    assert r.exit_code == 0, r.output
    assert "streaming ONNX export of a 2-layer model (kept original layers [0, 3])" in r.output
    assert "of the float model's size" in r.output
    assert "sherpa-onnx: OnlineRecognizer.from_wenet_ctc(model=..., tokens=..., chunk_size=4, num_left_chunks=2)" \
        in r.output
    meta = read_metadata(tmp_path / "s" / "model.onnx")
    assert meta["num_blocks"] == "2" and json.loads(meta["slimasr_original_layers"]) == [0, 3]

    again = CliRunner().invoke(main, ["export", "onnx", "--model", str(model_path), "--out", str(tmp_path / "s")])
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    forced = CliRunner().invoke(main, ["export", "onnx", "--model", str(model_path), "--out", str(tmp_path / "s"),
                                       "--streaming", "--chunk-size", "12", "--left-chunks", "1", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "Warning: chunk_size=12 is larger" in forced.output


def test_cli_errors(tmp_path, monkeypatch):
    import slimasr.model.asr as asr

    monkeypatch.setattr(asr, "default_model_path", lambda: tmp_path / "no-default" / "model.pt")
    r = CliRunner().invoke(main, ["export", "onnx", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no --model given" in r.output and "default model" in r.output

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    r = CliRunner().invoke(main, ["export", "onnx", "--model", str(foreign), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "not a slimasr model checkpoint" in r.output

    r = CliRunner().invoke(main, ["export", "onnx", "--model", str(tmp_path / "missing.pt"), "--out",
                                  str(tmp_path / "o")])
    assert r.exit_code == 1 and "model file not found" in r.output

    m = build_model("tiny")
    path = m.save(tmp_path / "m.pt")
    r = CliRunner().invoke(main, ["export", "onnx", "--model", str(path), "--out", str(tmp_path / "o"),
                                  "--streaming", "--left-chunks", "0"])
    assert r.exit_code == 2 and "Invalid value for '--left-chunks'" in r.output
    assert "Traceback" not in r.output


def test_cli_help_has_examples():
    for args in (["export"], ["export", "onnx"], ["export", "tensorrt"]):
        r = CliRunner().invoke(main, args + ["--help"])
        assert r.exit_code == 0 and "Example:" in r.output and "slimasr export" in r.output


def test_cli_streaming_refusal_names_the_model(tmp_path):
    """A model that cannot stream (imported NeMo: per-utterance normalisation): --streaming is refused with the
    model's name and the way out."""
    from pathlib import Path

    from slimasr.importers import import_nemo

    src = next((Path(__file__).parent / "fixtures" / "import" / "nemo_fastconformer_ctc" / "model").glob("*.nemo"))
    pt = import_nemo(src).save(tmp_path / "nemo.pt")
    r = CliRunner().invoke(main, ["export", "onnx", "--model", str(pt), "--out", str(tmp_path / "o"), "--streaming"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"--model {pt}" in r.output and "per utterance" in r.output and "without --streaming" in r.output


@pytest.mark.parametrize("case,why", [("wenet_u2pp_causal", "this model's differ (high_freq=0.0, snip_edges=True)"),
                                      ("espnet_conformer", "this model reads stft_mel features")])
def test_cli_streaming_export_says_when_sherpa_onnx_cannot_run_it_as_is(case, why, tmp_path):
    """The streaming graph has sherpa-onnx's interface, but sherpa-onnx computes its own Kaldi fbank with fixed
    settings: for an imported model with other features the export must not print the from_wenet_ctc call that
    would decode wrong features, and says why instead."""
    from pathlib import Path

    from slimasr.importers import import_espnet, import_wenet

    d = Path(__file__).parent / "fixtures" / "import" / case
    if case.startswith("wenet"):
        model = import_wenet(d / "model")
    else:
        exp = d / "model" / "exp" / "asr_train_conformer_tiny_raw_en_bpe60"
        model = import_espnet(exp / "config.yaml", exp / "model.pth")
    pt = model.save(tmp_path / "m.pt")
    r = CliRunner().invoke(main, ["export", "onnx", "--model", str(pt), "--out", str(tmp_path / "o"), "--streaming",
                                  "--chunk-size", "4", "--left-chunks", "2"])
    assert r.exit_code == 0, r.output
    assert "from_wenet_ctc" not in r.output
    assert "sherpa-onnx: not as is: sherpa-onnx computes Kaldi fbank" in r.output and why in r.output
