"""One answer from every path: the equivalence matrix of chunked decoding, with the embedded default model.

Rows (whole token sequences compared, not text similarity):

* chunk-masked PyTorch ``ctc_log_probs(feats, chunk_size=16, left_chunks=4)`` + greedy CTC: the reference;
* ``stream_step`` (``stream_log_probs``, fed in odd-sized pieces);
* the torch-free runtime on the streaming graph (``OnlineRecognizer``, fed 100 ms pieces at the input rate);
* the server, sherpa-onnx protocol (float32) and WeNet protocol (int16 PCM: compared with the runtime fed the same
  int16 samples);
* the offline graph (full context) against full-context PyTorch;
* sherpa-onnx against slimasr's sherpa-onnx end-of-stream setting (``StreamingConfig.sherpa_onnx()``), both fed
  the same 16 kHz samples (sherpa-onnx resamples with its own resampler, so it is given slimasr's 16 kHz audio).

Columns: espeak-ng (22.05 kHz) and flite (16 kHz) sentences, each followed by 0.5 s of silence and cut 120 ms
before the end of speech (inside the last word), each decoded at 16 kHz and at 22.05 kHz input. PyTorch features
are ``compute_features`` (the model's front-end) of the 16 kHz samples the runtime sees
(``slimasr.audio.resample``, which equals the stream's resampler sample for sample).
"""
import asyncio
import json
import shutil
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from slimasr.chunking import SHERPA_ONNX_TAIL_SECONDS  # noqa: E402
from slimasr.audio import resample  # noqa: E402
from slimasr.features import compute_features  # noqa: E402
from slimasr.runtime import OfflineRecognizer, OnlineRecognizer, StreamingConfig  # noqa: E402
from slimasr.runtime.decoders import ctc_greedy  # noqa: E402

pytestmark = pytest.mark.slow  # exports the default model, runs servers and sherpa-onnx

SENTENCES = [("espeak-ng", "en-us+m3", "the quick brown fox jumps over the lazy dog"),
             ("flite", "kal16", "all that glitters is not gold")]
FORMS = ("trailing_silence", "cut_in_last_word")
RATES = (16000, 22050)


def _synthesize(engine, voice, text, tmp):
    import soundfile as sf

    if shutil.which(engine) is None:
        pytest.skip(f"{engine} is not installed (tools/setup.sh installs it)")
    out = tmp / f"{engine}.wav"
    cmd = (["espeak-ng", "-v", voice, "-w", str(out), text] if engine == "espeak-ng"
           else ["flite", "-voice", voice, "-t", text, "-o", str(out)])
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    x, sr = sf.read(str(out), dtype="float32", always_2d=False)
    return x, sr


