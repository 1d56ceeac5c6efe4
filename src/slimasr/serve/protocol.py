"""The two wire protocols as a pure state machine: messages in, actions out; no network, no model.

:class:`ProtocolHandler` takes each websocket message of one connection and returns the
:class:`Action` objects the server carries out (:class:`Audio` to feed the stream, :class:`Finish` to end the
input, :class:`Send` a text message, :class:`Close` the connection). The server reports recognition results
back through :meth:`~ProtocolHandler.on_partial`, :meth:`~ProtocolHandler.on_endpoint` and
:meth:`~ProtocolHandler.on_final`, which return the protocol's reply messages. Because nothing here touches a
socket, every input can be fuzzed (``tests/test_serve_protocol.py``).

**sherpa-onnx streaming** (``sherpa-onnx-online-websocket-server`` and its Python clients)::

    client: binary  float32 little-endian samples in [-1, 1] at 16 kHz, any number per message
    client: text    Done                            end of the audio
    server: text    {"text", "tokens", "timestamps", "ys_probs", "lm_probs", "context_scores", "segment",
                     "words", "start_time", "is_final", "is_eof", "audio_seconds"}   after every decoded chunk;
                    is_final at an endpoint (the stream goes on with segment + 1) and at the end (is_eof);
                    timestamps are relative to the segment's start_time, as in sherpa-onnx
    server: text    Done!                           after the final result; then the server closes (1000)

**WeNet runtime** (``wenet/runtime/core/websocket``)::

    client: text    {"signal": "start", "nbest": 1, "continuous_decoding": true}
    server: text    {"status": "ok", "type": "server_ready"}
    client: binary  int16 little-endian PCM at 16 kHz
    server: text    {"status": "ok", "type": "partial_result", "nbest": "[{\\"sentence\\": ...}]"}
    client: text    {"signal": "end"}
    server: text    {"status": "ok", "type": "final_result", "nbest": "[{\\"sentence\\": ..., \\"word_pieces\\":
                     [{\\"word\\", \\"start\\", \\"end\\"}]}]"}   (ms from the start of the stream), then
                    {"status": "ok", "type": "speech_end"}; then the server closes (1000)
    server: text    {"status": "failed", "message": ...}         before closing on an error

``nbest`` is a JSON *string*, as WeNet sends it. With ``continuous_decoding`` an endpoint yields a
``final_result`` and recognition goes on; without it (WeNet's default) the first endpoint ends the session
(``final_result``, ``speech_end``, close). Partial results are sent only once something was recognised, as
WeNet does. Replies also carry ``audio_seconds`` (audio received when the result was computed; used by
``slimasr bench-server`` for latencies); clients ignore unknown keys.

**Auto-detection**: the first message decides. Binary audio or the text ``Done`` means sherpa-onnx; a JSON
object with a ``signal`` means WeNet. A forced protocol (``protocol="sherpa"`` / ``"wenet"``) takes the
first message as that protocol's.

**Close codes** (:class:`CloseCode`): 1000 normal end, 1001 server shutting down, 1003 text where audio was
expected (or binary where a signal was), 1007 malformed data (binary length not a multiple of the sample size,
NaN or infinite samples, samples far outside [-1, 1], audio the recognizer refuses, invalid JSON, bad start
options), 1008 protocol or policy violation (unknown signal,
audio before ``start``, idle timeout, maximum stream duration), 1009 message too big (raised by the websocket
layer), 1011 internal error, 1013 too many streams (try again later). Reasons are human-readable and at most 123
bytes, the websocket limit.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from ..audio import AudioError, check_samples

__all__ = ["Action", "Audio", "Close", "CloseCode", "Finish", "PROTOCOLS", "Phase", "ProtocolHandler", "Send",
           "Transcript"]

PROTOCOLS = ("auto", "sherpa", "wenet")
MAX_REASON_BYTES = 123            # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code
SHERPA_DONE = "Done"
SHERPA_DONE_REPLY = "Done!"


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001             # server shutting down (after the final result)
    UNSUPPORTED_DATA = 1003       # text where audio was expected, or binary where a signal was
    INVALID_DATA = 1007           # malformed audio or JSON
    POLICY_VIOLATION = 1008       # protocol violation, idle timeout, maximum duration
    MESSAGE_TOO_BIG = 1009        # enforced by the websocket library (max_size)
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013        # too many streams


# ---------------------------------------------------------------------------------------------- actions
@dataclass(frozen=True, eq=False)
class Audio:
    """Feed these samples (float32, 16 kHz, finite) to the connection's stream."""

    samples: np.ndarray


