"""One utterance's streaming state: audio -> fbank frames, encoder caches, emitted tokens and the result.

A :class:`Stream` is created by :meth:`slimasr.runtime.Recognizer.create_stream` and decoded by its recognizer;
it holds no model. It is safe to feed audio from one thread while another thread decodes it (a per-stream
lock), e.g. one stream per websocket connection and ``Recognizer.decode_streams`` on a worker thread.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ..features import FbankConfig, OnlineFbankExtractor

__all__ = ["RecognitionResult", "Stream", "StreamingResampler", "as_float_mono"]


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


def as_float_mono(samples, name: str = "samples") -> np.ndarray:
    """(S,) or (S, channels) audio of any numeric dtype -> float32 (S,) in [-1, 1] (channels averaged).

    Integer samples are scaled by their type's range (int16 / 32768, ...); floats are taken as they are.

    Raises:
        ValueError: empty, NaN/inf, or not 1-D / 2-D.
    """
    x = np.asarray(samples)
    if x.dtype.kind in "iu":
        scale = 2.0 ** (np.iinfo(x.dtype).bits - 1)
        x = (x.astype(np.float64) - (scale if x.dtype.kind == "u" else 0.0)) / scale  # uint8 PCM is offset
    elif x.dtype.kind != "f":
        raise ValueError(f"{name}: expected numeric audio samples, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"{name}: expected (samples,) or (samples, channels) audio, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name}: audio is empty (0 samples)")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: audio contains NaN or infinite samples")
    return x


class StreamingResampler:
    """Polyphase resampling in pieces, with exactly the output of ``scipy.signal.resample_poly`` on the whole.

    The same Kaiser-windowed (beta 5) low-pass FIR of 20 * max(up, down) + 1 taps is used, so streamed audio
    and a file read by :func:`slimasr.features.load_audio_numpy` give the same samples. Output sample ``n`` is
    ``sum_i x[i] * h[n * down + half - i * up]``; it is produced as soon as the inputs it needs have arrived,
    and :meth:`flush` produces the rest (``ceil(N * up / down)`` samples in all).
    """

    _BLOCK = 8192  # output samples per vectorised step (bounds the temporary index matrix)

    def __init__(self, rate_in: int, rate_out: int) -> None:
        from scipy.signal import firwin

        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
        g = math.gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g
        max_rate = max(self.up, self.down)
        self.half = 10 * max_rate
        h = firwin(2 * self.half + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32) * self.up
        self.taps = -(-h.size // self.up)
        poly = np.zeros(self.taps * self.up, dtype=np.float32)
        poly[: h.size] = h
        self._poly = poly.reshape(self.taps, self.up).T.copy()   # (up, taps): phase p, tap t = h[p + up * t]
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0     # absolute input index of _buf[0]
        self._n_in = 0
        self._n_out = 0

    def _produce(self, n_end: int) -> np.ndarray:
        outs = []
        while self._n_out < n_end:
            n1 = min(n_end, self._n_out + self._BLOCK)
            a = np.arange(self._n_out, n1, dtype=np.int64) * self.down + self.half
            i_max, phase = a // self.up, a % self.up
            idx = i_max[:, None] - np.arange(self.taps)[None, :] - self._buf_start
            valid = (idx >= 0) & (idx < self._buf.size)
            vals = np.where(valid, self._buf[np.clip(idx, 0, max(self._buf.size - 1, 0))] if self._buf.size
                            else 0.0, 0.0)
            outs.append(np.einsum("nt,nt->n", self._poly[phase], vals.astype(np.float32)).astype(np.float32))
            self._n_out = n1
        # drop inputs that no later output needs
        first_needed = (self._n_out * self.down + self.half) // self.up - (self.taps - 1)
        drop = min(max(0, first_needed - self._buf_start), self._buf.size)
        if drop:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.float32)

    def accept(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples; returns the output samples that are now complete."""
        self._buf = np.concatenate((self._buf, np.asarray(x, dtype=np.float32)))
        self._n_in += len(x)
        # output n is complete once its newest input, (n * down + half) // up, has arrived
        n_end = max(self._n_out, (self._n_in * self.up - 1 - self.half) // self.down + 1)
        return self._produce(n_end)

    def flush(self) -> np.ndarray:
        """The remaining output samples (inputs beyond the end count as zero)."""
        return self._produce(-(-self._n_in * self.up // self.down))


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

    def __init__(self, plan: StreamPlan, fbank: FbankConfig, keep_log_probs: bool) -> None:
        self._plan = plan
        self._fbank_cfg = fbank
        self._keep = keep_log_probs
        self._lock = threading.RLock()
        self._fbank = OnlineFbankExtractor(fbank)
        self._resampler: StreamingResampler | None = None
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
            ValueError: empty or NaN samples, a non-positive or changed sample rate, or audio after
                :meth:`input_finished`.
        """
        x = as_float_mono(samples, "accept_waveform")
        sample_rate = int(sample_rate)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        with self._lock:
            if self._input_finished:
                raise ValueError("accept_waveform after input_finished(); create a new stream")
            if self._rate is None:
                self._rate = sample_rate
                if sample_rate != self._fbank_cfg.sample_rate:
                    self._resampler = StreamingResampler(sample_rate, self._fbank_cfg.sample_rate)
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