def _speech_end(x, sr):
    hop = sr // 100
    e = 10 * np.log10(np.mean(x[: x.size // hop * hop].reshape(-1, hop) ** 2, axis=1) + 1e-12)
    return int((np.nonzero(e > e.max() - 40)[0][-1] + 1) * hop)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """name -> (samples at the input rate, input rate, the 16 kHz samples the model sees)."""
    tmp = tmp_path_factory.mktemp("tts")
    out = {}
    for engine, voice, text in SENTENCES:
        x, sr = _synthesize(engine, voice, text, tmp)
        end = _speech_end(x, sr)
        forms = {"trailing_silence": np.concatenate([x[:end], np.zeros(sr // 2, np.float32)]),
                 "cut_in_last_word": x[: end - int(0.12 * sr)].copy()}
        for form, wave in forms.items():
            for rate in RATES:
                xin = wave if rate == sr else resample(wave, sr, rate)
                out[f"{engine}-{form}-{rate}"] = (xin, rate, resample(xin, rate, 16000))
    return out


def _greedy(lp):
    return tuple(ctc_greedy(np.asarray(lp), prev=-1)[0])


@pytest.fixture(scope="module")
def reference(default_export, inputs):
    """name -> tokens of chunk-masked PyTorch decoding."""
    m, c, left = default_export["model"], default_export["chunk_size"], default_export["left_chunks"]
    out = {}
    with torch.no_grad():
        for name, (_, _, x16) in inputs.items():
            feats = torch.from_numpy(compute_features(x16, m.frontend))[None]
            out[name] = _greedy(m.ctc_log_probs(feats, chunk_size=c, left_chunks=left)[0][0])
    return out


@pytest.fixture(scope="module")
def online(default_export):
    return OnlineRecognizer.from_onnx(default_export["streaming"])


def _stream(rec, x, rate, piece_seconds=0.1):
    s = rec.create_stream()
    piece = int(rate * piece_seconds)
    for k in range(0, x.size, piece):
        s.accept_waveform(rate, x[k:k + piece])
        rec.decode(s)
    s.input_finished()
    return rec.decode(s)


def _mismatches(got, want):
    return {k: (got[k], want[k]) for k in want if got[k] != want[k]}


def test_reference_is_real_speech(reference, online):
    """Not vacuous: the model recognises the sentences, and cutting inside the last word changes the end."""
    for engine, _, text in SENTENCES:
        full = online.vocab.text(reference[f"{engine}-trailing_silence-16000"])
        cut = reference[f"{engine}-cut_in_last_word-16000"]
        assert len(set(full.split()) & set(text.split())) >= 3, full
        assert cut and cut != reference[f"{engine}-trailing_silence-16000"]


def test_stream_step_equals_chunk_masked(default_export, inputs, reference):
    m, c, left = default_export["model"], default_export["chunk_size"], default_export["left_chunks"]
    got = {}
    for name, (_, _, x16) in inputs.items():
        feats = torch.from_numpy(compute_features(x16, m.frontend))[None]
        got[name] = _greedy(m.stream_log_probs(feats, c, left, feed_frames=37)[0])
    assert not _mismatches(got, reference)


def test_runtime_streaming_equals_chunk_masked(online, inputs, reference):
    got = {name: _stream(online, xin, rate).tokens for name, (xin, rate, _) in inputs.items()}
    assert not _mismatches(got, reference)


def test_runtime_offline_graph_equals_full_context_torch(default_export, inputs):
    """The offline graph is full context: compared with full-context PyTorch, batched."""
    m = default_export["model"]
    off = OfflineRecognizer.from_onnx(default_export["offline"], batch_size=4)
    names = list(inputs)
    got = off.transcribe([inputs[n][2] for n in names], sample_rate=16000)
    with torch.no_grad():
        for n, r in zip(names, got):
            feats = torch.from_numpy(compute_features(inputs[n][2], m.frontend))[None]
            assert r.tokens == _greedy(m.ctc_log_probs(feats)[0][0]), n


def _serve(rec, rate, sessions):
    """Run an in-process server at ``rate`` and the given client coroutines factories against it."""
    pytest.importorskip("websockets")
    from slimasr.serve.endpoint import EndpointConfig
    from slimasr.serve.server import AsrServer, ServerConfig

    async def main():
        server = AsrServer(rec, ServerConfig(port=0, sample_rate=rate, workers=1,
                                             endpoint=EndpointConfig(enabled=False)))
        await server.start()
        try:
            return await asyncio.gather(*(s(f"ws://127.0.0.1:{server.port}") for s in sessions))
        finally:
            await server.shutdown()

    return asyncio.run(main())


async def _sherpa_client(url, x):
    from websockets.asyncio.client import connect

    replies = []
    async with connect(url) as ws:
        for k in range(0, x.size, 1600):
            await ws.send(x[k:k + 1600].astype("<f4").tobytes())
        await ws.send("Done")
        async for m in ws:
            replies.append(m if m == "Done!" else json.loads(m))
    return replies[-2]


async def _wenet_client(url, pcm):
    from websockets.asyncio.client import connect

    replies = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": False}))
        for k in range(0, pcm.size, 1600):
            await ws.send(pcm[k:k + 1600].tobytes())
        await ws.send(json.dumps({"signal": "end"}))
        async for m in ws:
            replies.append(json.loads(m))
    return [r for r in replies if r.get("type") == "final_result"][-1]


@pytest.mark.parametrize("rate", RATES)
def test_server_both_protocols_equal_chunk_masked(online, inputs, reference, rate):
    names = [n for n, (_, r, _) in inputs.items() if r == rate]
    pcms = {n: (np.clip(inputs[n][0], -1, 32767 / 32768) * 32768).astype("<i2") for n in names}
    replies = _serve(online, rate, [lambda url, n=n: _sherpa_client(url, inputs[n][0]) for n in names]
                     + [lambda url, n=n: _wenet_client(url, pcms[n]) for n in names])
    sherpa, wenet = replies[: len(names)], replies[len(names):]
    pieces = {n: [online.vocab.symbols[i].replace("\u2581", " ") for i in reference[n]] for n in names}
    assert {n: r["tokens"] for n, r in zip(names, sherpa)} == pieces
    for n, r in zip(names, wenet):                      # int16 audio: compared with the runtime on the same samples
        ref = _stream(online, pcms[n], rate)
        best = json.loads(r["nbest"])[0]
        assert best["sentence"] == ref.text and [w["word"] for w in best["word_pieces"]] == [w for w, _, _ in
                                                                                               ref.words], n


def test_sherpa_onnx_equals_our_compatibility_setting(default_export, inputs):
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    d, c, left = default_export["streaming"], default_export["chunk_size"], default_export["left_chunks"]
    ours = OnlineRecognizer.from_onnx(d, streaming=StreamingConfig.sherpa_onnx())
    theirs = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(model=str(d / "model.onnx"), tokens=str(d / "tokens.txt"),
                                                         chunk_size=c, num_left_chunks=left, num_threads=1)
    for name, (_, _, x16) in inputs.items():
        s = theirs.create_stream()
        s.accept_waveform(16000, np.concatenate([x16, np.zeros(int(SHERPA_ONNX_TAIL_SECONDS * 16000), np.float32)]))
        s.input_finished()
        while theirs.is_ready(s):
            theirs.decode_stream(s)
        mine = _stream(ours, x16, 16000)
        assert [ours.vocab.symbols[i].replace("\u2581", " ") for i in mine.tokens] == list(
            theirs.get_result_all(s).tokens), name
