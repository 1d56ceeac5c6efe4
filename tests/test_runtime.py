"""The torch-free runtime: streaming equals the model's chunk-masked inference (default end of stream) and
sherpa-onnx (its compatibility setting), offline batches, overlapping chunks (the paper's configuration), audio
conversion and errors, poisoned streams, streams across threads.

Fixtures use torch to build and export a tiny model; the runtime itself is checked not to import torch.
"""
import json
import logging
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from serve_helpers import make_wave  # noqa: E402
from slimasr.chunking import SHERPA_ONNX_TAIL_SECONDS, EndOfStream  # noqa: E402
from slimasr.audio import resample  # noqa: E402
from slimasr.features import compute_features  # noqa: E402
from slimasr.runtime import (DecodingConfig, NonFiniteStateError, OfflineRecognizer, OnlineRecognizer,  # noqa: E402
                             Recognizer, RecognizerConfig, StreamingConfig)

pytestmark = pytest.mark.slow  # exports ONNX graphs and runs them

CHUNK, LEFT = 8, 2
TEXTS = ["the cat sat on the mat", "a dog barked at the moon all night", "she sells sea shells by the sea shore",
         "peter piper picked a peck of pickled peppers", "how much wood would a woodchuck chuck"] * 20


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_emitting_model):
    """A tiny untrained model with a tokenizer, exported for streaming (float + int8) and offline."""
    from slimasr.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("rt")
    m, tok = tiny_emitting_model(TEXTS, root / "tok")
    export_onnx(m, root / "stream", streaming=True, chunk_size=CHUNK, left_chunks=LEFT, int8=True)
    export_onnx(m, root / "offline", streaming=False)
    return {"model": m, "stream": root / "stream", "offline": root / "offline", "tok": tok, "root": root}


@pytest.fixture(scope="module")
def rec(exported):
    return Recognizer.from_onnx(exported["stream"], num_threads=1, keep_log_probs=True)


@pytest.fixture(scope="module")
def rec_sherpa(exported):
    """sherpa-onnx's end of stream (0.66 s of zero padding, full windows only)."""
    return Recognizer.from_onnx(exported["stream"], streaming=StreamingConfig.sherpa_onnx())


def stream_decode(rec, wave, sr=16000, piece=1234):
    s = rec.create_stream()
    partial = []
    for k in range(0, len(wave), piece):
        s.accept_waveform(sr, wave[k:k + piece])
        partial.append(rec.decode(s))
    s.input_finished()
    return s, rec.decode(s), partial


def sherpa_online(model, tokens, wave, chunk=CHUNK, left=LEFT):
    import sherpa_onnx

    r = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(model=str(model), tokens=str(tokens), chunk_size=chunk,
                                                    num_left_chunks=left, num_threads=1)
    s = r.create_stream()
    s.accept_waveform(16000, wave)
    s.accept_waveform(16000, np.zeros(int(SHERPA_ONNX_TAIL_SECONDS * 16000), np.float32))   # its examples' tail
    s.input_finished()
    while r.is_ready(s):
        r.decode_stream(s)
    return r.get_result_all(s)


def pieces(rec, tokens):
    return [rec.vocab.symbols[i].replace("\u2581", " ") for i in tokens]  # sherpa-onnx shows ▁ as a space


def test_runtime_never_imports_torch(exported, tmp_path):
    pytest.importorskip("kenlm", reason="the kenlm module is not installed")
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=4\nngram 2=1\n\n\\1-grams:\n-1.0\t<unk>\t0\n-99\t<s>\t0\n"
                    "-1.0\t</s>\t0\n-0.5\tpick\t0\n\n\\2-grams:\n-0.1\t<s> pick\n\n\\end\\\n")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from slimasr.runtime import Recognizer, DecodingConfig
        t = np.arange(16000) / 16000
        x = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
        r = Recognizer.from_onnx({str(exported["stream"])!r},
                                 decoding=DecodingConfig(method="beam", beam_size=4, lm={str(arpa)!r}))
        s = r.create_stream(); s.accept_waveform(16000, x); r.decode(s); s.input_finished(); r.decode(s)
        Recognizer.from_onnx({str(exported["offline"])!r}).transcribe([x, x])
        Recognizer.from_onnx({str(exported["stream"])!r}, int8=True).transcribe(x)
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
        print("ok")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-3000:]


