"""The server's pure parts without a network: the protocol state machine (unit tests and hypothesis fuzzing),
the endpoint rules, the default-model cache, and the load test's statistics."""
import json
import sys

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from slimasr.serve.endpoint import EndpointConfig, Endpointer, EndpointRule  # noqa: E402
from slimasr.audio import MAX_ABS_SAMPLE  # noqa: E402
from slimasr.serve.protocol import (Audio, Close, CloseCode, Finish, Phase, ProtocolHandler, Send,  # noqa: E402
                                    Transcript)

START = json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": True})
END = json.dumps({"signal": "end"})
T = Transcript(text="hello world", tokens=(" hello", " world"), timestamps=(0.12, 0.52),
               words=(("hello", 0.12, 0.4), ("world", 0.52, 0.8)), segment=2, start_time=0.08, audio_seconds=1.5)


def sends(actions):
    return [a.text for a in actions if isinstance(a, Send)]


def closes(actions):
    return [a for a in actions if isinstance(a, Close)]


# ---------------------------------------------------------------------------------------------- sherpa-onnx
def test_sherpa_session():
    h = ProtocolHandler()
    x = np.array([0.0, 0.5, -1.0, 0.25], np.float32)
    (a,) = h.on_message(x.tobytes())
    assert isinstance(a, Audio) and h.protocol == "sherpa" and h.phase is Phase.STREAMING
    np.testing.assert_array_equal(a.samples, x)
    assert h.on_message(b"") == []                        # an empty frame is no audio, no error
    (p,) = sends(h.on_partial(T))
    reply = json.loads(p)
    assert {"text", "tokens", "timestamps", "segment", "is_final", "start_time", "words"} <= set(reply)
    assert reply["text"] == "hello world" and reply["segment"] == 2 and reply["is_final"] is False
    assert reply["tokens"] == [" hello", " world"] and reply["audio_seconds"] == 1.5
    assert reply["timestamps"] == [0.04, 0.44] and reply["start_time"] == 0.08     # relative, as sherpa-onnx
    assert json.loads(sends(h.on_endpoint(T))[0])["is_final"] is True     # endpoint: final, stream goes on
    assert h.phase is Phase.STREAMING
    assert h.on_message("Done") == [Finish()] and h.phase is Phase.FINISHING
    assert h.on_message(x.tobytes()) == [] and h.on_message("Done") == []   # nothing after the end
    out = h.on_final(T)
    final, done = sends(out)
    assert json.loads(final)["is_final"] and json.loads(final)["is_eof"] and done == "Done!"
    assert closes(out) == [Close(1000, "")] and h.closed
    assert h.on_message(b"\0\0\0\0") == [] and h.on_partial(T) == [] and h.on_final(T) == []


@pytest.mark.parametrize("message, code, words", [
    (b"\x00\x00\x80", CloseCode.INVALID_DATA, "3 bytes"),
    (np.array([0.1, np.nan], np.float32).tobytes(), CloseCode.INVALID_DATA, "NaN"),
    (np.array([np.inf], np.float32).tobytes(), CloseCode.INVALID_DATA, "infinite"),
    (np.full(1600, 1e20, np.float32).tobytes(), CloseCode.INVALID_DATA, "samples reach 1e+20, far outside [-1, 1]"),
    (np.array([-32768.0, 0.0], np.float32).tobytes(), CloseCode.INVALID_DATA, "far outside [-1, 1]"),
    ("hello", CloseCode.UNSUPPORTED_DATA, "text"),
])
def test_sherpa_bad_input(message, code, words):
    h = ProtocolHandler()
    h.on_message(np.zeros(4, np.float32).tobytes())
    out = h.on_message(message)
    (c,) = closes(out)
    assert c.code == code and words in c.reason and h.closed
    assert sends(out) == []                               # sherpa-onnx has no error message: the reason says it


def test_sample_range_is_checked_for_every_protocol():
    """Float samples a little over full scale (resampling overshoot) pass; far outside [-1, 1] is refused as the
    first message too; int16 PCM always lies in [-1, 1] after scaling, so WeNet audio passes the same check."""
    (a,) = ProtocolHandler().on_message(np.array([1.5, -1.5, 0.0], np.float32).tobytes())
    np.testing.assert_array_equal(a.samples, [1.5, -1.5, 0.0])
    (c,) = closes(ProtocolHandler().on_message(np.full(4, 1e20, np.float32).tobytes()))
    assert c.code == CloseCode.INVALID_DATA and "1e+20" in c.reason
    h = ProtocolHandler()
    h.on_message(START)
    (a,) = h.on_message(np.array([-32768, 32767], "<i2").tobytes())
    assert np.abs(a.samples).max() <= 1.0


