"""Independent proof: sherpa-onnx (pip) runs our exports and its greedy output equals ours.

The models are untrained, so the check is on token sequences: sherpa-onnx's tokens against greedy CTC decoding
of our log-probabilities (onnxruntime and PyTorch) computed the way sherpa-onnx computes them (its features,
its chunk loop). The CTC head's blank bias is pushed down so that every utterance yields many non-blank tokens
and the comparison is not vacuous.

The int8 models are compared with a tolerance (token edit distance <= 15%): the quantized MatMul kernels of the
onnxruntime inside sherpa-onnx 2.0.1 (1.28) and of onnxruntime 1.31 round differently, which flips the untrained
model's near-tie frames (onnxruntime 1.28 in Python reproduces sherpa-onnx's int8 tokens exactly).

sherpa-onnx's *offline* recognizer dithers its features although its config says ``dither=0`` (see
``benchmarks/sherpa_agreement.py``, ``offline_dither_probe``): its output is a sample, and on the near-tie frames of
an untrained model one int16 step of dither now and then flips a token. The utterances are loud (the dither is
small against them) and end with a low noise floor, not digital silence, and each offline comparison takes the
closest of a few sherpa-onnx decodes: a wrong graph would miss on all of them.
"""
import numpy as np
import onnxruntime as ort
import pytest
import torch

sherpa_onnx = pytest.importorskip("sherpa_onnx")

from slimasr.export import export_onnx  # noqa: E402
from slimasr.export.onnx import STREAMING_INPUTS, StreamingCtcOnnx  # noqa: E402
from slimasr.features import compute_features  # noqa: E402
from slimasr.model import build_model  # noqa: E402
from slimasr.prune import remove_layers  # noqa: E402

pytestmark = pytest.mark.slow  # exports and runs sherpa-onnx

SR = 16000
C0, L0 = 4, 2


def _model(**kw):
    torch.manual_seed(0)
    m = build_model("tiny", **kw).eval()
    m.set_cmvn(torch.full((80,), 10.0), torch.full((80,), 0.3))     # roughly normalise log-mel energies
    with torch.no_grad():
        m.ctc.bias[0] -= 3.0                                           # fewer blanks: many tokens per utterance
    return m