def test_streaming_equals_sherpa_onnx(exported, rec_sherpa):
    pytest.importorskip("sherpa_onnx")
    rec = rec_sherpa
    for seed, seconds in [(0, 3.3), (1, 1.37)]:
        wave = make_wave(seconds, seed)
        _, final, partial = stream_decode(rec, wave)
        ref = sherpa_online(exported["stream"] / "model.onnx", exported["stream"] / "tokens.txt", wave)
        assert final.is_final and len(final.tokens) > 3
        assert pieces(rec, final.tokens) == list(ref.tokens)                       # identical, not close
        assert final.timestamps == pytest.approx(list(ref.timestamps), abs=1e-5)
        assert final.text == ref.text.strip()
        # partial results grow monotonically towards the final one
        assert not any(p.is_final for p in partial)
        assert all(final.tokens[: len(p.tokens)] == p.tokens for p in partial)


def test_chunking_chosen_at_load_time_equals_sherpa_onnx(exported):
    """The graph's time axes are dynamic: other chunk sizes / left contexts than the exported ones."""
    pytest.importorskip("sherpa_onnx")
    wave = make_wave(2.5, 5)
    for chunk, left in [(16, 2), (4, 4)]:
        r = Recognizer.from_onnx(exported["stream"], streaming=StreamingConfig.sherpa_onnx(chunk_size=chunk,
                                                                                         left_chunks=left))
        _, final, _ = stream_decode(r, wave)
        ref = sherpa_online(exported["stream"] / "model.onnx", exported["stream"] / "tokens.txt", wave, chunk, left)
        assert pieces(r, final.tokens) == list(ref.tokens) and final.tokens


def test_int8_streaming_equals_sherpa_onnx(exported):
    pytest.importorskip("sherpa_onnx")
    rec8 = Recognizer.from_onnx(exported["stream"], int8=True, streaming=StreamingConfig.sherpa_onnx())
    assert rec8.model_file.name == "model.int8.onnx"
    wave = make_wave(2.0, 2)
    _, final, _ = stream_decode(rec8, wave)
    ref = sherpa_online(exported["stream"] / "model.int8.onnx", exported["stream"] / "tokens.txt", wave)
    assert pieces(rec8, final.tokens) == list(ref.tokens)


def test_streaming_equals_model_reference(exported, rec):
    """Every emitted frame, to the end of the audio (a short last chunk): the PyTorch model's chunk-masked
    log-probabilities and ``stream_log_probs``."""
    m = exported["model"]
    for seconds in (3.3, 1.37, 0.52):
        wave = make_wave(seconds, 0)
        s, final, _ = stream_decode(rec, wave, piece=999)
        feats = torch.from_numpy(compute_features(wave))[None]
        with torch.no_grad():
            masked, _ = m.ctc_log_probs(feats, chunk_size=CHUNK, left_chunks=LEFT)
            streamed = m.stream_log_probs(feats, CHUNK, LEFT)
        ours = s.log_probs
        assert ours.shape == masked[0].shape == streamed[0].shape
        for ref in (masked[0].numpy(), streamed[0].numpy()):
            np.testing.assert_allclose(ours, ref, atol=1e-4)
            assert (ours.argmax(-1) == ref.argmax(-1)).all()
    assert rec.plan.chunking.output_frames(feats.shape[1]) % CHUNK != 0     # the last chunk was short


def test_overlapping_chunks_paper_style(exported):
    """hop < chunk: chunk i covers [i*hop, i*hop + C) and emits its first hop (the last one: all its frames);
    compared with the model run on the features shifted by j*hop (lane j) with chunk masks of the same C and L."""
    m = exported["model"]
    hop = CHUNK // 2
    r = Recognizer.from_onnx(exported["stream"], streaming=StreamingConfig(chunk_size=CHUNK, hop=hop,
                                                                           left_chunks=LEFT), keep_log_probs=True)
    c = r.plan.chunking
    for seconds in (3.3, 2.05):
        wave = make_wave(seconds, 0)
        s, final, _ = stream_decode(r, wave)
        lp = s.log_probs
        feats = torch.from_numpy(compute_features(wave))[None]
        total = c.output_frames(feats.shape[1])
        assert final.is_final and lp.shape[0] == total          # every frame emitted once, none invented
        refs = []
        for j in range(c.lanes):
            with torch.no_grad():
                refs.append(m.ctc_log_probs(feats[:, j * c.hop_shift:], chunk_size=CHUNK,
                                            left_chunks=LEFT)[0][0].numpy())
        i = 0
        while i * hop < total:
            j, k = i % c.lanes, i // c.lanes
            n = hop if (i + 1) * hop < total and i * hop + CHUNK < total else total - i * hop
            np.testing.assert_allclose(lp[i * hop:i * hop + n], refs[j][k * CHUNK:k * CHUNK + n], atol=1e-4)
            if n != hop:
                break
            i += 1