def test_first_message_decides_protocol():
    assert ProtocolHandler().on_message("Done") == [Finish()]      # sherpa-onnx with no audio
    h = ProtocolHandler()
    (c,) = h.on_message("hi there")
    assert c.code == CloseCode.UNSUPPORTED_DATA and "first message" in c.reason
    h = ProtocolHandler()
    out = h.on_message("{not json")
    assert h.protocol == "wenet" and json.loads(sends(out)[0])["status"] == "failed"
    assert closes(out)[0].code == CloseCode.INVALID_DATA
    h = ProtocolHandler()
    out = h.on_message('{"hello": 1}')
    assert closes(out)[0].code == CloseCode.POLICY_VIOLATION and "signal" in closes(out)[0].reason
    h = ProtocolHandler("sherpa")                        # forced: a JSON start is text where audio belongs
    assert closes(h.on_message(START))[0].code == CloseCode.UNSUPPORTED_DATA
    h = ProtocolHandler("wenet")                         # forced: binary before start
    out = h.on_message(b"\0\0")
    assert "Start signal" in json.loads(sends(out)[0])["message"] and closes(out)[0].code == 1008
    with pytest.raises(ValueError, match="protocol"):
        ProtocolHandler("kaldi")


# ---------------------------------------------------------------------------------------------- WeNet
def test_wenet_session():
    h = ProtocolHandler()
    (ready,) = sends(h.on_message(START))
    assert json.loads(ready) == {"status": "ok", "type": "server_ready"}
    assert h.protocol == "wenet" and h.continuous_decoding and h.nbest == 1
    pcm = np.array([0, 16384, -32768, 32767], "<i2")
    (a,) = h.on_message(pcm.tobytes())
    np.testing.assert_allclose(a.samples, pcm / 32768.0)
    assert h.on_partial(Transcript()) == []               # nothing decoded yet: WeNet sends no partial
    p = json.loads(sends(h.on_partial(T))[0])
    assert p["status"] == "ok" and p["type"] == "partial_result"
    assert isinstance(p["nbest"], str) and json.loads(p["nbest"]) == [{"sentence": "hello world"}]
    e = json.loads(sends(h.on_endpoint(T))[0])            # continuous decoding: final_result, then go on
    assert e["type"] == "final_result" and not h.closed
    assert h.on_endpoint(Transcript()) == []              # a silent segment is not reported
    assert h.on_message(END) == [Finish()]
    out = h.on_final(T)
    final, end = (json.loads(s) for s in sends(out))
    nbest = json.loads(final["nbest"])
    assert final["type"] == "final_result" and nbest[0]["sentence"] == "hello world"
    assert nbest[0]["word_pieces"] == [{"word": "hello", "start": 120, "end": 400},
                                       {"word": "world", "start": 520, "end": 800}]
    assert end == {"status": "ok", "type": "speech_end"} and closes(out) == [Close(1000, "")]


def test_wenet_without_continuous_decoding_ends_at_the_first_endpoint():
    h = ProtocolHandler()
    h.on_message(json.dumps({"signal": "start"}))
    out = h.on_endpoint(T)
    assert [json.loads(s)["type"] for s in sends(out)] == ["final_result", "speech_end"]
    assert closes(out)[0].code == 1000 and h.closed


@pytest.mark.parametrize("message, code, words", [
    ("{oops", CloseCode.INVALID_DATA, "invalid JSON"),
    ('{"signal": "pause"}', CloseCode.POLICY_VIOLATION, "Unexpected signal"),
    ('{"nbest": 1}', CloseCode.POLICY_VIOLATION, "signal"),
    ("[1, 2]", CloseCode.POLICY_VIOLATION, "signal"),
    (START, CloseCode.POLICY_VIOLATION, "in progress"),
    ("hello", CloseCode.UNSUPPORTED_DATA, "expected binary int16"),
    (b"\x01\x02\x03", CloseCode.INVALID_DATA, "3 bytes"),
])
def test_wenet_bad_input(message, code, words):
    h = ProtocolHandler()
    h.on_message(START)
    out = h.on_message(message)
    failed = json.loads(sends(out)[0])
    assert failed["status"] == "failed" and words in failed["message"]
    assert closes(out)[0].code == code and h.closed


@pytest.mark.parametrize("start, words", [
    ({"signal": "start", "nbest": "1"}, "nbest"), ({"signal": "start", "nbest": 0}, "nbest"),
    ({"signal": "start", "continuous_decoding": "yes"}, "continuous_decoding"), ({"signal": "end"}, "before"),
])
def test_wenet_bad_start(start, words):
    out = ProtocolHandler().on_message(json.dumps(start))
    assert words in json.loads(sends(out)[0])["message"] and closes(out)


