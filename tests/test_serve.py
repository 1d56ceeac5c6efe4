"""``slimasr serve`` as a real process on 127.0.0.1, driven by real websocket clients: both protocols, results equal
to the runtime's chunked decoding, concurrent streams, endpoints, every bad input, the limits, a vanishing client,
/healthz and /metrics, SIGTERM, and ``slimasr bench-server``.

Fixtures use torch to build and export a tiny model once; the servers themselves are checked not to load torch.
"""
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("websockets")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from serve_helpers import Server, export_tiny_streaming, make_wave  # noqa: E402
from slimasr.runtime import Recognizer, StreamingConfig  # noqa: E402

pytestmark = pytest.mark.slow  # starts servers on exported models

CHUNK, LEFT = 4, 2
SR = 16000
START = json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": True})
END = json.dumps({"signal": "end"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_emitting_model):
    """A tiny untrained model with a tokenizer that emits tokens, exported for streaming."""
    return export_tiny_streaming(tmp_path_factory.mktemp("serve"), tiny_emitting_model, CHUNK, LEFT)


@pytest.fixture(scope="module")
def rec(exported):
    return Recognizer.from_onnx(exported)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    s = Server(exported, "--no-endpoint", "--workers", "2", "--max-streams", "16",
               log_dir=tmp_path_factory.mktemp("log"))
    yield s
    s.stop()


def pieces(rec, result):
    return [rec.vocab.symbols[i].replace("\u2581", " ") for i in result.tokens]


# ---------------------------------------------------------------------------------------------- clients
async def sherpa_session(url, x, piece=1600, pause=0.0, done=True):
    """Stream ``x`` as float32, send Done; returns (replies, close code, close reason)."""
    replies = []
    async with connect(url) as ws:
        for k in range(0, x.size, piece):
            await ws.send(x[k:k + piece].astype("<f4").tobytes())
            if pause:
                await asyncio.sleep(pause)
        if done:
            await ws.send("Done")
        try:
            async for m in ws:
                replies.append(m if m == "Done!" else json.loads(m))
        except ConnectionClosed:
            pass
        return replies, ws.close_code, ws.close_reason


async def wenet_session(url, x, piece=1600, pause=0.0, start=START):
    replies = []
    async with connect(url) as ws:
        await ws.send(start)
        replies.append(json.loads(await ws.recv()))
        pcm = (np.clip(x, -1, 32767 / 32768) * 32768).astype("<i2")
        try:
            for k in range(0, pcm.size, piece):
                await ws.send(pcm[k:k + piece].tobytes())
                if pause:
                    await asyncio.sleep(pause)
            await ws.send(END)
        except ConnectionClosed:                         # the server ended the session first
            pass
        try:
            async for m in ws:
                replies.append(json.loads(m))
        except ConnectionClosed:
            pass
        return replies, ws.close_code, ws.close_reason


async def raw_session(url, messages, read_timeout=10.0):
    """Send ``messages`` (bytes/str) and read until the server closes; returns (replies, code, reason)."""
    replies = []
    async with connect(url) as ws:
        try:
            for m in messages:
                await ws.send(m)
            async with asyncio.timeout(read_timeout):
                async for m in ws:
                    replies.append(m)
        except ConnectionClosed:
            pass
        return replies, ws.close_code, ws.close_reason


def run(coro):
    return asyncio.run(coro)


def wenet_text(reply):
    return json.loads(reply["nbest"])[0]["sentence"]


# ---------------------------------------------------------------------------------------------- protocols
def test_sherpa_protocol_equals_runtime(server, rec):
    x = make_wave(2.3, seed=1)
    ref = rec.transcribe(x)
    replies, code, reason = run(sherpa_session(server.url, x))
    *results, done = replies
    assert done == "Done!" and code == 1000
    final = results[-1]
    assert final["is_final"] and final["is_eof"] and final["segment"] == 0
    assert final["text"] == ref.text and len(ref.tokens) > 5
    assert final["tokens"] == pieces(rec, ref)                              # identical, token for token
    assert final["timestamps"] == pytest.approx([round(t, 2) for t in ref.timestamps])
    partials = results[:-1]
    assert len(partials) >= 5 and not any(r["is_final"] for r in partials)
    for p in partials:                                                      # greedy partials only grow
        assert final["tokens"][: len(p["tokens"])] == p["tokens"]
    assert [p["audio_seconds"] for p in partials] == sorted(p["audio_seconds"] for p in partials)


def test_wenet_protocol_equals_runtime(server, rec):
    x = make_wave(1.9, seed=2)
    pcm = (np.clip(x, -1, 32767 / 32768) * 32768).astype(np.int16)
    ref = rec.transcribe(pcm)                                              # the same int16 audio
    replies, code, _ = run(wenet_session(server.url, x))
    ready, *results, end = replies
    assert ready == {"status": "ok", "type": "server_ready"}
    assert end == {"status": "ok", "type": "speech_end"} and code == 1000
    assert results[-1]["type"] == "final_result" and all(r["type"] == "partial_result" for r in results[:-1])
    assert all(isinstance(r["nbest"], str) for r in results) and len(results) >= 3
    nbest = json.loads(results[-1]["nbest"])
    assert nbest[0]["sentence"] == ref.text and ref.text
    assert [w["word"] for w in nbest[0]["word_pieces"]] == [w for w, _, _ in ref.words]


def test_concurrent_streams_of_both_protocols(server, rec):
    waves = [make_wave(1.2 + 0.3 * k, seed=k) for k in range(6)]

    async def all_sessions():
        return await asyncio.gather(*(sherpa_session(server.url, x, pause=0.01) if k % 2 == 0
                                      else wenet_session(server.url, x, pause=0.01)
                                      for k, x in enumerate(waves)))

    outs = run(all_sessions())
    for k, (replies, code, _) in enumerate(outs):
        assert code == 1000
        if k % 2 == 0:
            assert replies[-2]["text"] == rec.transcribe(waves[k]).text
        else:
            pcm = (np.clip(waves[k], -1, 32767 / 32768) * 32768).astype(np.int16)
            assert wenet_text(replies[-2]) == rec.transcribe(pcm).text


def test_server_process_is_torch_free(server):
    maps = Path(f"/proc/{server.proc.pid}/maps")
    if not maps.exists():
        pytest.skip("no /proc on this system")
    assert "libtorch" not in maps.read_text()


# ---------------------------------------------------------------------------------------------- bad input
BAD_INPUTS = [
    ([np.zeros(10, "<f4").tobytes(), b"\x00\x01\x02"], 1007, "not a whole number"),
    ([np.array([0.1, np.nan], "<f4").tobytes()], 1007, "NaN"),
    ([np.array([np.inf, 0.0], "<f4").tobytes()], 1007, "infinite"),
    ([np.zeros(10, "<f4").tobytes(), "hello"], 1003, "expected binary float32"),
    (["{broken json"], 1007, "invalid JSON"),
    ([START, '{"signal": "pause"}'], 1008, "Unexpected signal"),
    ([START, "not json at all"], 1003, "expected binary int16"),
    ([START, b"\x01\x02\x03"], 1007, "not a whole number"),
    (["just some words"], 1003, "unrecognised first message"),
    ([np.full(160, 32767.0, "<f4").tobytes()], 1007, "far outside [-1, 1]"),          # int16 values as float
]


def test_bad_input_affects_only_its_connection(server, rec):
    witness = make_wave(2.0, seed=3)

    async def scenario():
        w = asyncio.create_task(sherpa_session(server.url, witness, pause=0.02))
        bad = await asyncio.gather(*(raw_session(server.url, msgs) for msgs, _, _ in BAD_INPUTS))
        # a client that vanishes mid-stream: no close frame, the TCP connection just drops
        ws = await connect(server.url)
        await ws.send(make_wave(0.5).astype("<f4").tobytes())
        await asyncio.sleep(0.2)
        ws.transport.abort()
        return bad, await w

    bad, (replies, code, _) = run(scenario())
    for (msgs, want_code, words), (got, got_code, reason) in zip(BAD_INPUTS, bad):
        assert got_code == want_code and words in reason, (msgs, got, got_code, reason)
        if isinstance(msgs[0], str) and msgs[0].startswith("{"):                       # WeNet: failed message
            failed = json.loads(got[-1])
            assert failed["status"] == "failed" and words in failed["message"]
    assert code == 1000 and replies[-2]["text"] == rec.transcribe(witness).text
    for _ in range(50):                                   # the vanished stream is dropped
        if server.metric("slimasr_active_streams") == 0:
            break
        time.sleep(0.1)
    assert server.metric("slimasr_active_streams") == 0
    assert run(sherpa_session(server.url, witness))[0][-2]["text"] == rec.transcribe(witness).text


def test_one_huge_message_is_refused_not_silencing_the_stream(server, rec):
    """0.1 s of samples equal to 1e20 (finite), then 1 s of silence, then speech, as float32 (sherpa-onnx
    protocol): the connection is closed with 1007 naming the problem at the first message - it is not kept
    open with every later result empty - and a connection streaming at the same time is not affected."""
    speech = make_wave(1.5, seed=11)
    messages = [np.full(1600, 1e20, "<f4").tobytes(), np.zeros(16000, "<f4").tobytes(),
                speech.astype("<f4").tobytes(), "Done"]
    witness = make_wave(2.0, seed=12)

    async def scenario():
        w = asyncio.create_task(sherpa_session(server.url, witness, pause=0.02))
        return await raw_session(server.url, messages), await w

    (replies, code, reason), (w_replies, w_code, _) = run(scenario())
    assert code == 1007 and "1e+20" in reason and "far outside [-1, 1]" in reason, (code, reason)
    assert replies == []                                 # nothing decoded from the poisoned audio
    assert w_code == 1000 and w_replies[-2]["text"] == rec.transcribe(witness).text
    assert run(sherpa_session(server.url, speech))[0][-2]["text"] == rec.transcribe(speech).text  # speech alone


class _FaultyRecognizer:
    """The real recognizer, except for streams whose first sample is a marker: ``REFUSE`` makes
    ``accept_waveform`` raise ``ValueError`` (audio the runtime refuses), ``POISON`` makes ``decode`` raise as
    the runtime does for a stream whose state became non-finite (finite input can no longer cause that, so the
    fault is injected here)."""

    REFUSE, POISON = 0.625, -0.625

    def __init__(self, rec):
        self._rec = rec

    def __getattr__(self, name):
        return getattr(self._rec, name)

    def create_stream(self):
        return _FaultyStream(self._rec.create_stream())

    def decode(self, stream):
        from slimasr.runtime import NonFiniteStateError

        if stream.poisoned:                       # what the runtime raises for such a stream
            raise NonFiniteStateError("the stream's log-probabilities or encoder caches became NaN/infinite at "
                                      "chunk 1 (0.16 s); the stream cannot continue")
        return self._rec.decode(stream.inner)


class _FaultyStream:
    def __init__(self, inner):
        self.inner, self.poisoned = inner, False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def accept_waveform(self, sample_rate, samples):
        if samples[0] == _FaultyRecognizer.REFUSE:
            raise ValueError("accept_waveform: refused by the runtime")
        self.poisoned |= bool(samples[0] == _FaultyRecognizer.POISON)
        self.inner.accept_waveform(sample_rate, samples)


def test_runtime_errors_are_reported_to_their_client_only(rec):
    """In-process server: audio the runtime refuses (ValueError) closes with 1007 and its message (WeNet
    clients also get a failed message); a stream the runtime reports as non-finite closes with 1011 naming it
    instead of answering with empty results; the stream decoded alongside is unaffected."""
    from slimasr.serve import AsrServer, ServerConfig

    def marked(marker, seconds=1.0):
        x = make_wave(seconds, seed=13)
        x[0] = marker
        return x

    async def scenario():
        server = AsrServer(_FaultyRecognizer(rec), ServerConfig(port=0, workers=1))
        await server.start()
        url = f"ws://127.0.0.1:{server.port}"
        witness = make_wave(2.0, seed=14)
        try:
            return await asyncio.gather(
                sherpa_session(url, witness, pause=0.02), sherpa_session(url, marked(_FaultyRecognizer.REFUSE)),
                wenet_session(url, marked(_FaultyRecognizer.REFUSE)),
                sherpa_session(url, marked(_FaultyRecognizer.POISON))), witness
        finally:
            await server.shutdown()

    (w, refused, refused_wenet, poisoned), witness = run(scenario())
    assert w[1] == 1000 and w[0][-2]["text"] == rec.transcribe(witness).text
    assert refused[1:] == (1007, "accept_waveform: refused by the runtime") and refused[0] == []
    assert refused_wenet[1] == 1007 and refused_wenet[0][-1] == {"status": "failed",
                                                                 "message": "accept_waveform: refused by the runtime"}
    replies, code, reason = poisoned
    assert code == 1011 and "decoding failed" in reason and "NaN/infinite" in reason
    assert not any(r != "Done!" and r.get("is_eof") for r in replies)       # no final (empty) result


def test_healthz_and_metrics(server):
    status, body, _ = server.http("/healthz")
    assert (status, body) == (200, "ok\n")
    run(sherpa_session(server.url, make_wave(1.0)))
    status, body, ctype = server.http("/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    for name in ("slimasr_active_streams", "slimasr_chunk_latency_seconds_bucket", "slimasr_real_time_factor",
                 "slimasr_final_latency_seconds_count", "slimasr_stream_real_time_factor_bucket",
                 'slimasr_connections_total{protocol="sherpa"}'):
        assert name in body
    assert 0 < server.metric("slimasr_real_time_factor") < 5
    assert server.metric("slimasr_audio_seconds_total") >= 1.0


# ---------------------------------------------------------------------------------------------- limits
@pytest.fixture(scope="module")
def limited(exported, tmp_path_factory):
    s = Server(exported, "--max-streams", "2", "--max-message-bytes", "8192", "--idle-timeout", "1.5",
               "--max-duration", "1.5", log_dir=tmp_path_factory.mktemp("log"))
    yield s
    s.stop()


def test_max_streams_refuses_new_ones_only(limited, rec):
    xs = [make_wave(1.2, seed=5), make_wave(1.4, seed=6)]

    async def scenario():
        first = [asyncio.create_task(sherpa_session(limited.url, x, pause=0.1)) for x in xs]
        for _ in range(100):                              # both connected
            if await asyncio.to_thread(limited.metric, "slimasr_active_streams") == 2:
                break
            await asyncio.sleep(0.05)
        third = await raw_session(limited.url, [np.zeros(160, "<f4").tobytes()])
        return third, await asyncio.gather(*first)

    (_, code, reason), outs = run(scenario())
    assert code == 1013 and "busy" in reason and "2 streams" in reason
    for x, (replies, c, _) in zip(xs, outs):
        assert c == 1000 and replies[-2]["text"] == rec.transcribe(x).text
    assert run(sherpa_session(limited.url, xs[0]))[1] == 1000             # room again


def test_max_message_size(limited):
    _, code, reason = run(raw_session(limited.url, [np.zeros(4096, "<f4").tobytes()]))
    assert code == 1009


def test_idle_timeout_finishes_the_stream(limited):
    t0 = time.monotonic()
    replies, code, reason = run(raw_session(limited.url, [START, np.zeros(3200, "<i2").tobytes()]))
    assert code == 1008 and "idle timeout" in reason and 1.4 < time.monotonic() - t0 < 8
    types = [json.loads(r)["type"] for r in replies]
    assert types[0] == "server_ready" and types[-2:] == ["final_result", "speech_end"]
    _, code, reason = run(raw_session(limited.url, []))                   # silent from the start
    assert code == 1008 and "idle timeout" in reason


def test_idle_timeout_counts_from_the_last_message(limited):
    """A client that keeps sending for twice the idle timeout (1.5 s), a message every 0.5 s, is never timed out:
    the idle clock restarts with every message; it ends normally."""
    x = make_wave(0.3, seed=8)
    replies, code, reason = run(sherpa_session(limited.url, x, piece=800, pause=0.5))
    assert code == 1000 and replies[-1] == "Done!" and replies[-2]["is_eof"]


def test_max_duration_finishes_the_stream(limited, rec):
    x = make_wave(3.0, seed=7)
    replies, code, reason = run(sherpa_session(limited.url, x, done=False))
    assert code == 1008 and "maximum stream duration" in reason
    final = replies[-2]
    assert replies[-1] == "Done!" and final["is_eof"] and final["audio_seconds"] == pytest.approx(1.5)
    assert final["text"] == rec.transcribe(x[: int(1.5 * SR)]).text


# ---------------------------------------------------------------------------------------------- endpoints
def test_endpoints_with_wenet_clients(exported, tmp_path):
    """Rule 3 at 1 s, forced WeNet protocol: continuous decoding sends a final result per segment and goes on;
    without it the first endpoint ends the session; a sherpa-onnx client is told to start first."""
    s = Server(exported, "--rule3-min-utterance-length", "1", "--protocol", "wenet", log_dir=tmp_path)
    try:
        x = make_wave(4.2, seed=4)
        replies, code, _ = run(wenet_session(s.url, x))
        finals = [json.loads(r["nbest"])[0] for r in replies if r.get("type") == "final_result"]
        assert code == 1000 and len(finals) >= 4 and replies[-1]["type"] == "speech_end"
        assert all(f["sentence"] and f["word_pieces"] for f in finals)
        starts = [f["word_pieces"][0]["start"] for f in finals]
        assert starts == sorted(starts) and starts[-1] > 2000
        start = json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": False})
        replies, code, _ = run(wenet_session(s.url, x, start=start, pause=0.01))
        assert code == 1000
        assert [r["type"] for r in replies if r["type"] != "partial_result"] == ["server_ready", "final_result",
                                                                                 "speech_end"]
        _, code, reason = run(raw_session(s.url, [np.zeros(16, "<f4").tobytes()]))
        assert code == 1008 and "Start signal" in reason
    finally:
        s.stop()


def test_endpoint_segments_join_to_the_full_result(exported, tmp_path):
    """Rule 3 at 0.8 s with non-default chunking: the segments' tokens together are the unsegmented chunked
    decoding's with the same chunking (a token spanning a boundary may repeat, as in sherpa-onnx)."""
    s = Server(exported, "--rule3-min-utterance-length", "0.8", "--chunk-size", "8", "--left-chunks", "1",
               log_dir=tmp_path)
    try:
        x = make_wave(3.5, seed=8)
        rec = Recognizer.from_onnx(exported, streaming=StreamingConfig(chunk_size=8, left_chunks=1))
        full = pieces(rec, rec.transcribe(x))
        assert full != pieces(Recognizer.from_onnx(exported), Recognizer.from_onnx(exported).transcribe(x))
        replies, code, _ = run(sherpa_session(s.url, x))
        finals = [r for r in replies if r != "Done!" and r["is_final"]]
        assert code == 1000 and len(finals) >= 3 and finals[-1]["is_eof"]
        assert [f["segment"] for f in finals] == list(range(len(finals)))
        i = 0
        for f in finals:                                 # match the segments against the unsegmented tokens
            seg = f["tokens"]
            if seg and i > 0 and seg != full[i:i + len(seg)] and seg[0] == full[i - 1]:
                seg = seg[1:]                            # a token spanning the boundary, emitted again
            assert seg == full[i:i + len(seg)]
            i += len(seg)
        assert i == len(full)
    finally:
        s.stop()


# ---------------------------------------------------------------------------------------------- shutdown
def test_sigterm_finishes_streams_in_flight(exported, tmp_path, rec):
    s = Server(exported, log_dir=tmp_path)
    xs = [make_wave(1.0, seed=9), make_wave(1.2, seed=10)]

    got_partial = [asyncio.Event(), asyncio.Event()]

    async def client(k):
        x = xs[k]
        replies = []
        async with connect(s.url) as ws:
            if k == 1:
                await ws.send(START)
                replies.append(json.loads(await ws.recv()))
                await ws.send((x * 32767).astype("<i2").tobytes())
            else:
                await ws.send(x.astype("<f4").tobytes())
            try:
                async for m in ws:                        # no end signal: the server ends the stream
                    replies.append(m if m == "Done!" else json.loads(m))
                    got_partial[k].set()
            except ConnectionClosed:
                pass
            return replies, ws.close_code, ws.close_reason

    async def scenario():
        tasks = [asyncio.create_task(client(k)) for k in range(2)]
        async with asyncio.timeout(30):                   # both streams in flight, partial results flowing
            await asyncio.gather(*(e.wait() for e in got_partial))
        s.proc.send_signal(signal.SIGTERM)
        return await asyncio.gather(*tasks)

    try:
        (r0, c0, why0), (r1, c1, why1) = run(scenario())
        assert s.proc.wait(timeout=20) == 0
    finally:
        s.stop()
    assert c0 == 1001 and c1 == 1001 and "shutting down" in why0
    assert r0[-1] == "Done!" and r0[-2]["is_eof"] and r0[-2]["text"] == rec.transcribe(xs[0]).text
    assert [r["type"] for r in r1[-2:]] == ["final_result", "speech_end"]
    assert wenet_text(r1[-2]) == rec.transcribe((xs[1] * 32767).astype(np.int16)).text
    with pytest.raises(OSError):
        run(raw_session(s.url, []))                       # no longer listening


# ---------------------------------------------------------------------------------------------- CLI
def test_bench_server(server, tmp_path):
    import soundfile as sf
    from click.testing import CliRunner

    from slimasr.cli import main

    rows = []
    for k in range(2):
        f = tmp_path / f"u{k}.wav"
        sf.write(f, make_wave(1.2, seed=k), SR)
        rows.append(json.dumps({"audio_filepath": str(f), "duration": 1.2, "text": "x"}))
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(main, ["bench-server", "--url", server.url, "--data", str(tmp_path / "m.jsonl"),
                                  "--streams", "3", "--ramp", "0.2", "--json", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["errors"] == 0 and rep["streams"] == 3 and rep["final_latency"]["count"] == 3
    assert rep["partial_latency"]["count"] > 10 and rep["first_partial_latency"]["p50"] > 0
    assert rep["partial_latency"]["p50"] < 1.0 and rep["server_rtf"] > 0 and rep["real_time"]
    r = CliRunner().invoke(main, ["bench-server", "--url", server.url, "--data", str(tmp_path / "m.jsonl"),
                                  "--protocol", "wenet", "--find-max", "--limit", "2", "--ramp", "0.1",
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["max_streams"] == 2 and [x["streams"] for x in rep["runs"]] == [1, 2]
    assert "largest N that stays real time: 2" in r.output


def test_bench_server_counts_refusals_apart_from_failures(limited, tmp_path):
    """--find-max against a server admitting 2 streams: the refused clients (1013) are counted as refusals,
    not errors, no task ends with an unretrieved exception, and the sweep says the server's admission limit,
    not real time, stopped it."""
    import soundfile as sf

    f = tmp_path / "u.wav"
    sf.write(f, make_wave(1.0, seed=15), SR)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": str(f), "duration": 1.0, "text": "x"}) + "\n")
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "-m", "slimasr.cli", "bench-server", "--url", limited.url, "--data",
                        str(tmp_path / "m.jsonl"), "--find-max", "--limit", "4", "--ramp", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "never retrieved" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    rep = json.loads(out.read_text())
    runs = {r["streams"]: r for r in rep["runs"]}
    assert rep["max_streams"] == 2 and rep["stopped_by"] == "admission_limit"
    assert sorted(runs) == [1, 2, 3, 4]
    for n, r in runs.items():
        assert r["errors"] == 0 and r["refused"] == max(0, n - 2), (n, r)
        assert r["final_latency"]["count"] == min(n, 2)
    assert "1013" in runs[4]["refusal_messages"][0] and "busy" in runs[4]["refusal_messages"][0]
    assert "admission limit stopped the sweep" in p.stdout
    assert float(limited.metric('slimasr_rejected_connections_total{reason="max_streams"}')) >= 3
    assert "never retrieved" not in limited.log.read_text()                 # nor in the server


def test_cli_errors(tmp_path, exported):
    from click.testing import CliRunner

    from slimasr.cli import main

    r = CliRunner().invoke(main, ["serve", "--model", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "does not exist" in r.output
    r = CliRunner().invoke(main, ["serve", "--model", str(exported), "--workers", "0"])
    assert r.exit_code == 1 and "workers" in r.output
    for bad in (("--chunk-size", "0"), ("--left-chunks", "-1")):     # the option is named, not the model
        r = CliRunner().invoke(main, ["serve", "--model", str(exported), *bad])
        assert r.exit_code == 2 and f"Invalid value for '{bad[0]}'" in r.output and "--model" not in r.output, r.output
    r = CliRunner().invoke(main, ["bench-server", "--url", "http://x", "--data", str(tmp_path / "m.jsonl")])
    assert r.exit_code == 1 and "ws://" in r.output
    r = CliRunner().invoke(main, ["bench-server", "--url", "ws://127.0.0.1:1", "--data", str(tmp_path / "m.jsonl")])
    assert r.exit_code == 1 and "m.jsonl" in r.output
    for cmd in ("serve", "bench-server"):
        r = CliRunner().invoke(main, [cmd, "--help"])
        assert r.exit_code == 0 and "Example:" in r.output


@pytest.mark.parametrize("sweep", [(), ("--find-max", "--limit", "2")], ids=["run", "find-max"])
def test_bench_server_fails_with_the_reason_when_no_stream_completes(tmp_path, sweep):
    """Nothing listens at --url: the run (or the sweep's first run) has no stream that completed, so the command
    fails and says why, after writing its report."""
    import soundfile as sf
    from click.testing import CliRunner
    from serve_helpers import free_port

    from slimasr.cli import main

    f = tmp_path / "u.wav"
    sf.write(f, make_wave(0.5), SR)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": str(f), "duration": 0.5, "text": "x"}) + "\n")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["bench-server", "--url", f"ws://127.0.0.1:{free_port()}", "--data",
                                  str(tmp_path / "m.jsonl"), "--ramp", "0", "--json", str(out), *sweep])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "no stream completed" in r.output and "Connect" in r.output, r.output
    assert out.is_file()


@pytest.mark.slow
def test_serves_the_default_model_without_torch(tmp_path):
    """No --model: the embedded model is exported once into $SLIMASR_CACHE/exports by another process, then served."""
    s = Server(None, "--workers", "1", log_dir=tmp_path, env={"SLIMASR_CACHE": str(tmp_path / "cache")}, timeout=300)
    try:
        assert len(list((tmp_path / "cache").glob("exports/streaming-c16-l4-int8-*/model.int8.onnx"))) == 1
        replies, code, _ = run(sherpa_session(s.url, make_wave(1.0)))
        assert code == 1000 and replies[-1] == "Done!" and replies[-2]["is_eof"]
        maps = Path(f"/proc/{s.proc.pid}/maps")
        if maps.exists():
            assert "libtorch" not in maps.read_text()
    finally:
        s.stop()
