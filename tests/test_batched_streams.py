"""Batched streams: the batched streaming graph (``model.batched.onnx``) against the batch-1 graph row by row,
``OnlineRecognizer.decode_streams`` batched against one stream at a time for streams of different lengths that
start at different times (whole token sequences, partial results and log-probabilities), a failing stream that
leaves the others alone, and ``slimasr serve`` with and without batching answering concurrent clients alike.
"""
import asyncio
import json
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from serve_helpers import TEXTS, Server, make_wave  # noqa: E402
from slimasr.runtime import NonFiniteStateError, Recognizer, StreamingConfig  # noqa: E402

pytestmark = pytest.mark.slow  # exports batched streaming graphs

CHUNK, LEFT = 4, 2
SR = 16000


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_emitting_model):
    """A tiny model whose tokenizer emits tokens, exported for streaming with the batched graph (and int8)."""
    from slimasr.export.batched import export_batched_streaming
    from slimasr.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("batched")
    m, _ = tiny_emitting_model(TEXTS, root / "tok")
    export_onnx(m, root / "stream", streaming=True, chunk_size=CHUNK, left_chunks=LEFT, int8=True)
    export_batched_streaming(m, root / "stream")
    return root / "stream"


def test_export_writes_the_batched_graph_beside_the_sherpa_one(exported):
    from slimasr.export.onnx import read_metadata

    e = json.loads((exported / "slimasr_export.json").read_text())
    assert e["files"]["model_batched"] == "model.batched.onnx"
    assert e["files"]["model_batched_int8"] == "model.batched.int8.onnx"
    assert [i["name"] for i in e["batched_inputs"]] == [i["name"] for i in e["inputs"]]
    shapes = {i["name"]: i["shape"] for i in e["batched_inputs"]}
    assert shapes["x"][0] == shapes["attn_cache"][0] == shapes["attn_mask"][0] == "N"
    assert {i["name"]: i["shape"] for i in e["inputs"]}["x"][0] == 1        # the sherpa-onnx graph stays batch 1
    one, batched = read_metadata(exported / "model.onnx"), read_metadata(exported / "model.batched.onnx")
    assert batched.pop("slimasr_batched") == "1" and "slimasr_batched" not in one
    assert batched.pop("comment") == "streaming, batched"
    one.pop("comment")
    assert batched == one


def _random_chunk_inputs(rec, rng, frames_done):
    """Batch-1 inputs of a stream that has run ``frames_done`` chunks (random caches and features)."""
    p = rec.plan
    cache = p.cache_frames
    x = rng.standard_normal((1, p.window, 80)).astype(np.float32)
    attn = rng.standard_normal((p.layers, p.heads, cache, 2 * p.head_dim)).astype(np.float32)
    conv = rng.standard_normal((p.layers, 1, p.d_model, rec.info.conv_cache_frames)).astype(np.float32)
    mask = np.ones((1, 1, cache + p.chunk_size), bool)
    mask[..., : cache - min(frames_done * p.chunk_size, cache)] = False
    off = np.array([cache + frames_done * p.chunk_size], np.int64)
    return x, off, np.array([cache], np.int64), attn, conv, mask


def test_batched_graph_rows_equal_the_batch1_graph(exported):
    """Row n of one batched call = the batch-1 graph on stream n alone, for streams at different positions
    (different cache fill, masks and offsets)."""
    import onnxruntime as ort

    rec = Recognizer.from_onnx(exported)
    one = ort.InferenceSession(str(exported / "model.onnx"))
    batched = ort.InferenceSession(str(exported / "model.batched.onnx"))
    rng = np.random.default_rng(0)
    streams = [_random_chunk_inputs(rec, rng, k) for k in (0, 1, 2, 5)]
    names = [i.name for i in one.get_inputs()]
    feeds = dict(zip(names, (np.concatenate([s[0] for s in streams]), np.concatenate([s[1] for s in streams]),
                             streams[0][2], np.stack([s[3] for s in streams]),
                             np.stack([s[4][:, 0] for s in streams]), np.concatenate([s[5] for s in streams]))))
    lp, attn, conv = batched.run(None, feeds)
    for n, s in enumerate(streams):
        ref = one.run(None, dict(zip(names, s)))
        np.testing.assert_allclose(lp[n: n + 1], ref[0], atol=1e-5)
        np.testing.assert_allclose(attn[n], ref[1], atol=1e-5)
        np.testing.assert_allclose(conv[n][:, None], ref[2], atol=1e-5)
    # relative positions: the offsets do not change anything
    lp2 = batched.run(None, {**feeds, "offset": feeds["offset"] + np.array([0, 7, 100, 3], np.int64)})[0]
    np.testing.assert_array_equal(lp2, lp)