def test_streaming_config_units(rec):
    exported = rec.info.chunking
    p = StreamingConfig.paper().resolve(exported)   # 64 / 32 / 128 feature frames = 16 / 8 / 32 encoder frames
    assert (p.chunk_size, p.hop, p.left_chunks) == (16, 8, 2)
    e = StreamingConfig.from_frames(64, 32, 128, unit="encoder").resolve(exported)
    assert (e.chunk_size, e.hop, e.left_chunks) == (64, 32, 2)
    assert StreamingConfig().resolve(exported) == exported
    with pytest.raises(ValueError, match="divide"):
        StreamingConfig(chunk_size=16, hop=6)
    with pytest.raises(ValueError, match="multiples"):
        StreamingConfig.from_frames(62, 62, 124).resolve(exported)
    with pytest.raises(ValueError, match="sherpa-onnx"):
        EndOfStream(tail_padding=0.5)
    assert EndOfStream().tail_samples(16000, 160, exported) == 0
    assert EndOfStream.sherpa_onnx().tail_samples(16000, 160, exported) == 10560          # 0.66 s
    assert EndOfStream.sherpa_onnx().tail_samples(16000, 160, e) == (4 * 32 + 1) * 160    # at least one hop


def test_offline_transcribe_equals_sherpa_onnx_and_batching(exported, rec_sherpa):
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    off = Recognizer.from_onnx(exported["offline"], batch_size=3)
    waves = [make_wave(s, k) for k, s in enumerate([1.0, 2.7, 0.4, 1.9, 3.1])]
    batch = off.transcribe(waves)
    single = [Recognizer.from_onnx(exported["offline"], batch_size=1).transcribe(w) for w in waves]
    sr = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model=str(exported["offline"] / "model.onnx"),
                                                      tokens=str(exported["offline"] / "tokens.txt"), num_threads=1)
    for w, b, one in zip(waves, batch, single):
        assert b.tokens == one.tokens and b.is_final
        s = sr.create_stream()
        s.accept_waveform(16000, w)
        sr.decode_stream(s)
        assert pieces(off, b.tokens) == list(s.result.tokens)
        assert b.text == s.result.text.strip()
    assert sum(len(b.tokens) for b in batch) > 5
    # offline streams decoded together equal transcribe()
    streams = [off.create_stream() for _ in waves]
    for s, w in zip(streams, waves):
        s.accept_waveform(16000, w)
    assert [r.tokens for r in off.decode_streams(streams)] == [b.tokens for b in batch]
    assert all(s.result.is_final for s in streams)
    # one stream too short and one without audio: with return_exceptions they get their errors in place and
    # the others their results; without, the first error is raised
    streams = [off.create_stream() for _ in range(4)]
    for s, w in zip(streams, [waves[0], waves[1][:10], None, waves[3]]):
        if w is not None:
            s.accept_waveform(16000, w)
    out = off.decode_streams(streams, return_exceptions=True)
    assert [type(r).__name__ for r in out[1:3]] == ["ValueError", "ValueError"]
    assert "too short" in str(out[1]) and "no audio" in str(out[2])
    assert [out[0].tokens, out[3].tokens] == [batch[0].tokens, batch[3].tokens]
    assert not streams[1].result.is_final and streams[3].result.tokens == batch[3].tokens
    with pytest.raises(ValueError, match="no audio was accepted"):
        off.decode_streams(streams)
    with pytest.raises(ValueError, match="too short"):
        off.decode_streams(streams[:2])
    # a streaming export transcribes by streaming each input
    r = Recognizer.from_onnx(exported["stream"])
    assert r.transcribe(waves[1]).tokens == stream_decode(r, waves[1])[1].tokens