@dataclass(frozen=True)
class Finish:
    """The input has ended: decode the rest and report the final result with :meth:`ProtocolHandler.on_final`."""


@dataclass(frozen=True)
class Send:
    """Send this text message."""

    text: str


@dataclass(frozen=True)
class Close:
    """Close the connection with this code and reason (nothing more is sent or fed after it)."""

    code: int
    reason: str = ""


Action = Union[Audio, Finish, Send, Close]


@dataclass(frozen=True)
class Transcript:
    """A recognition result, in the terms the protocols need (times in seconds from the start of the stream)."""

    text: str = ""
    tokens: tuple[str, ...] = ()                          # token pieces, as sherpa-onnx shows them
    timestamps: tuple[float, ...] = ()                    # start time of each token
    words: tuple[tuple[str, float, float], ...] = ()      # (word, start, end)
    segment: int = 0
    start_time: float = 0.0                               # start of the segment
    audio_seconds: float = 0.0                            # audio received when this result was computed


class Phase(enum.Enum):
    WAITING = "waiting"           # no message yet (protocol not known in auto mode), or WeNet before start
    STREAMING = "streaming"       # audio may come
    FINISHING = "finishing"       # Finish was returned; waiting for on_final
    CLOSED = "closed"             # Close was returned; every later call returns []