def test_server_ends_input():
    h = ProtocolHandler()
    h.on_message(START)
    assert h.end_input() == [Finish()] and h.end_input() == []
    out = h.on_final(T, CloseCode.GOING_AWAY, "server shutting down")
    assert [json.loads(s)["type"] for s in sends(out)] == ["final_result", "speech_end"]
    assert closes(out) == [Close(1001, "server shutting down")]
    h = ProtocolHandler()                                # nothing streamed yet: nothing to finish
    assert h.end_input() == []
    assert h.on_error(1008, "idle") == [Close(1008, "idle")]
    long = "x" * 500 + "\u00e9" * 100
    (c,) = ProtocolHandler().on_error(1011, long)
    assert len(c.reason.encode()) <= 123


# ---------------------------------------------------------------------------------------------- fuzzing
_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                            max_leaves=8)
_signals = st.fixed_dictionaries({"signal": st.sampled_from(["start", "end", "pause", "", "START"]) | _json_values},
                                 optional={"nbest": _json_values | st.integers(-2, 5),
                                           "continuous_decoding": _json_values | st.booleans()})
_messages = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda a: a.astype("<f4").tobytes(),
              st.lists(st.floats(width=32), max_size=8).map(lambda v: np.array(v, np.float32))),
    st.builds(lambda v: np.array(v, "<i2").tobytes(), st.lists(st.integers(-32768, 32767), max_size=8)),
    st.text(max_size=40), st.sampled_from(["Done", START, END, "{", "null", '"Done"']),
    _signals.map(json.dumps), _json_values.map(json.dumps),
)
_events = st.lists(st.one_of(_messages.map(lambda m: ("msg", m)),
                             st.sampled_from([("partial",), ("endpoint",), ("final",), ("end",), ("error",)])),
                   max_size=25)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocol=st.sampled_from(["auto", "sherpa", "wenet"]), events=_events)
def test_fuzz_protocol_handler(protocol, events):
    """Any sequence of client messages and server events: no exception, and the invariants hold."""
    h = ProtocolHandler(protocol)
    decided = None
    finishes = 0
    for ev in events:
        was_closed = h.closed
        if ev[0] == "msg":
            out = h.on_message(ev[1])
        elif ev[0] == "partial":
            out = h.on_partial(T)
        elif ev[0] == "endpoint":
            out = h.on_endpoint(T)
        elif ev[0] == "final":
            out = h.on_final(T)
        elif ev[0] == "end":
            out = h.end_input()
        else:
            out = h.on_error(1011, "internal error")
        assert isinstance(out, list)
        if was_closed:
            assert out == []                                      # nothing after a close
        for k, a in enumerate(out):
            assert isinstance(a, (Audio, Finish, Send, Close))
            if isinstance(a, Close):
                assert k == len(out) - 1 and h.closed              # a close is the last action
                assert a.code in set(CloseCode) and len(a.reason.encode()) <= 123
            if isinstance(a, Audio):
                assert a.samples.dtype == np.float32 and a.samples.size and np.all(np.isfinite(a.samples))
                assert np.all(np.abs(a.samples) <= (1.0 if h.protocol == "wenet" else MAX_ABS_SAMPLE))
            if isinstance(a, Send) and a.text != "Done!":
                reply = json.loads(a.text)                        # every reply is JSON
                assert h.protocol == "sherpa" and "text" in reply or reply["status"] in ("ok", "failed")
            finishes += isinstance(a, Finish)
        if h.protocol != "auto":
            assert decided in (None, h.protocol)                  # decided once, never changes
            decided = h.protocol
    assert finishes <= 1
    if protocol != "auto":
        assert h.protocol == protocol


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.lists(st.integers(-32768, 32767), min_size=1, max_size=20), max_size=10),
       sherpa=st.booleans())
def test_fuzz_valid_sessions_deliver_all_audio(pieces, sherpa):
    """A well-formed session delivers exactly the audio sent, then one Finish, in order."""
    h = ProtocolHandler()
    expected = [np.array(p, np.int16).astype(np.float32) / 32768 for p in pieces]
    got = [] if sherpa else sends(h.on_message(START))
    assert sherpa or json.loads(got[0])["type"] == "server_ready"
    audio = []
    for x in expected:
        msg = x.astype("<f4").tobytes() if sherpa else (x * 32768).astype("<i2").tobytes()
        (a,) = h.on_message(msg)
        audio.append(a.samples)
    assert h.on_message("Done" if sherpa else END) == [Finish()]
    assert len(audio) == len(expected)
    for a, x in zip(audio, expected):
        np.testing.assert_array_equal(a, x)


