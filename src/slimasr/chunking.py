"""Chunked decoding and the end of a stream: the one definition (torch-free).

Every place that cuts an utterance into chunks uses this module: the model's chunk-masked and streaming paths
(:meth:`slimasr.model.ASRModel.ctc_log_probs`, ``stream_step``), the ONNX export's metadata, the runtime's streams,
the server, bench, demo and the reproduction recipe.

**Frames.** Features come in 10 ms frames; the model's front-end turns them into encoder frames, one every
``subsampling_factor`` feature frames, each reading ``right_context`` feature frames beyond its own stride
(WeNet's ``Conv2dSubsampling4``: factor 4, right context 6 — one encoder frame needs 7 feature frames;
``Conv2dSubsampling6``: 6 and 10; ``Conv2dSubsampling8``: 8 and 14). Encoder frame ``n`` reads feature frames
``[n * S, n * S + R]``, so ``T`` feature frames give ``(T - R - 1) // S + 1`` encoder frames (0 below
``R + 1``). Both numbers are properties of the model (``ModelConfig.subsampling_factor`` / ``right_context``) and
of every export (metadata ``subsampling_factor`` / ``right_context``); nothing here assumes their values.

**Chunks** (:class:`Chunking`). A chunk is ``chunk_size`` (C) encoder frames. It attends to its own frames and to
``left_chunks`` (L) earlier chunks, and its depthwise convolution sees nothing beyond its right edge (WeNet U2's
chunk masks with dynamic chunk convolution, Li et al., ICASSP 2023). Streaming, a chunk reads a *window* of
``(C - 1) * S + R + 1`` feature frames and chunks start ``C * S`` feature frames (the *shift*) apart. With a *hop*
smaller than C (the paper's "chunk 64, hop 32, 128 frames of left context", Bekal et al., Interspeech 2023,
Section 4), chunks overlap: chunk ``i`` covers encoder frames ``[i * hop, i * hop + C)`` and emits its first hop
of them (see :mod:`slimasr.runtime.recognizer`).

**End of stream** (:class:`EndOfStream`). When the input is finished, the feature frames not yet consumed run as
one last chunk, shorter than C when the audio ends inside a chunk (the streaming graph's time axes are dynamic).
Nothing is padded, so a stream's final result equals the chunk-masked decoding of the same audio
(``ctc_log_probs(feats, chunk_size=C, left_chunks=L)``): no speech is lost and none is invented.
sherpa-onnx cannot run a short chunk: its examples append 0.66 s of silence to the waveform and decode full
windows while ``start + window < frames ready``. ``EndOfStream.sherpa_onnx()`` does exactly that; it is the
setting for comparisons with sherpa-onnx, not a default.

Example::

    from slimasr.chunking import Chunking
    c = Chunking(chunk_size=16, left_chunks=4, subsampling_factor=4, right_context=6)
    c.window, c.shift, c.min_frames          # 67, 64, 7 feature frames
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Chunking", "EndOfStream", "SHERPA_ONNX_TAIL_SECONDS", "check_front_end", "check_positive_int",
           "min_frames", "output_frames"]

# Silence sherpa-onnx's streaming examples append to the waveform (``tail_paddings`` in its python-api-examples).
SHERPA_ONNX_TAIL_SECONDS = 0.66


def check_positive_int(name: str, v, allow_none: bool = False, minimum: int = 1) -> None:
    """The one check of integer settings (chunk size, left chunks, hop, threads, ...).

    Raises:
        ValueError: ``{name} must be an integer >= {minimum}[ or None], got {v!r}`` unless ``v`` is an int (not
            a bool) of at least ``minimum``, or None where ``allow_none``.
    """
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{none}, got {v!r}")


def check_front_end(subsampling_factor: int, right_context: int) -> None:
    """Raises ValueError unless ``subsampling_factor >= 1`` and ``right_context >= 0`` are integers."""
    check_positive_int("subsampling_factor", subsampling_factor)
    check_positive_int("right_context", right_context, minimum=0)


def min_frames(right_context: int) -> int:
    """Feature frames the front-end needs for one encoder frame: ``right_context + 1``."""
    return right_context + 1


def output_frames(input_frames: int, subsampling_factor: int, right_context: int) -> int:
    """Encoder frames from ``input_frames`` feature frames: ``(T - R - 1) // S + 1``, 0 below ``R + 1``."""
    if input_frames < min_frames(right_context):
        return 0
    return (input_frames - right_context - 1) // subsampling_factor + 1