def _reason(text: str) -> str:
    """Truncate to the websocket limit on whole UTF-8 characters."""
    b = text.encode("utf-8")
    if len(b) <= MAX_REASON_BYTES:
        return text
    return b[: MAX_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."


def _preview(text: str, n: int = 24) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


# ---------------------------------------------------------------------------------------------- handler
@dataclass
class ProtocolHandler:
    """One connection's protocol state (see the module docstring).

    Args:
        protocol: ``auto`` (decided by the first message), ``sherpa`` or ``wenet``.
    """

    protocol: str = "auto"
    phase: Phase = Phase.WAITING
    nbest: int = 1                           # WeNet start option (we produce one hypothesis)
    continuous_decoding: bool = False        # WeNet start option
    _finished: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    # ------------------------------------------------------------------ client messages
    def on_message(self, message: bytes | bytearray | memoryview | str) -> list[Action]:
        """The actions for one client message; never raises for any ``bytes`` or ``str``."""
        if self.phase in (Phase.CLOSED, Phase.FINISHING):
            return []                        # after the end of input, or after an error: nothing more is read
        binary = not isinstance(message, str)
        if self.protocol == "auto":
            if binary:
                self.protocol = "sherpa"
            elif message == SHERPA_DONE:
                self.protocol = "sherpa"
            else:
                obj = _json_object(message)
                if isinstance(obj, dict) and "signal" in obj:
                    self.protocol = "wenet"
                elif isinstance(obj, _JsonError):   # invalid JSON: a JSON-looking message is taken for WeNet's
                    if message.lstrip().startswith(("{", "[")):
                        self.protocol = "wenet"
                        return self._error(CloseCode.INVALID_DATA, f"invalid JSON: {obj}")
                    return self._close(CloseCode.UNSUPPORTED_DATA,
                                       f"unrecognised first message {_preview(message)}: expected binary audio "
                                       "(sherpa-onnx), the text Done, or a JSON start signal (WeNet)")
                else:
                    self.protocol = "wenet"
                    return self._error(CloseCode.POLICY_VIOLATION,
                                       'expected a JSON object with a "signal" ("start" or "end")')
        if self.protocol == "sherpa":
            return self._sherpa(message)
        return self._wenet(message)

    def _sherpa(self, message) -> list[Action]:
        self.phase = Phase.STREAMING
        if isinstance(message, str):
            if message == SHERPA_DONE:
                return self._finish()
            return self._close(CloseCode.UNSUPPORTED_DATA,
                               f"expected binary float32 audio or the text Done, got text {_preview(message)}")
        audio = _decode_samples(message, np.dtype("<f4"), "float32")
        if isinstance(audio, str):
            return self._close(CloseCode.INVALID_DATA, audio)
        return [Audio(audio)] if audio.size else []

    def _wenet(self, message) -> list[Action]:
        if not isinstance(message, str):
            if self.phase is Phase.WAITING:
                return self._error(CloseCode.POLICY_VIOLATION, "Start signal is expected before binary data")
            audio = _decode_samples(message, np.dtype("<i2"), "int16")
            if isinstance(audio, str):
                return self._error(CloseCode.INVALID_DATA, audio)
            return [Audio(audio)] if audio.size else []
        obj = _json_object(message)
        if isinstance(obj, _JsonError):
            if self.phase is Phase.STREAMING and not message.lstrip().startswith(("{", "[")):
                return self._error(CloseCode.UNSUPPORTED_DATA,
                                   f"expected binary int16 audio or a JSON signal, got text {_preview(message)}")
            return self._error(CloseCode.INVALID_DATA, f"invalid JSON: {obj}")
        if not isinstance(obj, dict) or "signal" not in obj:
            return self._error(CloseCode.POLICY_VIOLATION, 'expected a JSON object with a "signal" ("start" or "end")')
        signal = obj["signal"]
        if signal == "start":
            if self.phase is not Phase.WAITING:
                return self._error(CloseCode.POLICY_VIOLATION, "a start signal while a stream is in progress")
            nbest = obj.get("nbest", 1)
            if isinstance(nbest, bool) or not isinstance(nbest, int) or nbest < 1:
                return self._error(CloseCode.INVALID_DATA, "integer is expected for nbest option (>= 1)")
            cont = obj.get("continuous_decoding", False)
            if not isinstance(cont, bool):
                return self._error(CloseCode.INVALID_DATA,
                                   "boolean true or false is expected for continuous_decoding option")
            self.nbest, self.continuous_decoding = nbest, cont
            self.phase = Phase.STREAMING
            return [Send(json.dumps({"status": "ok", "type": "server_ready"}))]
        if signal == "end":
            if self.phase is Phase.WAITING:
                return self._error(CloseCode.POLICY_VIOLATION, "an end signal before the start signal")
            return self._finish()
        return self._error(CloseCode.POLICY_VIOLATION,
                           f"Unexpected signal type {_preview(str(signal))}: expected 'start' or 'end'")

    # ------------------------------------------------------------------ results and server events
    def on_partial(self, t: Transcript) -> list[Action]:
        """A partial result of the current segment (after a decoded chunk; also after the end of input while
        the buffered audio is decoded)."""
        if self.phase not in (Phase.STREAMING, Phase.FINISHING):
            return []
        if self.protocol == "sherpa":
            return [Send(self._sherpa_result(t, is_final=False))]
        if not t.text:
            return []                        # WeNet sends partials only once something was decoded
        return [Send(self._wenet_result(t, final=False))]

    def on_endpoint(self, t: Transcript) -> list[Action]:
        """An endpoint ended the segment ``t``; the stream goes on (sherpa-onnx, WeNet continuous decoding) or,
        for WeNet without continuous decoding and a non-empty segment, the session ends here."""
        if self.phase not in (Phase.STREAMING, Phase.FINISHING):
            return []
        if self.protocol == "sherpa":
            return [Send(self._sherpa_result(t, is_final=True))]
        if not t.text:
            return []                        # a segment of silence: nothing to report
        out: list[Action] = [Send(self._wenet_result(t, final=True))]
        if not self.continuous_decoding:
            out.append(Send(json.dumps({"status": "ok", "type": "speech_end"})))
            out += self._close(CloseCode.NORMAL, "end of utterance")
        return out

    def on_final(self, t: Transcript, code: int = CloseCode.NORMAL, reason: str = "") -> list[Action]:
        """The final result after the input ended (a client's end, or the server ending the stream with
        ``code``/``reason``: shutdown, idle timeout, maximum duration); closes the connection."""
        if self.phase is Phase.CLOSED:
            return []
        out: list[Action] = []
        if self.protocol == "sherpa" and self.phase is not Phase.WAITING:
            out = [Send(self._sherpa_result(t, is_final=True, is_eof=True)), Send(SHERPA_DONE_REPLY)]
        elif self.protocol == "wenet" and self.phase is not Phase.WAITING:
            out = [Send(self._wenet_result(t, final=True)), Send(json.dumps({"status": "ok", "type": "speech_end"}))]
        return out + self._close(code, reason)

    def end_input(self) -> list[Action]:
        """The server ends the input (shutdown, idle timeout, maximum duration): :class:`Finish` while audio
        is streaming (then call :meth:`on_final`), nothing otherwise."""
        if self.phase is Phase.STREAMING:
            return self._finish()
        return []

    def on_error(self, code: int, reason: str) -> list[Action]:
        """A server-side error or limit: WeNet's ``failed`` message (once the protocol is known), then close."""
        if self.phase is Phase.CLOSED:
            return []
        if self.protocol == "wenet":
            return self._error(code, reason)
        return self._close(code, reason)

    # ------------------------------------------------------------------ helpers
    def _finish(self) -> list[Action]:
        self.phase = Phase.FINISHING
        if self._finished:
            return []
        self._finished = True
        return [Finish()]

    def _close(self, code: int, reason: str) -> list[Action]:
        self.phase = Phase.CLOSED
        return [Close(int(code), _reason(reason))]

    def _error(self, code: int, message: str) -> list[Action]:
        return [Send(json.dumps({"status": "failed", "message": message}))] + self._close(code, message)

    @staticmethod
    def _sherpa_result(t: Transcript, is_final: bool, is_eof: bool = False) -> str:
        return json.dumps({
            "text": t.text, "tokens": list(t.tokens), "timestamps": [round(x - t.start_time, 2) for x in t.timestamps],
            "ys_probs": [], "lm_probs": [], "context_scores": [], "segment": t.segment,
            "words": [w for w, _, _ in t.words], "start_time": round(t.start_time, 2), "is_final": is_final,
            "is_eof": is_eof, "audio_seconds": round(t.audio_seconds, 4)})

    def _wenet_result(self, t: Transcript, final: bool) -> str:
        one: dict = {"sentence": t.text}
        if final:
            pieces = t.words or tuple((p, s, s) for p, s in zip(t.tokens, t.timestamps))
            one["word_pieces"] = [{"word": w, "start": int(round(s * 1000)), "end": int(round(e * 1000))}
                                  for w, s, e in pieces]
        nbest = json.dumps([one][: self.nbest])
        return json.dumps({"status": "ok", "type": "final_result" if final else "partial_result", "nbest": nbest,
                           "audio_seconds": round(t.audio_seconds, 4)})


def _json_object(text: str):
    """The parsed JSON value, or a :class:`_JsonError` with the parser's message when it is not valid JSON."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:   # JSONDecodeError is a ValueError
        return _JsonError(str(e) if not isinstance(e, RecursionError) else "nesting too deep")
    return value


class _JsonError(str):
    """A JSON parse error message (told apart from a JSON string value by its type)."""


def _decode_samples(data, dtype: np.dtype, name: str) -> np.ndarray | str:
    """Binary message -> float32 samples in [-1, 1], or an error message."""
    buf = bytes(data)
    if len(buf) % dtype.itemsize:
        return (f"binary message of {len(buf)} bytes is not a whole number of {name} samples "
                f"({dtype.itemsize} bytes each)")
    x = np.frombuffer(buf, dtype=dtype)
    if dtype.kind == "f":
        if x.size:
            try:       # NaN/inf or samples far outside [-1, 1] (e.g. 1e20) would silence the stream
                check_samples(x, f"{name} audio")
            except AudioError as e:
                return str(e)
        return x.astype(np.float32)
    return x.astype(np.float32) / np.float32(32768.0)   # int16 PCM: always within [-1, 1]