# ---------------------------------------------------------------------------------------------- endpoints
def test_endpoint_rules():
    c = EndpointConfig()
    assert c.detect(utterance_length=2.5, trailing_silence=2.5) == 1       # silence only, long enough
    assert c.detect(utterance_length=2.0, trailing_silence=2.0) is None    # silence only, too short for rule 1
    assert c.detect(utterance_length=3.0, trailing_silence=1.2) == 2       # a pause after speech
    assert c.detect(utterance_length=3.0, trailing_silence=1.0) is None
    assert c.detect(utterance_length=20.0, trailing_silence=0.0) == 3      # too long
    assert EndpointConfig(enabled=False).detect(30.0, 30.0) is None
    assert EndpointConfig.from_seconds(rule3_length=1.0).detect(1.0, 0.0) == 3
    with pytest.raises(ValueError):
        EndpointRule(False, 0.0, 0.0)
    with pytest.raises(ValueError):
        EndpointRule(False, -1.0, 0.0)


class _FakeStream:
    def __init__(self):
        self.frames_emitted = 0
        self.result = Transcript()
        self.resets = 0

    def reset(self):
        self.resets += 1
        self.result = Transcript()


def test_endpointer_tracks_segments():
    s = _FakeStream()
    ep = Endpointer(EndpointConfig(), frame_seconds=0.04)
    s.frames_emitted = 50                                  # 2 s of blanks: no rule yet
    assert ep.check(s) is None
    s.result = Transcript(timestamps=(0.4, 1.0))           # tokens at frames 10 and 25
    s.frames_emitted = 25 + 1 + 30                         # 1.2 s after the last token's frame
    assert ep.check(s) == 2
    ep.reset(s)
    assert s.resets == 1 and ep.segment_start == 56
    s.frames_emitted = 56 + 59                             # 2.36 s of a new, silent segment
    assert ep.check(s) is None
    s.frames_emitted = 56 + 60
    assert ep.check(s) == 1
    assert ep.lengths(100, None) == pytest.approx((44 * 0.04, 44 * 0.04))


# ---------------------------------------------------------------------------------------------- default model
# A stand-in for `slimasr export onnx --streaming --int8`: writes the files a streaming int8 export describes.
FAKE_EXPORT = ("import json, pathlib, sys; d = pathlib.Path(sys.argv[1]); d.mkdir(); "
               "[(d / n).write_bytes(b'onnx') for n in ('model.onnx', 'model.int8.onnx')]; "
               "(d / 'slimasr_export.json').write_text(json.dumps({'kind': 'streaming', "
               "'files': {'model': 'model.onnx', 'model_int8': 'model.int8.onnx'}}))")


def test_default_export_is_cached(tmp_path, monkeypatch):
    from slimasr.serve.server import ensure_default_export

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    cmd = [sys.executable, "-c", FAKE_EXPORT, "{out}"]
    out = ensure_default_export(tmp_path / "cache", model_file=model, command=cmd)
    assert out.parent == tmp_path / "cache" and out.name.startswith("streaming-c16-l4-int8-")
    assert (out / "slimasr_export.json").is_file()
    fail = [sys.executable, "-c", "raise SystemExit('must not run again')"]
    assert ensure_default_export(tmp_path / "cache", model_file=model, command=fail) == out   # reused
    model.write_bytes(b"other weights")                   # another model file: another directory
    with pytest.raises(RuntimeError, match="must not run again"):
        ensure_default_export(tmp_path / "cache", model_file=model, command=fail)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and p.name.startswith(".")]  # no temporary
    model.write_bytes(b"weights")
    monkeypatch.setattr("slimasr.export.cache.export_code_digest", lambda: "other export code")
    with pytest.raises(RuntimeError, match="must not run again"):      # written by other code: not reused
        ensure_default_export(tmp_path / "cache", model_file=model, command=fail)
    monkeypatch.undo()
    assert ensure_default_export(tmp_path / "cache", model_file=model, command=fail) == out
    with pytest.raises(FileNotFoundError):
        ensure_default_export(tmp_path / "cache", model_file=tmp_path / "missing.pt", command=cmd)


# ---------------------------------------------------------------------------------------------- load test
def test_percentiles():
    from slimasr.serve.loadtest import percentiles

    assert percentiles([])["p50"] is None
    p = percentiles([float(v) for v in range(1, 101)])
    assert p["count"] == 100 and p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01)
    assert p["max"] == 100
