"""One utterance's streaming state: audio -> fbank frames, encoder caches, emitted tokens and the result.

A :class:`Stream` is created by :meth:`slimasr.runtime.Recognizer.create_stream` and decoded by its recognizer;
it holds no model. It is safe to feed audio from one thread while another thread decodes it (a per-stream
lock), e.g. one stream per websocket connection and ``Recognizer.decode_streams`` on a worker thread.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..audio import StreamResampler, to_float_mono
from ..features import FrontendConfig, OnlineFeatureExtractor

__all__ = ["RecognitionResult", "Stream"]


@dataclass(frozen=True)
class RecognitionResult:
    """What a stream (or an offline utterance) has been recognised as so far.

    Times are seconds from the start of the stream's audio.
    """

    text: str = ""
    tokens: tuple[int, ...] = ()                       # token ids (see slimasr.tokenizer)
    timestamps: tuple[float, ...] = ()                 # start time of each token
    words: tuple[tuple[str, float, float], ...] = ()   # (word, start, end)
    is_final: bool = False                             # True once the input is finished and fully decoded
    segment: int = 0                                   # incremented by Stream.reset() after a non-empty segment
    start_time: float = 0.0                            # where this segment starts


@dataclass
class _Lane:
    """One WeNet-style chunk sequence: the graph's caches for chunks lane_start, lane_start + C, ..."""

    attn_cache: np.ndarray     # (layers, heads, C * L, 2 * d_k)
    conv_cache: np.ndarray     # (layers, 1, d_model, (k - 1) / 2)
    offset: int                # sherpa-onnx's convention: C * L + C * chunks
    chunks: int = 0            # chunks this lane has run


@dataclass(frozen=True)
class StreamPlan:
    """How a recognizer cuts a stream into chunks (all in frames; see ``StreamingConfig``)."""

    chunk_size: int            # C, encoder frames per chunk
    left_chunks: int           # L
    hop: int                   # encoder frames between chunk starts (divides C)
    window: int                # feature frames per chunk: (C - 1) * 4 + 7
    subsampling: int           # 4
    tail_padding: int          # zero samples (16 kHz) appended at input_finished
    layers: int
    heads: int
    head_dim: int
    d_model: int
    conv_cache_frames: int
    frame_seconds: float       # seconds per encoder frame (0.04)

    @property
    def lanes(self) -> int:
        return self.chunk_size // self.hop

    @property
    def cache_frames(self) -> int:
        return self.chunk_size * self.left_chunks