@dataclass(frozen=True)
class EndOfStream:
    """What happens at ``input_finished`` (module docstring).

    ``flush`` (the default): the unconsumed frames run as a last, possibly short, chunk; nothing is padded.
    ``sherpa-onnx``: ``tail_padding`` seconds of zero samples are appended to the waveform, chunks run only as full
    windows while ``start + window < frames ready`` (sherpa-onnx's ``OnlineRecognizer`` with its examples' tail
    padding), and no short chunk runs: what the padding does not reach is not decoded.
    """

    policy: str = "flush"                 # "flush" | "sherpa-onnx"
    tail_padding: float = 0.0             # seconds of zeros appended at input_finished ("sherpa-onnx" only)

    def __post_init__(self) -> None:
        if self.policy not in ("flush", "sherpa-onnx"):
            raise ValueError(f"end-of-stream policy must be 'flush' or 'sherpa-onnx', got {self.policy!r}")
        if self.tail_padding < 0:
            raise ValueError(f"tail_padding must be >= 0 seconds, got {self.tail_padding}")
        if self.policy == "flush" and self.tail_padding:
            raise ValueError("tail_padding belongs to the 'sherpa-onnx' end-of-stream policy; 'flush' pads nothing")

    @classmethod
    def sherpa_onnx(cls, tail_padding: float = SHERPA_ONNX_TAIL_SECONDS) -> "EndOfStream":
        """sherpa-onnx's behaviour with its examples' 0.66 s of trailing silence."""
        return cls(policy="sherpa-onnx", tail_padding=tail_padding)

    @property
    def is_sherpa_onnx(self) -> bool:
        return self.policy == "sherpa-onnx"

    def tail_samples(self, sample_rate: int, frame_shift: int, chunking: "Chunking") -> int:
        """Zero samples appended to the waveform at ``input_finished`` (at ``sample_rate``, ``frame_shift`` samples
        per feature frame): ``tail_padding`` seconds, and at least one hop of frames (``hop_shift + 1``) so that
        with long hops the last full window still reaches every real frame. 0 for the ``flush`` policy."""
        pad = int(round(self.tail_padding * sample_rate))
        return max(pad, (chunking.hop_shift + 1) * frame_shift) if pad else 0