def _staggered(rec, waves, starts, piece_samples):
    """Streams that start at tick ``starts[k]`` and are fed ``piece_samples[k]`` samples per tick; every tick the
    active streams are decoded together. Returns (final results, partial token sequences per stream, log_probs)."""
    streams = [rec.create_stream() for _ in waves]
    fed = [0] * len(waves)
    partials = [[] for _ in waves]
    tick = 0
    while not all(s.is_final for s in streams):
        active = []
        for k, (s, w) in enumerate(zip(streams, waves)):
            if tick < starts[k] or s.is_final:
                continue
            if fed[k] < w.size:
                s.accept_waveform(SR, w[fed[k]: fed[k] + piece_samples[k]])
                fed[k] += piece_samples[k]
            elif not s.is_input_finished:
                s.input_finished()
            active.append(k)
        for k, r in zip(active, rec.decode_streams([streams[k] for k in active])):
            partials[k].append(r.tokens)
        tick += 1
    return [s.result for s in streams], partials, [s.log_probs for s in streams]


@pytest.mark.parametrize("streaming", [StreamingConfig(), StreamingConfig(hop=2)], ids=["hop=chunk", "hop<chunk"])
def test_batched_streams_equal_one_stream_at_a_time(exported, streaming):
    """Seven streams of different lengths starting at different times, fed in different piece sizes (two of
    the same length finish together, so their short last chunks share a call): every partial and final token
    sequence and every log-probability is the same batched as one stream at a time, and calls did hold several
    streams."""
    batched = Recognizer.from_onnx(exported, streaming=streaming, batch_size=4, keep_log_probs=True)
    single = Recognizer.from_onnx(exported, streaming=streaming, batch_size=1, keep_log_probs=True)
    assert batched.supports_batch and not single.supports_batch
    sizes = []
    run = batched._batched._run_stacked
    batched._batched._run_stacked = lambda chunks: sizes.append(len(chunks)) or run(chunks)
    seconds = [2.3, 1.1, 3.05, 0.7, 2.6, 1.7, 1.7]
    waves = [make_wave(t, seed=k) for k, t in enumerate(seconds)]
    starts = [0, 3, 1, 8, 2, 5, 5]
    pieces = [1600, 1600, 2400, 800, 1000, 1600, 1600]
    got, got_partials, got_lp = _staggered(batched, waves, starts, pieces)
    want, want_partials, want_lp = _staggered(single, waves, starts, pieces)
    assert [r.tokens for r in got] == [r.tokens for r in want]
    assert all(r.is_final and r.tokens for r in got)
    assert got_partials == want_partials
    for a, b in zip(got_lp, want_lp):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert max(sizes) == 4 and len(sizes) > 10                      # batch_size bounds a call


def test_a_failing_stream_leaves_the_others_alone(exported):
    """A stream whose caches turned NaN fails with NonFiniteStateError (returned in its place with
    return_exceptions, raised without); the streams sharing its calls get the results they get alone."""
    rec = Recognizer.from_onnx(exported, batch_size=8)
    waves = [make_wave(1.5, seed=k) for k in range(3)]
    want = [rec.transcribe(w).tokens for w in waves]
    streams = [rec.create_stream() for _ in waves]
    for s, w in zip(streams, waves):
        s.accept_waveform(SR, w[:8000])
    rec.decode_streams(streams)
    for lane in streams[1]._lanes:                    # poison one stream's state
        lane.attn_cache = np.full_like(lane.attn_cache, np.nan)
    for s, w in zip(streams, waves):
        s.accept_waveform(SR, w[8000:])
        s.input_finished()
    out = rec.decode_streams(streams, return_exceptions=True)
    assert isinstance(out[1], NonFiniteStateError)
    assert [out[0].tokens, out[2].tokens] == [want[0], want[2]]
    with pytest.raises(NonFiniteStateError):
        rec.decode_streams(streams)