class Stream:
    """Audio, features, caches and the running result of one utterance (see the module docstring).

    Use :meth:`accept_waveform` as audio arrives, :meth:`input_finished` at its end, and the recognizer's
    ``decode``/``decode_streams`` to advance it; read :attr:`result`.
    """

    def __init__(self, plan: StreamPlan, frontend: FrontendConfig, keep_log_probs: bool) -> None:
        self._plan = plan
        self._fbank_cfg = frontend
        self._keep = keep_log_probs
        self._lock = threading.RLock()
        self._fbank = OnlineFeatureExtractor(frontend)
        self._resampler: StreamResampler | None = None
        self._rate: int | None = None
        self._samples_in = 0
        self._input_finished = False
        self._finalized = False
        self._lanes = [self._new_lane() for _ in range(plan.lanes)]
        self._next_chunk = 0               # global chunk index i: starts at encoder frame i * hop
        self._last_chunk: np.ndarray | None = None
        self._emitted = 0                  # encoder frames emitted since the start of the stream
        self._segment = 0
        self._segment_start = 0            # encoder frame where the current segment starts
        self._new_segment()
        self.result = RecognitionResult()

    # ------------------------------------------------------------------ audio in
    def accept_waveform(self, sample_rate: int, samples) -> None:
        """Append audio: (S,) or (S, channels), any sample rate (resampled to the model's), float in [-1, 1]
        or integer PCM. All calls of one stream must use the same sample rate.

        Raises:
            ValueError: empty, NaN/inf or far out of [-1, 1] samples (slimasr.audio.check_samples), a
                non-positive or changed sample rate, or audio after
                :meth:`input_finished`.
        """
        x = to_float_mono(samples, "accept_waveform")
        sample_rate = int(sample_rate)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        with self._lock:
            if self._input_finished:
                raise ValueError("accept_waveform after input_finished(); create a new stream")
            if self._rate is None:
                self._rate = sample_rate
                if sample_rate != self._fbank_cfg.sample_rate:
                    self._resampler = StreamResampler(sample_rate, self._fbank_cfg.sample_rate)
            elif sample_rate != self._rate:
                raise ValueError(f"sample rate changed within a stream: {self._rate} Hz, now {sample_rate} Hz")
            self._samples_in += x.size
            if self._resampler is not None:
                x = self._resampler.accept(x)
            if x.size:
                self._fbank.accept_waveform(x)

    def input_finished(self) -> None:
        """No more audio. Pads ``tail_padding`` zero samples (0.66 s, as sherpa-onnx's examples do) so the
        last chunk can be decoded, then flushes the feature extractor."""
        with self._lock:
            if self._input_finished:
                return
            if self._resampler is not None:
                rest = self._resampler.flush()
                if rest.size:
                    self._fbank.accept_waveform(rest)
            if self._plan.tail_padding:
                self._fbank.accept_waveform(np.zeros(self._plan.tail_padding, dtype=np.float32))
            self._fbank.input_finished()
            self._input_finished = True

    @property
    def is_input_finished(self) -> bool:
        return self._input_finished

    @property
    def is_final(self) -> bool:
        """The input is finished and everything is decoded (``result.is_final``)."""
        return self._finalized

    @property
    def num_samples(self) -> int:
        """Samples accepted so far (at the caller's sample rate)."""
        return self._samples_in

    @property
    def lock(self) -> threading.RLock:
        """Held while the stream is being fed or decoded."""
        return self._lock

    # ------------------------------------------------------------------ segments
    def reset(self) -> None:
        """Start a new segment (after an endpoint): clears the text, tokens and stored log-probabilities but
        keeps the audio position and the encoder caches, as sherpa-onnx's ``Recognizer.reset`` does.
        ``result.segment`` increases if the finished segment had tokens."""
        with self._lock:
            if self._tokens:
                self._segment += 1
            self._segment_start = self._emitted
            self._new_segment()
            self.result = RecognitionResult(segment=self._segment, start_time=self._time(self._emitted))

    def _new_segment(self) -> None:
        self._tokens: list[int] = []
        self._frames: list[int] = []
        self._prev = -1                    # greedy: argmax of the last frame (-1 = none yet)
        self._log_probs: list[np.ndarray] = []

    # ------------------------------------------------------------------ used by the recognizer
    def _new_lane(self) -> _Lane:
        p = self._plan
        return _Lane(attn_cache=np.zeros((p.layers, p.heads, p.cache_frames, 2 * p.head_dim), np.float32),
                     conv_cache=np.zeros((p.layers, 1, p.d_model, p.conv_cache_frames), np.float32),
                     offset=p.cache_frames)

    def _time(self, frame: int) -> float:
        return round(frame * self._plan.frame_seconds, 6)

    def _chunk_ready(self) -> bool:
        """sherpa-onnx's rule: a chunk runs while start + window < frames ready."""
        start = self._next_chunk * self._plan.hop * self._plan.subsampling
        return start + self._plan.window < self._fbank.num_frames_ready

    def _chunk_input(self) -> tuple[_Lane, np.ndarray]:
        p = self._plan
        start = self._next_chunk * p.hop * p.subsampling
        return self._lanes[self._next_chunk % p.lanes], self._fbank.get_frames(start, p.window)

    def _chunk_done(self, log_probs: np.ndarray) -> np.ndarray:
        """Store a chunk's (C, V) output; returns the rows it emits (the chunk's first hop)."""
        self._next_chunk += 1
        self._last_chunk = log_probs
        # frames before the next chunk's window are never read again
        self._fbank.discard_before(self._next_chunk * self._plan.hop * self._plan.subsampling)
        return log_probs[: self._plan.hop]

    def _tail(self) -> np.ndarray | None:
        """At the end: the last chunk's rows after its first hop (no later chunk emits them)."""
        return None if self._last_chunk is None else self._last_chunk[self._plan.hop:]

    def _emit(self, log_probs: np.ndarray) -> None:
        """Greedy CTC over newly emitted frames (prev argmax carried, as in sherpa-onnx)."""
        from .decoders import ctc_greedy

        if log_probs.shape[0] == 0:
            return
        tokens, frames, self._prev = ctc_greedy(log_probs, prev=self._prev)
        self._tokens += tokens
        self._frames += [f + self._emitted for f in frames]
        if self._keep:
            self._log_probs.append(np.array(log_probs, dtype=np.float32))
        self._emitted += log_probs.shape[0]

    @property
    def log_probs(self) -> np.ndarray | None:
        """The current segment's emitted (T, V) log-probabilities, if the recognizer keeps them (beam search
        or ``keep_log_probs``); otherwise None."""
        with self._lock:
            if not self._keep:
                return None
            if not self._log_probs:
                return np.zeros((0, 0), np.float32)
            return np.concatenate(self._log_probs, axis=0)

    @property
    def frames_emitted(self) -> int:
        """Encoder frames emitted since the start of the stream."""
        return self._emitted