@dataclass(frozen=True)
class Chunking:
    """How an utterance is cut into chunks, for a model with the given front-end (module docstring).
    ``left_chunks=None`` attends to the whole history (PyTorch only).

    Attributes:
        chunk_size: C, encoder frames per chunk (40 ms each at 4x subsampling of 10 ms frames).
        subsampling_factor: S, feature frames per encoder frame (the model's / export's value).
        right_context: R, feature frames one encoder frame reads beyond its stride (the model's / export's value).
        left_chunks: L, chunks of attention history (the streaming graph keeps a fixed cache of C * L frames).
        hop: encoder frames between chunk starts (divides C); None = C (WeNet-style, no overlap).
    Raises:
        ValueError: non-positive sizes, a hop that does not divide C, a negative right context.
    """

    chunk_size: int
    subsampling_factor: int
    right_context: int
    left_chunks: int | None = None
    hop: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("chunk_size", self.chunk_size)
        check_front_end(self.subsampling_factor, self.right_context)
        check_positive_int("left_chunks", self.left_chunks, allow_none=True, minimum=0)
        check_positive_int("hop", self.hop, allow_none=True)
        if self.hop is not None and self.chunk_size % self.hop:
            raise ValueError(f"hop ({self.hop}) must divide chunk_size ({self.chunk_size})")
        if self.hop == self.chunk_size:
            object.__setattr__(self, "hop", None)          # one spelling of "no overlap"

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_model(cls, config, chunk_size: int, left_chunks: int | None = None,
                  hop: int | None = None) -> "Chunking":
        """The chunking of a model config (anything with ``subsampling_factor`` and ``right_context``)."""
        return cls(chunk_size=chunk_size, left_chunks=left_chunks, hop=hop,
                   subsampling_factor=config.subsampling_factor, right_context=config.right_context)

    @classmethod
    def from_frames(cls, chunk: int, hop: int, left: int, unit: str, subsampling_factor: int,
                    right_context: int) -> "Chunking":
        """Chunk, hop and left context given in ``feature`` frames (10 ms; multiples of S) or ``encoder`` frames;
        the left context must be a whole number of chunks. The paper's setting is
        ``from_frames(64, 32, 128, "feature", ...)``: with S = 4, chunk 16, hop 8, two left chunks."""
        if unit not in ("feature", "encoder"):
            raise ValueError(f"unit must be 'feature' or 'encoder', got {unit!r}")
        check_front_end(subsampling_factor, right_context)
        for name, v in (("chunk", chunk), ("hop", hop), ("left", left)):
            check_positive_int(name, v)
        if unit == "feature":
            s = subsampling_factor
            if chunk % s or hop % s or left % s:
                raise ValueError(f"feature-frame chunk/hop/left must be multiples of the subsampling factor {s}, "
                                 f"got {chunk}/{hop}/{left}")
            chunk, hop, left = chunk // s, hop // s, left // s
        if left % chunk:
            raise ValueError(f"left context ({left} frames) must be a whole number of chunks ({chunk} frames)")
        return cls(chunk_size=chunk, hop=hop, left_chunks=left // chunk, subsampling_factor=subsampling_factor,
                   right_context=right_context)

    def replace(self, **changes) -> "Chunking":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ arithmetic (feature frames unless noted)
    @property
    def min_frames(self) -> int:
        """Feature frames for one encoder frame (``R + 1``): the shortest input anything can decode."""
        return min_frames(self.right_context)

    @property
    def window(self) -> int:
        """Feature frames a full chunk reads: ``(C - 1) * S + R + 1``."""
        return (self.chunk_size - 1) * self.subsampling_factor + self.right_context + 1

    @property
    def shift(self) -> int:
        """Feature frames one chunk advances: ``C * S``."""
        return self.chunk_size * self.subsampling_factor

    @property
    def hop_frames(self) -> int:
        """Encoder frames between chunk starts (``hop``, default C)."""
        return self.hop or self.chunk_size

    @property
    def hop_shift(self) -> int:
        """Feature frames between chunk starts: ``hop * S``."""
        return self.hop_frames * self.subsampling_factor

    @property
    def lanes(self) -> int:
        """Interleaved chunk sequences with overlapping chunks: ``C / hop`` (1 without overlap)."""
        return self.chunk_size // self.hop_frames

    @property
    def cache_frames(self) -> int | None:
        """Encoder frames of attention history a stream keeps: ``C * L`` (None = unlimited)."""
        return None if self.left_chunks is None else self.chunk_size * self.left_chunks

    def output_frames(self, input_frames: int) -> int:
        """Encoder frames from ``input_frames`` feature frames (module function :func:`output_frames`)."""
        return output_frames(input_frames, self.subsampling_factor, self.right_context)

    # ------------------------------------------------------------------ scheduling
    def next_chunk(self, available: int, finished: bool, first: bool = True,
                   end: EndOfStream = EndOfStream()) -> int:
        """Feature frames the next chunk reads, or 0 when no chunk can run now.

        Args:
            available: feature frames ready from the chunk's first frame on.
            finished: the input has ended (every frame is ready).
            first: no earlier chunk ran (with overlapping chunks, the previous chunk may already reach the end).
            end: the end-of-stream policy.
        Returns:
            ``window`` for a full chunk; with the ``flush`` policy and ``finished``, the ``available`` frames for a
            short last chunk (at least ``min_frames``, and only where the previous chunk, ``hop_shift`` frames
            earlier, did not already reach the end); else 0.
        """
        w = self.window
        if end.is_sherpa_onnx:
            return w if available > w else 0
        if available >= w:
            return w
        if not finished or available < self.min_frames:
            return 0
        if not first and self.output_frames(available + self.hop_shift) <= self.chunk_size:
            return 0      # the previous (overlapping) chunk covered the end already
        return available

    # ------------------------------------------------------------------ export metadata
    def to_metadata(self) -> dict[str, str]:
        """ONNX metadata keys of a streaming export (values are strings)."""
        if self.left_chunks is None:
            raise ValueError("a streaming export needs left_chunks >= 1 (a fixed attention cache)")
        meta = {"chunk_size": self.chunk_size, "left_chunks": self.left_chunks,
                "subsampling_factor": self.subsampling_factor, "right_context": self.right_context,
                "slimasr_window": self.window, "slimasr_shift": self.shift,
                "slimasr_required_cache_size": self.cache_frames}
        return {k: str(v) for k, v in meta.items()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str = "the export") -> "Chunking":
        """The chunking a streaming export was written with; a missing or inconsistent key is an error."""
        def get(key: str) -> int:
            v = meta.get(key, "")
            if v == "":
                raise ValueError(f"{source} lacks the ONNX metadata key {key!r} (write it with slimasr's export)")
            try:
                return int(v)
            except ValueError:
                raise ValueError(f"{source}: metadata {key!r} must be an integer, got {v!r}") from None

        c = cls(chunk_size=get("chunk_size"), left_chunks=get("left_chunks"),
                subsampling_factor=get("subsampling_factor"), right_context=get("right_context"))
        for key, want in (("slimasr_window", c.window), ("slimasr_shift", c.shift)):
            if get(key) != want:
                raise ValueError(f"{source}: metadata {key}={meta[key]} does not match chunk_size {c.chunk_size}, "
                                 f"subsampling_factor {c.subsampling_factor}, right_context {c.right_context} "
                                 f"(expected {want})")
        return c

    def to_dict(self) -> dict[str, Any]:
        """Fields and derived frame counts (``slimasr_export.json``)."""
        return {**dataclasses.asdict(self), "window": self.window, "shift": self.shift,
                "required_cache_size": self.cache_frames, "min_frames": self.min_frames}