def test_int8_and_unbatched_choices(exported):
    """int8 loads the int8 batched graph; batch_size=1 and an export without the graph run one at a time."""
    rec = Recognizer.from_onnx(exported, int8=True)
    assert rec.supports_batch and rec._batched.model_file.name == "model.batched.int8.onnx"
    w = make_wave(1.5, seed=3)
    streams = [rec.create_stream() for _ in range(3)]
    for s in streams:
        s.accept_waveform(SR, w)
        s.input_finished()
    assert {r.tokens for r in rec.decode_streams(streams)} == {rec.transcribe(w).tokens}
    assert not Recognizer.from_onnx(exported / "model.onnx", batch_size=1).supports_batch


def test_export_refuses_what_it_cannot_batch(exported, tmp_path, tiny_emitting_model):
    from slimasr.export.batched import export_batched_streaming
    from slimasr.export.onnx import export_onnx
    from slimasr.model import build_model

    other = build_model("tiny", vocab_size=41)
    with pytest.raises(ValueError, match="does not match the export.*vocab_size [0-9]+ in the export, 41 in the model"):
        export_batched_streaming(other, exported)
    export_onnx(other, tmp_path / "off")
    with pytest.raises(ValueError, match="offline export"):
        export_batched_streaming(other, tmp_path / "off")
    with pytest.raises(ValueError, match="not a slimasr export directory"):
        export_batched_streaming(other, tmp_path)


# ---------------------------------------------------------------------------------------------- server
async def _client(url, x, delay, piece=1600, pause=0.02):
    """Start after ``delay`` s, stream ``x`` in ``piece`` samples every ``pause`` s, send Done; the final tokens."""
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    final = None
    async with connect(url) as ws:
        for k in range(0, x.size, piece):
            await ws.send(x[k:k + piece].astype("<f4").tobytes())
            await asyncio.sleep(pause)
        await ws.send("Done")
        async for m in ws:
            if m != "Done!":
                final = json.loads(m)
    return final


def test_server_batched_equals_unbatched(exported, tmp_path):
    """Six concurrent clients with different lengths and start times: the batched server (one worker, so its
    calls hold several streams) sends the same final tokens as the server without batching and as the
    runtime."""
    pytest.importorskip("websockets")
    rec = Recognizer.from_onnx(exported, batch_size=1)
    waves = [make_wave(t, seed=k) for k, t in enumerate([2.2, 1.0, 3.1, 1.7, 2.6, 1.3])]
    delays = [0.0, 0.15, 0.05, 0.4, 0.2, 0.3]
    want = [[rec.vocab.symbols[i].replace("\u2581", " ") for i in rec.transcribe(w).tokens] for w in waves]
    finals = {}
    for mode in ("--batched", "--no-batched"):
        s = Server(exported, mode, "--no-endpoint", "--workers", "1", "--batch-size", "8", "--max-batch-wait-ms",
                   "20", log_dir=tmp_path)
        try:
            async def scenario():
                return await asyncio.gather(*(_client(s.url, w, d) for w, d in zip(waves, delays)))

            finals[mode] = [r["tokens"] for r in asyncio.run(scenario())]
            calls, chunks = s.metric("slimasr_batched_calls"), s.metric("slimasr_batched_chunks")
            if mode == "--batched":
                assert "streams' chunks per call" in s.output()
                assert chunks > calls > 0                    # calls held several streams
            else:
                assert "one chunk per call (--no-batched)" in s.output() and calls == chunks == 0
        finally:
            s.stop()
    assert finals["--batched"] == finals["--no-batched"] == want


def test_cli_export_batched(tmp_path, tiny_emitting_model):
    """``slimasr export onnx --streaming --batched`` writes both graphs; --batched alone is refused clearly."""
    from click.testing import CliRunner

    from slimasr.cli import main

    m, _ = tiny_emitting_model(TEXTS, tmp_path / "tok")
    m.save(tmp_path / "m.pt")
    r = CliRunner().invoke(main, ["export", "onnx", "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "a"),
                                  "--batched"])
    assert r.exit_code != 0 and "--batched is a streaming graph: add --streaming" in r.output
    r = CliRunner().invoke(main, ["export", "onnx", "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "s"),
                                  "--streaming", "--chunk-size", "4", "--left-chunks", "2", "--batched"])
    assert r.exit_code == 0, r.output
    assert "model.batched.onnx" in r.output and "model.onnx" in r.output
    assert Recognizer.from_onnx(tmp_path / "s").supports_batch