def test_any_sample_rate_and_channels(exported, rec, tmp_path):
    import soundfile as sf

    wave16 = make_wave(2.2, 3)
    w44 = resample(wave16, 16000, 44100)
    stereo = np.stack([w44, 0.5 * w44], axis=1)
    # streamed in pieces at 44.1 kHz stereo == the same audio transcribed whole (one resampler)
    _, streamed, _ = stream_decode(rec, stereo, sr=44100, piece=3001)
    whole = rec.transcribe(stereo, sample_rate=44100)
    sf.write(tmp_path / "a.wav", stereo, 44100)
    from_file = rec.transcribe(str(tmp_path / "a.wav"))
    assert streamed.tokens == whole.tokens and len(streamed.tokens) > 0
    assert from_file.tokens == whole.tokens
    # int16 samples are scaled like floats
    pcm = np.round(wave16 * 32767).astype(np.int16)
    assert rec.transcribe(pcm).tokens == rec.transcribe(pcm.astype(np.float32) / 32768).tokens
    # 8 kHz and 48 kHz work too
    for sr in (8000, 48000):
        assert rec.transcribe(resample(wave16, 16000, sr), sample_rate=sr).is_final


def test_bad_audio_is_a_value_error(exported, rec, tmp_path):
    off = Recognizer.from_onnx(exported["offline"])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    nan = make_wave(0.5)
    nan[100] = np.nan
    for r in (rec, off):
        with pytest.raises(ValueError, match="NaN"):
            r.transcribe(nan)
        with pytest.raises(ValueError, match="empty"):
            r.transcribe(np.zeros(0, np.float32))
        with pytest.raises(ValueError, match="unreadable"):
            r.transcribe(str(bad))
        with pytest.raises(ValueError, match="does not exist"):
            r.transcribe(str(tmp_path / "missing.wav"))
    for r in (rec, off):          # whole utterances: both kinds refuse what gives no output frame, naming it
        with pytest.raises(ValueError, match=r"^input 0: audio too short \(0\.062 ms\); at least \d+ ms is needed"):
            r.transcribe(np.zeros(1, np.float32))
        with pytest.raises(ValueError, match="too short"):
            r.transcribe(np.zeros(300, np.float32))
    s = rec.create_stream()
    with pytest.raises(ValueError, match="NaN"):
        s.accept_waveform(16000, nan)
    with pytest.raises(ValueError, match="empty"):
        s.accept_waveform(16000, [])
    s.accept_waveform(16000, make_wave(0.2))
    with pytest.raises(ValueError, match="sample rate changed"):
        s.accept_waveform(8000, make_wave(0.2))
    for bad, match in [(np.full(1600, 1e20, np.float32), "far outside|peak"), (make_wave(0.2) * 3000, "16-bit")]:
        with pytest.raises(ValueError, match=match):
            s.accept_waveform(16000, bad)
    s.input_finished()
    with pytest.raises(ValueError, match="after input_finished"):
        s.accept_waveform(16000, make_wave(0.2))
    with pytest.raises(ValueError, match="offline export"):
        OnlineRecognizer.from_onnx(exported["offline"])
    with pytest.raises(ValueError, match="streaming export"):
        OfflineRecognizer.from_onnx(exported["stream"])
    with pytest.raises(ValueError, match="does not exist"):
        Recognizer.from_onnx(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="model.int8.onnx"):
        Recognizer.from_onnx(exported["offline"], int8=True)


def test_streams_across_threads_and_reset(exported, rec):
    waves = [make_wave(1.5 + 0.3 * k, k) for k in range(3)]
    expected = [stream_decode(rec, w)[1].tokens for w in waves]
    streams = [rec.create_stream() for _ in waves]
    stop = threading.Event()
    errors = []

    def worker():            # a server's decoding thread
        try:
            while not stop.is_set():
                rec.decode_streams(streams)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    for k in range(0, max(map(len, waves)), 800):   # the connections' threads feed audio meanwhile
        for s, w in zip(streams, waves):
            if k < len(w):
                s.accept_waveform(16000, w[k:k + 800])
    for s in streams:
        s.input_finished()
    stop.set()
    t.join()
    results = rec.decode_streams(streams)
    assert not errors
    assert [r.tokens for r in results] == expected and all(r.is_final for r in results)

    # reset(): a new segment keeps the audio position and caches but clears the text
    s = rec.create_stream()
    s.accept_waveform(16000, waves[0])
    first = rec.decode(s)
    assert first.tokens
    s.reset()
    assert s.result.text == "" and s.result.segment == 1 and s.result.start_time > 0
    s.accept_waveform(16000, waves[1])
    s.input_finished()
    second = rec.decode(s)
    assert second.is_final and second.segment == 1
    assert all(t >= s.result.start_time for t in second.timestamps)


