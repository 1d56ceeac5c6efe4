"""One utterance's streaming state: audio -> fbank frames, chunk scheduling, encoder caches, tokens and result.

A :class:`Stream` is created by :meth:`slimasr.runtime.OnlineRecognizer.create_stream` and decoded by its
recognizer; it holds no model. The stream owns its scheduling: it says which chunk runs next
(:meth:`Stream.next_chunk`, following :mod:`slimasr.chunking`), takes the graph's outputs back
(:meth:`Stream.chunk_decoded`) and publishes its result (:meth:`Stream.publish`); a recognizer only runs the
graph. It is safe to feed audio from one thread while another thread decodes it (a per-stream lock), e.g. one
stream per websocket connection and ``OnlineRecognizer.decode_streams`` on a worker thread.

An :class:`OfflineStream` holds one whole utterance for :class:`slimasr.runtime.OfflineRecognizer`, which decodes
several of them in one batch.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..chunking import Chunking, EndOfStream
from ..audio import resample, to_float_mono
from ..features import FrontendConfig, StreamFeatures

__all__ = ["ChunkInputs", "NonFiniteStateError", "OfflineStream", "RecognitionResult", "Stream", "StreamPlan"]

class NonFiniteStateError(RuntimeError):
    """A stream's log-probabilities or encoder caches became NaN or infinite; the stream cannot continue."""


def stream_failed(error: Exception, return_exceptions: bool) -> Exception:
    """What every recognizer's ``decode_streams`` does with one stream's error: with ``return_exceptions`` the error
    is returned, to take the stream's place in the results while the other streams are decoded (as
    ``asyncio.gather`` does); without, it is raised.

    Raises:
        error: unless ``return_exceptions``.
    """
    if not return_exceptions:
        raise error
    return error


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


@dataclass(frozen=True)
class StreamPlan:
    """What a stream needs to know about its recognizer's graph and settings (built by ``OnlineRecognizer``)."""

    chunking: Chunking             # chunk, left context, hop, front-end (slimasr.chunking)
    end: EndOfStream               # the end-of-stream policy
    layers: int
    heads: int
    head_dim: int
    d_model: int
    conv_cache_frames: int
    frame_seconds: float           # seconds per encoder frame
    keep_log_probs: bool = False   # keep the emitted (T, V) log-probabilities (beam search needs them)

    def __post_init__(self) -> None:
        if self.chunking.left_chunks is None or self.chunking.left_chunks < 1:
            raise ValueError(f"the streaming graph needs left_chunks >= 1, got {self.chunking.left_chunks}")

    # the chunking's numbers under the names callers use
    @property
    def chunk_size(self) -> int:
        return self.chunking.chunk_size

    @property
    def left_chunks(self) -> int:
        return self.chunking.left_chunks

    @property
    def hop(self) -> int:
        """Encoder frames between chunk starts."""
        return self.chunking.hop_frames

    @property
    def subsampling(self) -> int:
        return self.chunking.subsampling_factor

    @property
    def window(self) -> int:
        return self.chunking.window

    @property
    def lanes(self) -> int:
        return self.chunking.lanes

    @property
    def cache_frames(self) -> int:
        return self.chunking.cache_frames


@dataclass
class _Lane:
    """One WeNet-style chunk sequence: the graph's caches for chunks lane_start, lane_start + C, ..."""

    attn_cache: np.ndarray     # (layers, heads, C * L, 2 * d_k)
    conv_cache: np.ndarray     # (layers, 1, d_model, (k - 1) / 2)
    offset: int                # sherpa-onnx's convention: C * L + C * chunks
    chunks: int = 0            # chunks this lane has run


@dataclass(frozen=True)
class ChunkInputs:
    """One chunk to run through the streaming graph, in the graph's input order (see :mod:`slimasr.export.onnx`).

    ``x`` is (1, W, F) with W = ``Chunking.window``, or fewer frames for a short last chunk; ``frames`` is the
    number of encoder frames the graph returns for it.
    """

    index: int                 # the stream's chunk number
    frames: int
    x: np.ndarray
    offset: np.ndarray         # int64 (1,)
    required_cache_size: np.ndarray   # int64 (1,)
    attn_cache: np.ndarray
    conv_cache: np.ndarray
    attn_mask: np.ndarray      # bool (1, 1, C * L + frames)

    def feeds(self) -> tuple[np.ndarray, ...]:
        return (self.x, self.offset, self.required_cache_size, self.attn_cache, self.conv_cache, self.attn_mask)