def test_export_cache_kind_with_the_batched_graph(tmp_path, tiny_emitting_model):
    """The export cache's batched kind (what ``slimasr serve`` asks for; in its separate process the command
    gets ``--batched``) is its own entry, written with the batched graph."""
    from slimasr.export.cache import ExportKind, cached_onnx_export

    kind = ExportKind(streaming=True, chunk_size=CHUNK, left_chunks=LEFT, int8=False, batched=True)
    assert kind.name == f"streaming-c{CHUNK}-l{LEFT}-batched" and kind.cli_args()[-1] == "--batched"
    assert ExportKind(batched=True).name == "offline-int8"            # offline exports have no batched graph
    m, _ = tiny_emitting_model(TEXTS, tmp_path / "tok")
    m.save(tmp_path / "m.pt")
    out = cached_onnx_export(tmp_path / "m.pt", kind, root=tmp_path / "cache", model=m)
    assert Recognizer.from_onnx(out).supports_batch


@pytest.mark.parametrize("streaming", [StreamingConfig(), StreamingConfig.sherpa_onnx()], ids=["flush", "sherpa"])
def test_samples_until_ready_is_the_exact_count(exported, streaming):
    """``Stream.samples_until_ready`` is exact: one sample fewer leaves the next chunk unready, that many make it
    ready, chunk after chunk; it is 0 before the first audio, after the end of the input and for a resampled
    stream (unknown)."""
    rec = Recognizer.from_onnx(exported, streaming=streaming, batch_size=1)
    s = rec.create_stream()
    assert s.samples_until_ready() == 0
    w = make_wave(3.0, seed=5)
    s.accept_waveform(SR, w[:100])
    fed, chunks = 100, 0
    while True:
        need = s.samples_until_ready()
        assert need > 0 and not s.is_ready()
        if fed + need > w.size:
            break
        if need > 1:
            s.accept_waveform(SR, w[fed: fed + need - 1])
            assert not s.is_ready() and s.samples_until_ready() == 1
        s.accept_waveform(SR, w[fed + need - 1: fed + need])
        fed += need
        assert s.is_ready() and s.samples_until_ready() == 0
        rec.decode(s)
        chunks += 1
    assert chunks >= 5
    s.input_finished()
    assert s.samples_until_ready() == 0
    r = rec.create_stream()
    r.accept_waveform(8000, w[:4000])
    assert r.samples_until_ready() == 0


def test_server_decodes_only_when_a_chunk_completes(exported, tmp_path):
    """A client sending 25 ms messages: the server hands the stream a job only when its audio completes a chunk
    (plus the first message and the end), not one job per message, and the result is the runtime's."""
    pytest.importorskip("websockets")
    rec = Recognizer.from_onnx(exported, batch_size=1)
    w = make_wave(3.0, seed=9)
    want = [rec.vocab.symbols[i].replace("\u2581", " ") for i in rec.transcribe(w).tokens]
    hop = rec.plan.chunking.hop_shift * rec.frontend.frame_shift                     # samples per chunk
    s = Server(exported, "--batched", "--no-endpoint", "--workers", "1", log_dir=tmp_path)
    try:
        final = asyncio.run(_client(s.url, w, 0.0, piece=400, pause=0.025))
        jobs = s.metric("slimasr_decode_seconds_count")
    finally:
        s.stop()
    assert final["tokens"] == want
    assert 0 < jobs <= w.size // hop + 3 < w.size // 400


def test_scheduler_hands_each_job_back_when_its_own_audio_is_done(exported):
    """Two jobs in one worker's batch: the one with a single chunk of audio is handed back (its connection can
    send and queue more) while the long one is still being decoded, and both get their chunks' results."""
    from types import SimpleNamespace

    from slimasr.serve.server import DecodeScheduler, _Job

    rec = Recognizer.from_onnx(exported, batch_size=8)
    hop = rec.plan.chunking.hop_shift * rec.frontend.frame_shift
    w = make_wave(3.0, seed=4)

    def conn():
        return SimpleNamespace(stream=rec.create_stream(), samples_fed=0, name="test",
                               endpointer=SimpleNamespace(check=lambda stream: None), transcript=lambda r: r)

    short = _Job(conn(), [(w[:hop], 0.0), (w[hop: 2 * hop], 0.0)], False, None, None)
    long = _Job(conn(), [(w[k: k + hop], 0.0) for k in range(0, w.size, hop)], True, None, None)
    sched = DecodeScheduler(rec, workers=1, batch_size=8, batched=True, max_batch_wait=0.0)
    order = []
    sched._hand_back = lambda jobs: order.extend((job, long.fed, long.finished) for job in jobs)
    with sched._cond:                                   # both queued before the worker looks
        sched.submit(short)
        sched.submit(long)
    try:
        deadline = time.monotonic() + 60
        while len(order) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sched.close()
    assert [job for job, *_ in order] == [short, long]
    assert order[0][1] < len(long.pieces) and not order[0][2]     # the long job was not done yet
    assert short.error is long.error is None
    assert [k for k, *_ in short.events] == ["partial"]
    assert long.events[-1][0] == "final" and long.events[-1][1].tokens == rec.transcribe(w).tokens