def test_beam_search_in_the_recognizer(exported, tmp_path):
    wave = make_wave(2.0, 4)
    greedy = Recognizer.from_onnx(exported["stream"])
    beam = Recognizer.from_onnx(exported["stream"], decoding=DecodingConfig(method="beam", beam_size=16))
    s = beam.create_stream()
    s.accept_waveform(16000, wave)
    partial = beam.decode(s)
    s.input_finished()
    final = beam.decode(s)
    assert not partial.is_final and final.is_final and final.text
    g = greedy.transcribe(wave)
    assert partial.tokens == g.tokens[: len(partial.tokens)]        # partial results are greedy
    off = Recognizer.from_onnx(exported["offline"], decoding=DecodingConfig(method="beam", beam_size=16))
    assert off.transcribe(wave).text


def test_provider_fallback_is_explained(exported, caplog):
    with caplog.at_level(logging.WARNING, logger="slimasr.runtime.session"):
        r = Recognizer.from_onnx(exported["offline"], provider="cuda")
    assert r.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
    if r.provider == "CPUExecutionProvider":
        assert "CUDAExecutionProvider" in caplog.text and "CPUExecutionProvider" in caplog.text
    assert r.transcribe(make_wave(0.5)).is_final
    with pytest.raises(ValueError, match="provider"):
        Recognizer.from_onnx(exported["offline"], provider="opencl")


def test_tensorrt_engine_directory(exported, tmp_path, caplog):
    """An engine directory loads through the same API: via onnxruntime's TensorRT provider where it can run,
    else (here: no GPU) with a warning and the ONNX model the engine was built from."""
    import shutil

    import onnx

    from slimasr.runtime.session import engine_wrapper

    d = tmp_path / "trt"
    d.mkdir()
    for name in ("slimasr_export.json", "tokens.txt", "tokenizer.model"):
        shutil.copy(exported["stream"] / name, d / name)
    (d / "model.engine").write_bytes(b"not a real engine")
    (d / "slimasr_tensorrt.json").write_text(json.dumps({"source": str(exported["stream"] / "model.onnx")}))
    export = json.loads((d / "slimasr_export.json").read_text())
    wrapper = onnx.load_from_string(engine_wrapper(d / "model.engine", export))
    assert [n.op_type for n in wrapper.graph.node] == ["EPContext"]
    assert wrapper.graph.node[0].domain == "com.microsoft"
    assert [i.name for i in wrapper.graph.input] == [i["name"] for i in export["inputs"]]
    assert {p.key for p in wrapper.metadata_props} >= {"vocab_size", "slimasr_num_layers", "chunk_size"}

    with caplog.at_level(logging.WARNING, logger="slimasr.runtime.session"):
        r = Recognizer.from_onnx(d, provider="tensorrt")
    if r.provider != "TensorrtExecutionProvider":
        assert "TensorRT engine" in caplog.text and r.model_file == exported["stream"] / "model.onnx"
        wave = make_wave(1.5, 6)
        assert r.transcribe(wave).tokens == Recognizer.from_onnx(exported["stream"]).transcribe(wave).tokens
    (d / "slimasr_tensorrt.json").write_text(json.dumps({"source": str(tmp_path / "gone.onnx")}))
    with pytest.raises(ValueError, match="TensorRT engine"):
        Recognizer.from_onnx(d, provider="cpu")


def test_reads_the_export(exported):
    cfg = json.loads((exported["stream"] / "slimasr_export.json").read_text())
    r = Recognizer.from_onnx(exported["stream"])
    assert (r.plan.chunk_size, r.plan.left_chunks, r.plan.hop) == (cfg["chunk_size"], cfg["left_chunks"],
                                                                  cfg["chunk_size"])
    assert r.plan.window == cfg["window"] and r.info.layers == cfg["num_layers"]
    assert r.plan.end == EndOfStream() and not r.plan.end.tail_padding     # no padding unless asked for
    assert r.vocab.tokenizer is not None and len(r.vocab) == cfg["vocab_size"]
    assert "OnlineRecognizer" in repr(r)