class Stream:
    """Audio, features, caches and the running result of one utterance (see the module docstring).

    Use :meth:`accept_waveform` as audio arrives, :meth:`input_finished` at its end, and the recognizer's
    ``decode``/``decode_streams`` to advance it; read :attr:`result`.

    The end of the stream follows ``plan.end`` (:class:`slimasr.chunking.EndOfStream`): by default the frames
    left at :meth:`input_finished` run as a last, possibly short, chunk, so the final result equals the
    chunk-masked decoding of the same audio; ``EndOfStream.sherpa_onnx()`` pads 0.66 s of zeros instead and
    decodes only full windows, as sherpa-onnx does.
    """

    def __init__(self, plan: StreamPlan, frontend: FrontendConfig, greedy, final_decoder) -> None:
        self._plan = plan
        self._chunking = plan.chunking
        self._fbank_cfg = frontend
        self._greedy = greedy                # GreedyDecoder: partial results
        self._final_decoder = final_decoder  # the final result's decoder (beam search), None = greedy
        self._keep = plan.keep_log_probs
        self._lock = threading.RLock()
        self._intake = StreamFeatures(frontend)   # sample-rate lock, resampling, fbank
        self._fbank = self._intake.features
        self._finalized = False
        self._failed: str | None = None
        self._lanes = [self._new_lane() for _ in range(self._chunking.lanes)]
        self._next_chunk = 0               # global chunk index i: starts at encoder frame i * hop
        self._last_chunk: np.ndarray | None = None
        self._last_was_short = False
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
            ValueError: empty, NaN/inf or far out-of-range samples (:func:`slimasr.audio.check_samples`), a
                non-positive or changed sample rate, or audio after :meth:`input_finished`. Nothing of a refused
                call is kept.
        """
        with self._lock:
            self._intake.accept_waveform(sample_rate, samples)

    def input_finished(self) -> None:
        """No more audio: flushes the resampler and the feature extractor (and, with the sherpa-onnx end-of-stream
        setting only, appends its tail padding first)."""
        with self._lock:
            fb = self._fbank_cfg
            self._intake.input_finished(self._plan.end.tail_samples(fb.sample_rate, fb.frame_shift, self._chunking))

    @property
    def is_input_finished(self) -> bool:
        return self._intake.is_input_finished

    @property
    def is_final(self) -> bool:
        """The input is finished and everything is decoded (``result.is_final``)."""
        return self._finalized

    @property
    def num_samples(self) -> int:
        """Samples accepted so far (at the caller's sample rate)."""
        return self._intake.samples_in

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
            if self._hyp.received:
                self._segment += 1
            self._segment_start = self._emitted
            self._new_segment()
            self.result = RecognitionResult(segment=self._segment, start_time=self._time(self._emitted))

    def _new_segment(self) -> None:
        from .decoders import IncrementalHypothesis

        self._hyp = IncrementalHypothesis(self._greedy)   # the segment's greedy tokens, words and text
        self._prev = -1                    # greedy: argmax of the last frame (-1 = none yet)
        self._log_probs: list[np.ndarray] = []

    # ------------------------------------------------------------------ scheduling (used by recognizers)
    def _chunk_frames(self) -> int:
        """Feature frames the next chunk reads now (0: none can run), per ``Chunking.next_chunk``."""
        c = self._chunking
        start = self._next_chunk * c.hop_shift
        if self._last_was_short:
            return 0                       # a short chunk is always the last
        return c.next_chunk(self._fbank.num_frames_ready - start, self.is_input_finished,
                            first=self._next_chunk == 0, end=self._plan.end)

    def is_ready(self) -> bool:
        """Whether a recognizer has work on this stream: a chunk can run, or the finished input awaits its final
        result."""
        with self._lock:
            if self._finalized or self._failed:
                return False
            return self.is_input_finished or self._chunk_frames() > 0

    def samples_until_ready(self) -> int:
        """Input samples still to come before a chunk can run (the smallest count): 0 when one can now, when
        the input is finished, before the first audio and for a resampled stream (whose resampler delays the
        samples by a varying amount: unknown). A server uses it to decode only when a chunk is complete."""
        with self._lock:
            c = self._chunking
            if (self._intake.sample_rate is None or self._intake.resampling or self.is_input_finished or self._finalized
                    or self._failed or self._last_was_short):
                return 0
            start = self._next_chunk * c.hop_shift
            # the window must be ready (sherpa-onnx's end policy: one frame more, Chunking.next_chunk)
            frames = start + c.window + (1 if self._plan.end.is_sherpa_onnx else 0)
            return self._fbank.samples_needed(frames)

    def next_chunk(self) -> ChunkInputs | None:
        """The inputs of the next chunk to run, or None when none can run now.

        Raises:
            NonFiniteStateError: the stream failed earlier (see :meth:`chunk_decoded`).
        """
        with self._lock:
            self._check_failed()
            if self._finalized:
                return None
            n = self._chunk_frames()
            if n == 0:
                return None
            c, p = self._chunking, self._plan
            start = self._next_chunk * c.hop_shift
            lane = self._lanes[self._next_chunk % c.lanes]
            frames = c.output_frames(n)
            cache = c.cache_frames
            mask = np.ones((1, 1, cache + frames), dtype=bool)
            mask[..., : cache - min(lane.chunks * c.chunk_size, cache)] = False
            return ChunkInputs(index=self._next_chunk, frames=frames, x=self._fbank.get_frames(start, n)[None],
                               offset=np.array([lane.offset], np.int64),
                               required_cache_size=np.array([cache], np.int64), attn_cache=lane.attn_cache,
                               conv_cache=lane.conv_cache, attn_mask=mask)

    def chunk_decoded(self, chunk: ChunkInputs, log_probs: np.ndarray, next_attn_cache: np.ndarray,
                      next_conv_cache: np.ndarray) -> None:
        """Take the graph's outputs for ``chunk``: (1, C', V) log-probabilities and the next caches.

        Raises:
            NonFiniteStateError: the outputs contain NaN or infinite values (the stream is marked failed; every
                later call raises the same error instead of returning empty results).
            ValueError: outputs for another chunk than :meth:`next_chunk` returned last.
        """
        with self._lock:
            self._check_failed()
            if chunk.index != self._next_chunk:
                raise ValueError(f"outputs for chunk {chunk.index}, but chunk {self._next_chunk} is next")
            if not (np.isfinite(log_probs).all() and np.isfinite(next_attn_cache).all()
                    and np.isfinite(next_conv_cache).all()):
                self._failed = (f"the stream's log-probabilities or encoder caches became NaN/infinite at chunk "
                                f"{chunk.index} ({self._time(self._emitted):.2f} s); the stream cannot continue")
                self._check_failed()
            c = self._chunking
            lane = self._lanes[chunk.index % c.lanes]
            lane.attn_cache, lane.conv_cache = next_attn_cache, next_conv_cache
            lane.offset += log_probs.shape[1]
            lane.chunks += 1
            rows = log_probs[0]
            self._next_chunk += 1
            self._last_chunk = rows
            self._last_was_short = chunk.x.shape[1] < c.window
            # frames before the next chunk's window are never read again
            self._fbank.discard_before(self._next_chunk * c.hop_shift)
            self._emit(rows[: c.hop_frames])

    def publish(self, changed: bool) -> RecognitionResult:
        """After a recognizer's pass over the ready chunks: the final result once the input is finished and
        every chunk has run (the last chunk's frames after its first hop are emitted, then the final decoder —
        greedy or beam search — runs), a new partial (greedy) result if ``changed``, else the same object."""
        with self._lock:
            self._check_failed()
            if self._finalized:
                return self.result
            if self.is_input_finished and self._chunk_frames() == 0:
                if self._last_chunk is not None:
                    self._emit(self._last_chunk[self._chunking.hop_frames:])
                    self._last_chunk = None
                if self._final_decoder is None:
                    h = self._hyp.hypothesis()
                else:
                    lp = self.log_probs.reshape(-1, len(self._greedy.vocab))
                    h = self._final_decoder.decode(lp, frame_offset=self._segment_start)
                self._finalized = True
                self.result = self._to_result(h, True)
            elif changed:
                self.result = self._to_result(self._hyp.hypothesis(), False)
            return self.result

    def _check_failed(self) -> None:
        if self._failed:
            raise NonFiniteStateError(self._failed)

    def _to_result(self, h, is_final: bool) -> RecognitionResult:
        return RecognitionResult(text=h.text, tokens=h.tokens, timestamps=h.timestamps, words=h.words,
                                 is_final=is_final, segment=self._segment,
                                 start_time=self._time(self._segment_start))

    def _new_lane(self) -> _Lane:
        p = self._plan
        return _Lane(attn_cache=np.zeros((p.layers, p.heads, p.cache_frames, 2 * p.head_dim), np.float32),
                     conv_cache=np.zeros((p.layers, 1, p.d_model, p.conv_cache_frames), np.float32),
                     offset=p.cache_frames)

    def _time(self, frame: int) -> float:
        return round(frame * self._plan.frame_seconds, 6)

    def _emit(self, log_probs: np.ndarray) -> None:
        """Greedy CTC over newly emitted frames (prev argmax carried, as in sherpa-onnx)."""
        from .decoders import ctc_greedy

        if log_probs.shape[0] == 0:
            return
        tokens, frames, self._prev = ctc_greedy(log_probs, prev=self._prev)
        self._hyp.extend(tokens, [f + self._emitted for f in frames])
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


class OfflineStream:
    """One whole utterance for :class:`slimasr.runtime.OfflineRecognizer` (sherpa-onnx's ``OfflineStream``):
    :meth:`accept_waveform` any number of times, then ``OfflineRecognizer.decode_streams`` decodes ready
    streams together in batches and sets :attr:`result`."""

    def __init__(self, sample_rate: int) -> None:
        self._target = sample_rate
        self._pieces: list[np.ndarray] = []
        self._rate: int | None = None
        self.name = "input"
        self.result = RecognitionResult()

    def accept_waveform(self, sample_rate: int, samples) -> None:
        """Append audio (as :meth:`Stream.accept_waveform`; the same errors)."""
        x = to_float_mono(samples, f"{self.name}: accept_waveform")
        sample_rate = int(sample_rate)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if self._rate is not None and sample_rate != self._rate:
            raise ValueError(f"sample rate changed within a stream: {self._rate} Hz, now {sample_rate} Hz")
        self._rate = sample_rate
        self._pieces.append(x)

    @property
    def is_final(self) -> bool:
        return self.result.is_final

    def waveform(self) -> np.ndarray:
        """The audio at the model's sample rate (resampled as whole files are)."""
        if not self._pieces:
            raise ValueError(f"{self.name}: no audio was accepted")
        x = np.concatenate(self._pieces)
        return resample(x, self._rate, self._target)