def _utterances(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = np.arange(int((1.0 + 0.7 * k) * SR)) / SR
        f = rng.uniform(100, 3000, size=4)
        w = 0.1 * sum(np.sin(2 * np.pi * fi * t * (1 + 0.3 * np.sin(np.pi * t))) for fi in f)
        w = w + 0.02 * rng.standard_normal(t.size)
        tail = 1e-3 * rng.standard_normal(int(0.66 * SR))              # sherpa decodes only full windows: pad
        out.append(np.concatenate([w, tail]).astype(np.float32))
    return out


def _greedy(lp):
    out, prev = [], -1
    for y in lp.argmax(-1):
        if y != 0 and y != prev:
            out.append(int(y))
        prev = y
    return out


def _edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[len(b)]


def _agree(theirs, ours, key):
    """Exact for float models; int8: near-equal (see the module docstring)."""
    if key == "model_int8":
        return _edit_distance(theirs, ours) <= 0.15 * len(ours)
    return theirs == ours


def _session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _stream(step, feats, model, chunk, left):
    """sherpa-onnx's WeNet CTC chunk loop (online-recognizer-ctc-impl.h, online-wenet-ctc-model.cc)."""
    cfg, n = model.config, len(model.encoder.layers)
    cache, window, shift = chunk * left, (chunk - 1) * 4 + 7, chunk * 4
    att = np.zeros((n, cfg.num_heads, cache, 2 * cfg.head_dim), np.float32)
    conv = np.zeros((n, 1, cfg.d_model, cfg.conv_cache_frames), np.float32)
    offset, start, outs = cache, 0, []
    while start + window < feats.shape[0]:
        idx = offset // chunk - left
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


def _torch_step(model):
    w = StreamingCtcOnnx(model, C0).eval()

    def step(feeds):
        with torch.no_grad():
            return [o.numpy() for o in w(*(torch.from_numpy(np.asarray(feeds[k])) for k in STREAMING_INPUTS))]
    return step


def _ids(tokens_txt, symbols):
    table = {}
    for line in tokens_txt.read_text(encoding="utf-8").splitlines():
        sym, i = line.rsplit(" ", 1)
        table[sym.replace("\u2581", " ")] = int(i)        # sherpa-onnx shows the SentencePiece ▁ as a space
    return [table[s] for s in symbols]


def _sherpa_online(files, model_file, chunk, left, wave):
    rec = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(tokens=str(files["tokens"]), model=str(model_file),
                                                      chunk_size=chunk, num_left_chunks=left, num_threads=1)
    s = rec.create_stream()
    s.accept_waveform(SR, wave)
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    r = rec.get_result_all(s)
    return _ids(files["tokens"], r.tokens), r


def _sherpa_offline(files, model_file, wave, closest_to=None, tries=3):
    """sherpa-onnx's offline tokens; with ``closest_to``, the decode (of ``tries``) closest to those tokens
    (its features are dithered: see the module docstring)."""
    rec = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model=str(model_file), tokens=str(files["tokens"]),
                                                       num_threads=1)
    best = None
    for _ in range(tries if closest_to is not None else 1):
        s = rec.create_stream()
        s.accept_waveform(SR, wave)
        rec.decode_stream(s)
        ids = _ids(files["tokens"], s.result.tokens)
        d = _edit_distance(ids, closest_to) if closest_to is not None else 0
        if best is None or d < best[0]:
            best = (d, ids, s.result)
        if d == 0:
            break
    return best[1], best[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sherpa")
    m = _model()
    pruned = remove_layers(m, [0, 2])
    return {
        "model": m, "pruned": pruned,
        "streaming": export_onnx(m, root / "streaming", streaming=True, chunk_size=C0, left_chunks=L0, int8=True),
        "offline": export_onnx(m, root / "offline", int8=True),
        "pruned_streaming": export_onnx(pruned, root / "pruned", streaming=True, chunk_size=C0, left_chunks=L0),
    }


@pytest.mark.parametrize("chunk,left", [(C0, L0), (8, 1)])
def test_streaming_tokens_equal(setup, chunk, left):
    """sherpa-onnx's streaming recognizer = our onnxruntime loop = the PyTorch wrapper, token for token (also
    at a chunking other than the exported one: the time axes are dynamic)."""
    m, files = setup["model"], setup["streaming"]
    sess = _session(files["model"])
    for wave in _utterances():
        theirs, _ = _sherpa_online(files, files["model"], chunk, left, wave)
        feats = compute_features(wave)
        ours = _greedy(_stream(lambda f: sess.run(None, f), feats, m, chunk, left))
        via_torch = _greedy(_stream(_torch_step(m), feats, m, chunk, left))
        assert len(ours) >= 5
        assert theirs == ours == via_torch


def test_streaming_pruned_and_int8(setup):
    for model, files, key in ((setup["pruned"], setup["pruned_streaming"], "model"),
                              (setup["model"], setup["streaming"], "model_int8")):
        sess = _session(files[key])
        for wave in _utterances(2, seed=1):
            theirs, _ = _sherpa_online(files, files[key], C0, L0, wave)
            ours = _greedy(_stream(lambda f: sess.run(None, f), compute_features(wave), model, C0, L0))
            assert len(ours) >= 5 and _agree(theirs, ours, key), key


def test_offline_tokens_equal(setup):
    m, files = setup["model"], setup["offline"]
    for key in ("model", "model_int8"):
        sess = _session(files[key])
        for wave in _utterances():
            feats = compute_features(wave)
            lp, lens = sess.run(None, {"x": feats[None], "x_lens": np.array([feats.shape[0]])})
            ours = _greedy(lp[0, : int(lens[0])])
            theirs, _ = _sherpa_offline(files, files[key], wave, closest_to=ours)
            assert len(ours) >= 5 and _agree(theirs, ours, key), key
            if key == "model":
                with torch.no_grad():
                    ref, _ = m.ctc_log_probs(torch.from_numpy(feats)[None])
                assert _greedy(ref[0].numpy()) == ours


def test_transcripts_with_a_tokenizer(tmp_path):
    """With a real SentencePiece tokenizer, sherpa-onnx's text equals slimasr's decoded greedy transcript."""
    from slimasr.tokenizer import train_tokenizer

    texts = ["the quick brown fox jumps over the lazy dog", "hello world this is a test",
             "streaming speech recognition with conformer models", "pack my box with five dozen liquor jugs",
             "sphinx of black quartz judge my vow"] * 4
    tok = train_tokenizer(texts, vocab_size=38, out_dir=tmp_path / "tok")
    m = _model()
    m.attach_tokenizer(tok.to_bytes())
    files = export_onnx(m, tmp_path / "s", streaming=True, chunk_size=C0, left_chunks=L0)
    sess = _session(files["model"])
    for wave in _utterances(2, seed=2):
        ids, result = _sherpa_online(files, files["model"], C0, L0, wave)
        ours = _greedy(_stream(lambda f: sess.run(None, f), compute_features(wave), m, C0, L0))
        assert ids == ours and len(ours) >= 5
        assert result.text.strip() == tok.decode(ours).strip()


def test_sherpa_offline_backend_says_its_results_are_a_sample(setup, caplog):
    """decode / bench with --backend sherpa-onnx on an offline export warn that sherpa-onnx dithers its offline
    features (a result differing from the onnx backend's is not a difference of the graphs); streaming does not."""
    import logging

    from slimasr.decoding import BackendConfig, open_backend

    with caplog.at_level(logging.WARNING, logger="slimasr.decoding"):
        open_backend(setup["offline"]["model"].parent, BackendConfig(backend="sherpa-onnx"))
    assert any("offline recognizer dithers its features" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="slimasr.decoding"):
        open_backend(setup["streaming"]["model"].parent, BackendConfig(backend="sherpa-onnx", chunk_size=C0))
    assert not any("dithers" in r.getMessage() for r in caplog.records)