@pytest.mark.parametrize("batched", [False, True])
def test_scheduler_feeds_a_chunk_of_messages_in_one_call(exported, batched):
    """A job of 100 ms messages: the worker gives the stream each chunk's audio in one ``accept_waveform`` call
    (the messages up to the one that completes the chunk), not one call per message, and the partial results,
    their arrival times and the final result are those of feeding message by message."""
    from types import SimpleNamespace

    from slimasr.serve.server import DecodeScheduler, _Job

    rec = Recognizer.from_onnx(exported, batch_size=8)
    w = make_wave(3.0, seed=6)
    msg = 1600
    pieces = [(w[k: k + msg], float(k)) for k in range(0, w.size, msg)]      # arrival "time" = first sample

    def run(job_pieces):
        stream = rec.create_stream()
        calls = []
        accept = stream.accept_waveform
        stream.accept_waveform = lambda sr, x: (calls.append(x.size), accept(sr, x))[1]
        conn = SimpleNamespace(stream=stream, samples_fed=0, name="test",
                               endpointer=SimpleNamespace(check=lambda s: None), transcript=lambda r: r)
        job = _Job(conn, job_pieces, True, None, None)
        sched = DecodeScheduler(rec, workers=1, batch_size=8, batched=batched)
        sched._hand_back = lambda jobs: None
        try:
            sched._run([job])
        finally:
            sched.close()
        assert job.error is None and job.done
        return job.events, calls

    events, calls = run(pieces)
    chunks = sum(1 for kind, *_ in events if kind == "partial")
    assert chunks >= 3 and len(calls) <= chunks + 2 < len(pieces) and sum(calls) == w.size
    # the reference: the runtime fed message by message, decoding after each
    ref_stream = rec.create_stream()
    ref = []
    for x, t in pieces:
        before = ref_stream.result
        ref_stream.accept_waveform(16000, x)
        r = rec.decode(ref_stream)
        if r is not before:
            ref.append(("partial", r.tokens, t))
    ref_stream.input_finished()
    ref.append(("final", rec.decode(ref_stream).tokens))
    got = [(kind, r.tokens, t) if kind == "partial" else (kind, r.tokens) for kind, r, t in events]
    assert got == ref
    assert events[-1][1].tokens == rec.transcribe(w).tokens


def test_scheduler_batch_size_defaults_per_mode():
    """Without a batch size the scheduler takes BATCHED_BATCH_SIZE chunks per call with the batched graph and
    BATCH_SIZE jobs without it (decoded one after another, whose results wait for the round); an explicit size
    wins, and the CLI's help states the same defaults."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from slimasr.cli.serve import serve
    from slimasr.serve.server import BATCH_SIZE, BATCHED_BATCH_SIZE, MAX_BATCH_WAIT, DecodeScheduler, ServerConfig

    rec = SimpleNamespace(is_streaming=True, supports_batch=True, batched_stats=(0, 0))
    assert BATCHED_BATCH_SIZE != BATCH_SIZE
    assert DecodeScheduler(rec, workers=0, batched=True).batch_size == BATCHED_BATCH_SIZE
    assert DecodeScheduler(rec, workers=0, batched=False).batch_size == BATCH_SIZE
    no_graph = SimpleNamespace(is_streaming=True, supports_batch=False)
    assert DecodeScheduler(no_graph, workers=0, batched=True).batch_size == BATCH_SIZE
    assert DecodeScheduler(rec, workers=0, batch_size=5, batched=True).batch_size == 5
    assert ServerConfig().batch_size is None and ServerConfig().max_batch_wait == MAX_BATCH_WAIT
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ServerConfig(batch_size=0)
    help_text = " ".join(CliRunner().invoke(serve, ["--help"]).output.split())
    assert f"[default: {BATCHED_BATCH_SIZE} with the batched graph, {BATCH_SIZE} without]" in help_text
    assert f"[default: {MAX_BATCH_WAIT * 1000:g}" in help_text
