"""Endpointing: when a long stream's current segment ends, so that a client can stream for an hour.

The rules are sherpa-onnx's (``sherpa-onnx/csrc/endpoint.cc``); an endpoint fires when any enabled rule holds:

=====  ======================  =====================  =====================  ===================================
rule   must contain speech     min trailing silence   min utterance length   meaning
=====  ======================  =====================  =====================  ===================================
1      no                      2.4 s                  0                      long silence, even with no speech
2      yes                     1.2 s                  0                      a pause after speech
3      no                      0                      20 s                   the segment is too long
=====  ======================  =====================  =====================  ===================================

*Utterance length* is the audio decoded in the current segment; *trailing silence* is the decoded audio after
the last token. A segment "contains speech" when it is longer than its trailing silence, i.e. some token was
emitted. sherpa-onnx counts trailing *blank frames* of the greedy path; here the trailing silence starts after
the first frame of the last emitted token (the runtime's greedy decoder exposes token frames, not every
frame's argmax), so a token held over several frames counts its repeats as silence — at most a few frames.

At an endpoint the server sends the segment's result as final and calls :meth:`Stream.reset`, which starts a
new segment but keeps the encoder caches and the audio position, so the segments' tokens together are the
tokens of decoding without endpointing (greedy decoding). The one exception is rule 3, which can cut inside a
token held over several frames: the reset forgets the previous frame's argmax, so that token is emitted again
at the start of the next segment (sherpa-onnx behaves the same way).

Example::

    ep = Endpointer(EndpointConfig(), frame_seconds=0.04)
    rec.decode(stream)
    if ep.check(stream) is not None:
        send_final(stream.result)
        ep.reset(stream)
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EndpointConfig", "EndpointRule", "Endpointer"]


@dataclass(frozen=True)
class EndpointRule:
    """One endpoint rule (sherpa-onnx's ``EndpointRule``); times in seconds."""

    must_contain_nonsilence: bool = False   # the segment must contain speech (a token)
    min_trailing_silence: float = 0.0       # at least this much decoded audio after the last token
    min_utterance_length: float = 0.0       # at least this much decoded audio in the segment

    def __post_init__(self) -> None:
        if self.min_trailing_silence < 0 or self.min_utterance_length < 0:
            raise ValueError(f"endpoint rule times must be >= 0, got trailing silence {self.min_trailing_silence} "
                             f"and utterance length {self.min_utterance_length}")
        if self.min_trailing_silence == 0 and self.min_utterance_length == 0:
            raise ValueError("an endpoint rule needs a positive min_trailing_silence or min_utterance_length "
                             "(otherwise it fires after every chunk)")

    def holds(self, utterance_length: float, trailing_silence: float) -> bool:
        contains_speech = utterance_length > trailing_silence
        return ((contains_speech or not self.must_contain_nonsilence)
                and trailing_silence >= self.min_trailing_silence
                and utterance_length >= self.min_utterance_length)


@dataclass(frozen=True)
class EndpointConfig:
    """The endpoint rules (sherpa-onnx's defaults); ``enabled=False`` never ends a segment."""

    enabled: bool = True
    rule1: EndpointRule = field(default_factory=lambda: EndpointRule(False, 2.4, 0.0))
    rule2: EndpointRule = field(default_factory=lambda: EndpointRule(True, 1.2, 0.0))
    rule3: EndpointRule = field(default_factory=lambda: EndpointRule(False, 0.0, 20.0))

    @classmethod
    def from_seconds(cls, rule1_trailing: float = 2.4, rule2_trailing: float = 1.2, rule3_length: float = 20.0,
                     enabled: bool = True) -> "EndpointConfig":
        """sherpa-onnx's three command-line knobs (``--rule1-min-trailing-silence`` etc.)."""
        return cls(enabled=enabled, rule1=EndpointRule(False, rule1_trailing, 0.0),
                   rule2=EndpointRule(True, rule2_trailing, 0.0), rule3=EndpointRule(False, 0.0, rule3_length))

    def detect(self, utterance_length: float, trailing_silence: float) -> int | None:
        """The number (1, 2, 3) of the first rule that holds, or None."""
        if not self.enabled:
            return None
        for k, rule in enumerate((self.rule1, self.rule2, self.rule3), 1):
            if rule.holds(utterance_length, trailing_silence):
                return k
        return None


class Endpointer:
    """Endpoint detection for one stream: remembers where the current segment started.

    Args:
        config: the rules.
        frame_seconds: seconds per encoder frame (``Recognizer.frame_seconds``).
    """

    def __init__(self, config: EndpointConfig, frame_seconds: float) -> None:
        if frame_seconds <= 0:
            raise ValueError(f"frame_seconds must be positive, got {frame_seconds}")
        self.config = config
        self.frame_seconds = frame_seconds
        self.segment_start = 0            # encoder frame where the current segment starts

    def lengths(self, frames_emitted: int, last_token_time: float | None) -> tuple[float, float]:
        """(utterance length, trailing silence) in seconds of the current segment.

        Args:
            frames_emitted: encoder frames decoded since the start of the stream.
            last_token_time: start time (s, from the start of the stream) of the segment's last token, or None.
        """
        frames = max(0, frames_emitted - self.segment_start)
        if last_token_time is None:
            trailing = frames
        else:
            last = int(round(last_token_time / self.frame_seconds))
            trailing = max(0, frames_emitted - (last + 1))
        return frames * self.frame_seconds, min(trailing, frames) * self.frame_seconds

    def check(self, stream) -> int | None:
        """The endpoint rule that fires for ``stream`` (a :class:`slimasr.runtime.Stream`) now, or None."""
        if not self.config.enabled:
            return None
        result = stream.result
        last = result.timestamps[-1] if result.timestamps else None
        return self.config.detect(*self.lengths(stream.frames_emitted, last))

    def reset(self, stream) -> None:
        """Start the next segment (``stream.reset()``)."""
        stream.reset()
        self.segment_start = stream.frames_emitted