def test_missing_metadata_is_an_error(exported, tmp_path):
    """No fallback guessing: every key the runtime reads must be in the export."""
    import shutil

    import onnx

    for key in ("subsampling_factor", "right_context", "slimasr_frontend", "chunk_size", "slimasr_window"):
        d = tmp_path / key
        shutil.copytree(exported["stream"], d)
        m = onnx.load(str(d / "model.onnx"))
        props = [(p.key, p.value) for p in m.metadata_props if p.key != key]
        del m.metadata_props[:]
        for k, v in props:
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.save(m, str(d / "model.onnx"))
        with pytest.raises(ValueError, match=key):
            Recognizer.from_onnx(d)


def test_poisoned_stream_is_reported_not_silent(exported, monkeypatch):
    """A stream whose log-probabilities or caches become non-finite raises NonFiniteStateError, every time."""
    r = Recognizer.from_onnx(exported["stream"])
    real = r._run
    calls = []

    def poisoned(feeds):
        out = real(feeds)
        calls.append(1)
        if len(calls) == 2:
            out[1] = np.full_like(out[1], np.nan)            # the attention cache after the second chunk
        return out

    monkeypatch.setattr(r, "_run", poisoned)
    s = r.create_stream()
    s.accept_waveform(16000, make_wave(3.0))
    with pytest.raises(NonFiniteStateError, match="NaN"):
        r.decode(s)
    s.input_finished()
    with pytest.raises(NonFiniteStateError):
        r.decode(s)
    assert not s.is_ready()


def test_a_failing_stream_is_returned_in_its_place_or_raised(exported, monkeypatch):
    """The paths of decode_streams' per-stream errors the other tests do not reach: a stream of the one-at-a-time
    online recognizer whose caches turned NaN, and an offline utterance whose log-probabilities are NaN. With
    return_exceptions the error takes the stream's place and the others are decoded as alone; without, it is
    raised."""
    waves = [make_wave(1.5, seed=k) for k in range(3)]
    on = Recognizer.from_onnx(exported["stream"])
    assert not on.supports_batch                                  # this export has no batched graph
    want = [on.transcribe(w).tokens for w in waves]
    streams = [on.create_stream() for _ in waves]
    for s, w in zip(streams, waves):
        s.accept_waveform(16000, w[:8000])
    on.decode_streams(streams)
    for lane in streams[1]._lanes:                                # poison one stream's state
        lane.attn_cache = np.full_like(lane.attn_cache, np.nan)
    for s, w in zip(streams, waves):
        s.accept_waveform(16000, w[8000:])
        s.input_finished()
    out = on.decode_streams(streams, return_exceptions=True)
    assert isinstance(out[1], NonFiniteStateError)
    assert [out[0].tokens, out[2].tokens] == [want[0], want[2]]
    with pytest.raises(NonFiniteStateError):
        on.decode_streams(streams[1:2])

    off = Recognizer.from_onnx(exported["offline"], batch_size=3)
    want = [r.tokens for r in off.transcribe(waves)]
    real = off._run

    def nan_in_row_1(feeds):              # rows are sorted by length, stably: equal lengths keep their order
        log_probs, *rest = real(feeds)
        log_probs = log_probs.copy()
        log_probs[1] = np.nan
        return [log_probs, *rest]

    monkeypatch.setattr(off, "_run", nan_in_row_1)
    streams = [off.create_stream() for _ in waves]
    for s, w in zip(streams, waves):
        s.accept_waveform(16000, w)
    out = off.decode_streams(streams, return_exceptions=True)
    assert isinstance(out[1], ValueError) and "NaN" in str(out[1]) and not streams[1].result.is_final
    assert [out[0].tokens, out[2].tokens] == [want[0], want[2]]
    with pytest.raises(ValueError, match="log-probabilities are NaN"):
        off.decode_streams(streams)


def test_one_way_to_build(exported):
    cfg = RecognizerConfig(num_threads=1, keep_log_probs=True)
    on = OnlineRecognizer.from_onnx(exported["stream"], cfg)
    off = OfflineRecognizer.from_onnx(exported["offline"], cfg, batch_size=2)
    assert isinstance(Recognizer.from_onnx(exported["stream"]), OnlineRecognizer)
    assert isinstance(Recognizer.from_onnx(exported["offline"]), OfflineRecognizer)
    assert off.config.batch_size == 2 and on.config.keep_log_probs and "OnlineRecognizer" in repr(on)
    with pytest.raises(ValueError, match="num_thread"):
        Recognizer.from_onnx(exported["stream"], num_thread=2)
    with pytest.raises(ValueError, match="RecognizerConfig"):
        Recognizer.from_onnx(exported["stream"], 2)
