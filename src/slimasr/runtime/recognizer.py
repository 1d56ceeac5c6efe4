"""The recognizers: an :class:`OnlineRecognizer` (streaming graph, chunk by chunk) and an
:class:`OfflineRecognizer` (offline graph, whole utterances in batches), shaped like sherpa-onnx's and built one
way: ``OnlineRecognizer.from_onnx(path, config)`` / ``OfflineRecognizer.from_onnx(path, config)``
(``Recognizer.from_onnx`` picks the one the export needs). A recognizer holds the onnxruntime session
(:mod:`slimasr.runtime.session`), the export's settings and the decoders; a stream holds one utterance and its
own scheduling (:mod:`slimasr.runtime.stream`).

Torch-free (numpy, onnxruntime, kaldi-native-fbank, sentencepiece; pyctcdecode/kenlm for beam search). Nothing is
guessed: the chunking, front-end and fbank settings are read from the export's metadata, and a missing key is
an error.

Streaming follows sherpa-onnx's WeNet CTC loop, with the chunk arithmetic of :mod:`slimasr.chunking`:

* a chunk of C encoder frames reads a window of (C - 1) * S + R + 1 feature frames (S, R: the export's
  ``subsampling_factor`` and ``right_context``); chunks start C * S feature frames apart;
* ``offset`` starts at C * L and grows by the chunk's frames; ``attn_cache`` starts as zeros, and while fewer
  than L chunks have run the first C * L - idx * C entries of ``attn_mask`` are False; ``required_cache_size``
  = C * L;
* greedy CTC carries the last frame's argmax across chunks.

**End of stream** (:class:`slimasr.chunking.EndOfStream`). By default the frames left at ``input_finished`` run
as a last, possibly short, chunk (the graph's time axes are dynamic), so a stream's final tokens equal the
chunk-masked decoding of the same audio (``ASRModel.ctc_log_probs(..., chunk_size=C, left_chunks=L)``): no
speech lost, none invented. ``StreamingConfig(end_of_stream=EndOfStream.sherpa_onnx())`` instead appends
0.66 s of zero samples and decodes only full windows while ``start + window < frames ready``: exactly the
tokens ``sherpa_onnx.OnlineRecognizer.from_wenet_ctc`` gives when fed the same audio plus its examples' tail
padding. Use it to compare with sherpa-onnx.

**Chunk, hop and left context** (:class:`StreamingConfig`). WeNet-style streaming is hop = chunk: each chunk
emits all its C frames. The paper (Bekal et al., 2023, Section 4) runs inference "using a chunk size of 64,
with a hop size of 32 frames and 128 frames of left context". We read these as 10 ms *feature* frames, the only
frames the paper defines (80-dimensional filterbanks): chunk 640 ms = 16 encoder frames, hop 320 ms = 8 encoder
frames, left context 1.28 s = 32 encoder frames = 2 chunks (``StreamingConfig.paper()``). The alternative
reading, encoder frames (40 ms each), would mean 2.56 s chunks emitted every 1.28 s, which is not a latency an
online model is run at, and chunks larger than dynamic chunk training draws (``max_chunk_size`` 25); it is
available as ``StreamingConfig.from_frames(64, 32, 128, unit="encoder")``. Feature frames are converted with the
export's ``subsampling_factor`` when the recognizer is built (:meth:`slimasr.chunking.Chunking.from_frames`).

A hop smaller than the chunk means *overlapping* chunks: chunk i covers encoder frames [i * hop, i * hop + C)
and emits only its first hop of outputs, frames [i * hop, (i + 1) * hop) — the frames no earlier chunk emitted.
Every emitted frame thus sees at least C - hop frames of future context (32 feature frames in the paper's
setting) plus the left context, and results update every hop. It is implemented with C / hop interleaved
WeNet-style caches ("lanes"): lane j runs the chunks that start at j * hop + k * C, each chunk attending to
that lane's previous L chunks, which is exactly the chunk mask the model was trained with (a lane's first
chunk has no left context, like the first chunk of any stream). It costs C / hop times the compute of
hop = chunk. At the end of the stream the last chunk also emits the rest of its frames.

**Batching.** The offline graph takes a batch: ``OfflineRecognizer.decode_streams`` decodes ready streams
together (``batch_size`` per call, sorted by length). The streaming graph follows sherpa-onnx's WeNet interface,
whose caches have no batch axis; an export written with ``--batched`` also has ``model.batched.onnx``
(:mod:`slimasr.export.batched`), and then ``OnlineRecognizer.decode_streams`` runs the ready chunks of up to
``batch_size`` streams in one call (:mod:`slimasr.runtime.batched`; :attr:`OnlineRecognizer.supports_batch`),
with the same results as one stream at a time. Without it (or with ``batch_size=1``, or the TensorRT provider)
the streams' chunks run one after another.

**Providers**: see :mod:`slimasr.runtime.session` (CPU, CUDA, TensorRT and TensorRT engine directories).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..chunking import Chunking, EndOfStream, check_front_end, check_positive_int, min_frames
from ..audio import load_audio, resample, to_float_mono
from ..features import FrontendConfig, check_audio_length, compute_features
from .decoders import DecodingConfig, GreedyDecoder, Hypothesis, Vocabulary, make_decoder
from .session import (SessionConfig, create_session, engine_min_frames, engine_session, resolve_model_file,
                      trt_profile)
from .stream import ChunkInputs, OfflineStream, RecognitionResult, Stream, StreamPlan, stream_failed

__all__ = ["OfflineRecognizer", "OnlineRecognizer", "Recognizer", "RecognizerConfig", "StreamingConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamingConfig:
    """Chunking and end of stream for streaming recognition. None = the export's value.

    ``chunk_size`` and ``hop`` are in ``unit`` frames: ``encoder`` frames (the default) or ``feature`` frames
    (multiples of the export's subsampling factor, converted when the recognizer is built). See the module
    docstring for hop < chunk (overlapping chunks), the paper's configuration and the end-of-stream policies.
    """

    chunk_size: int | None = None     # C: frames per chunk
    left_chunks: int | None = None    # L: chunks of attention history (>= 1)
    hop: int | None = None            # frames between chunk starts; None = chunk_size (WeNet style)
    unit: str = "encoder"             # unit of chunk_size and hop: "encoder" or "feature" frames
    end_of_stream: EndOfStream = field(default_factory=EndOfStream)   # flush (default) or sherpa-onnx

    def __post_init__(self) -> None:
        for name in ("chunk_size", "left_chunks", "hop"):
            check_positive_int(name, getattr(self, name), allow_none=True)
        if self.chunk_size is not None and self.hop is not None and self.chunk_size % self.hop:
            raise ValueError(f"hop ({self.hop}) must divide chunk_size ({self.chunk_size})")
        if self.unit not in ("encoder", "feature"):
            raise ValueError(f"unit must be 'encoder' or 'feature', got {self.unit!r}")
        if not isinstance(self.end_of_stream, EndOfStream):
            raise ValueError(f"end_of_stream must be a slimasr.chunking.EndOfStream, got {self.end_of_stream!r}")

    @classmethod
    def from_frames(cls, chunk: int, hop: int, left: int, unit: str = "feature") -> "StreamingConfig":
        """Chunk, hop and left context given in ``feature`` frames (10 ms) or ``encoder`` frames; the left context
        must be a whole number of chunks."""
        if left % chunk:
            raise ValueError(f"left context ({left} frames) must be a whole number of chunks ({chunk} frames)")
        return cls(chunk_size=chunk, hop=hop, left_chunks=left // chunk, unit=unit)

    @classmethod
    def paper(cls) -> "StreamingConfig":
        """Chunk 64, hop 32, 128 frames of left context, read as 10 ms feature frames (module docstring)."""
        return cls.from_frames(64, 32, 128, unit="feature")

    @classmethod
    def sherpa_onnx(cls, **kw) -> "StreamingConfig":
        """sherpa-onnx's end of stream (0.66 s of zero padding, full windows only): for comparisons with it."""
        return cls(end_of_stream=EndOfStream.sherpa_onnx(), **kw)

    def resolve(self, exported: Chunking) -> Chunking:
        """The chunking to run: these settings over the export's (``exported``, read from its metadata)."""
        s, r = exported.subsampling_factor, exported.right_context
        chunk = self.chunk_size or (exported.chunk_size if self.unit == "encoder" else exported.chunk_size * s)
        hop = self.hop or chunk
        left = self.left_chunks or exported.left_chunks
        return Chunking.from_frames(chunk, hop, left * chunk, self.unit, s, r)


@dataclass(frozen=True)
class RecognizerConfig:
    """Everything a recognizer is built with, besides the export itself."""

    num_threads: int = 1              # onnxruntime intra-op threads per session
    provider: str = "cpu"             # "cpu" | "cuda" | "tensorrt" (falls back, with a warning, when unavailable)
    int8: bool = False                # load model.int8.onnx instead of model.onnx
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    batch_size: int = 8               # offline: utterances per graph call; streaming: streams' chunks per call
                                      # of the export's batched graph, if it has one (1 = one at a time)
    keep_log_probs: bool = False      # streams keep their log-probabilities (always on for beam search)
    trt_fp16: bool = False            # TensorRT: allow fp16 kernels
    trt_cache_dir: str | None = None  # TensorRT engine cache (default: <export>/trt_cache, else the user cache)
    spin_threads: bool = False        # onnxruntime worker threads busy-wait between ops: lower latency on idle,
                                      # dedicated cores; much slower on shared or oversubscribed cores (servers)

    def __post_init__(self) -> None:
        self.session                  # validates provider and threads
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")

    @property
    def session(self) -> SessionConfig:
        """The onnxruntime session settings (:mod:`slimasr.runtime.session`)."""
        return SessionConfig(num_threads=self.num_threads, provider=self.provider, spin_threads=self.spin_threads,
                             trt_fp16=self.trt_fp16, trt_cache_dir=self.trt_cache_dir)


# ---------------------------------------------------------------------------------------------- export reading
@dataclass(frozen=True)
class ExportInfo:
    """What the runtime reads from an export's ONNX metadata (written by :mod:`slimasr.export.onnx`)."""

    kind: str                 # "offline" | "streaming"
    vocab_size: int
    layers: int
    heads: int
    head_dim: int
    d_model: int
    conv_cache_frames: int
    subsampling: int
    right_context: int
    chunking: Chunking | None  # streaming exports: the chunking they were written for
    frontend: FrontendConfig
    original_layers: tuple[int, ...] | None

    @property
    def chunk_size(self) -> int | None:
        return self.chunking.chunk_size if self.chunking else None

    @property
    def left_chunks(self) -> int | None:
        return self.chunking.left_chunks if self.chunking else None

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> "ExportInfo":
        """Every key is required: a missing one is a ValueError naming it (no defaults, no guessing)."""
        def get(key: str) -> str:
            v = meta.get(key, "")
            if v == "":
                raise ValueError(f"{source} lacks the ONNX metadata key {key!r}; re-export it with this slimasr "
                                 "version (slimasr export onnx)")
            return v

        def integer(key: str) -> int:
            try:
                return int(get(key))
            except ValueError as e:
                if "lacks" in str(e):
                    raise
                raise ValueError(f"{source}: metadata {key!r} must be an integer, got {meta[key]!r}") from None

        kind = get("slimasr_kind")
        if kind not in ("offline", "streaming"):
            raise ValueError(f"{source}: metadata slimasr_kind must be 'offline' or 'streaming', got {kind!r}")
        subsampling, right_context = integer("subsampling_factor"), integer("right_context")
        check_front_end(subsampling, right_context)
        frontend = FrontendConfig.from_json(get("slimasr_frontend"), f"{source}: slimasr_frontend")
        try:
            orig = json.loads(get("slimasr_original_layers"))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{source}: unreadable original_layers metadata ({e})") from None
        return cls(
            kind=kind, vocab_size=integer("vocab_size"), layers=integer("slimasr_num_layers"),
            heads=integer("head"), head_dim=integer("slimasr_head_dim"), d_model=integer("slimasr_d_model"),
            conv_cache_frames=integer("slimasr_conv_cache_frames"), subsampling=subsampling,
            right_context=right_context,
            chunking=Chunking.from_metadata(meta, source) if kind == "streaming" else None,
            frontend=frontend, original_layers=tuple(orig) if orig is not None else None)


def _load_vocabulary(model_dir: Path, meta: dict[str, str], vocab_size: int) -> Vocabulary:
    from ..tokenizer import Tokenizer

    tok = None
    if (model_dir / "tokenizer.model").is_file():
        tok = Tokenizer(model_dir / "tokenizer.model")
    elif meta.get("slimasr_tokenizer"):
        tok = Tokenizer.from_bytes(base64.b64decode(meta["slimasr_tokenizer"]))
    if (model_dir / "tokens.txt").is_file():
        vocab = Vocabulary.from_tokens_txt(model_dir / "tokens.txt", tok)
    elif tok is not None:
        vocab = Vocabulary.from_tokenizer(tok)
    else:
        raise ValueError(f"{model_dir} has neither tokens.txt nor tokenizer.model")
    if len(vocab) != vocab_size:
        raise ValueError(f"{model_dir}: the vocabulary has {len(vocab)} symbols but the model {vocab_size} outputs")
    return vocab


def _to_result(h: Hypothesis, is_final: bool) -> RecognitionResult:
    return RecognitionResult(text=h.text, tokens=h.tokens, timestamps=h.timestamps, words=h.words,
                             is_final=is_final)


def _open(path: str | os.PathLike, config: RecognizerConfig):
    """(session, the file it runs, metadata) of an export directory, .onnx file or TensorRT engine directory."""
    model_file = resolve_model_file(Path(path), config.int8)
    profile = None
    if config.provider == "tensorrt":
        profile = trt_profile(model_file.parent, config.streaming.resolve)
    if model_file.suffix == ".engine":
        session, model_file = engine_session(model_file, config.session, profile)
    else:
        session = create_session(model_file, config.session, profile)
    return session, model_file, dict(session.get_modelmeta().custom_metadata_map)


# ---------------------------------------------------------------------------------------------- recognizers
class Recognizer:
    """What both recognizers share: the onnxruntime session of one export, its settings and the decoders.

    Build one with ``from_onnx`` (:class:`OnlineRecognizer` for a streaming export, :class:`OfflineRecognizer`
    for an offline one; ``Recognizer.from_onnx`` returns whichever the export is).

    Example::

        rec = Recognizer.from_onnx("exp/onnx-streaming", num_threads=2)
        s = rec.create_stream()
        s.accept_waveform(16000, samples)
        rec.decode(s)                 # partial result in s.result
        s.input_finished()
        print(rec.decode(s).text)     # final
        print(Recognizer.from_onnx("exp/onnx-offline").transcribe(["a.wav", "b.flac"]))
    """

    kind: str | None = None

    def __init__(self, session, model_file: Path, meta: dict[str, str], config: RecognizerConfig) -> None:
        self.config = config
        self._session = session
        self.model_file = model_file           # the file the session runs
        self.provider = session.get_providers()[0]
        self._inputs = [i.name for i in session.get_inputs()]
        self.info = ExportInfo.from_metadata(meta, str(model_file))
        if self.kind is not None and self.info.kind != self.kind:
            other = "OnlineRecognizer" if self.info.kind == "streaming" else "OfflineRecognizer"
            raise ValueError(f"{model_file} is a {self.info.kind} export; load it with {other}.from_onnx "
                             f"(or Recognizer.from_onnx)")
        self.vocab = _load_vocabulary(model_file.parent, meta, self.info.vocab_size)
        self.frontend = self.info.frontend
        self.frame_seconds = self.info.subsampling * self.frontend.frame_shift_ms / 1000.0
        self._greedy = GreedyDecoder(self.vocab, self.frame_seconds)
        self._decoder = make_decoder(self.vocab, config.decoding, self.frame_seconds)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, config: RecognizerConfig | None = None,
                  **overrides) -> "Recognizer":
        """Load an export directory (``model.onnx``, ``tokens.txt``, ``tokenizer.model``, ``slimasr_export.json``)
        or one ``.onnx`` file of it, or a TensorRT engine directory (``model.engine``, from
        ``slimasr.export.tensorrt.build_engines``; see :mod:`slimasr.runtime.session`).

        Args:
            config: a :class:`RecognizerConfig` (default: its defaults).
            overrides: :class:`RecognizerConfig` fields replacing the config's, e.g. ``num_threads=2``,
                ``provider="cuda"``, ``int8=True``, ``streaming=StreamingConfig(...)``, ``decoding=...``.
        Returns:
            an :class:`OnlineRecognizer` or :class:`OfflineRecognizer` (``Recognizer.from_onnx``: the one the
            export needs; the subclasses refuse the other kind).
        Raises:
            ValueError: a missing or unloadable export, a missing metadata key, the wrong kind, bad settings.
        """
        if config is not None and not isinstance(config, RecognizerConfig):
            raise ValueError(f"config must be a RecognizerConfig, got {type(config).__name__} (pass settings as "
                             "keywords, e.g. from_onnx(path, num_threads=2))")
        fields = {f.name for f in dataclasses.fields(RecognizerConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown recognizer setting(s) {', '.join(unknown)}; RecognizerConfig has: "
                             f"{', '.join(sorted(fields))}")
        config = dataclasses.replace(config or RecognizerConfig(), **overrides)
        session, model_file, meta = _open(path, config)
        klass = cls
        if cls is Recognizer:
            klass = OnlineRecognizer if meta.get("slimasr_kind") == "streaming" else OfflineRecognizer
        return klass(session, model_file, meta, config)

    @property
    def is_streaming(self) -> bool:
        return self.info.kind == "streaming"

    def _run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        # onnxruntime sessions may be run from several threads
        return self._session.run(None, dict(zip(self._inputs, feeds)))

    def _waves(self, audio, sample_rate: int) -> tuple[list[np.ndarray], list[str], bool]:
        """Inputs of ``transcribe`` -> (16 kHz mono waves, names, single)."""
        single = isinstance(audio, (str, os.PathLike, np.ndarray))
        items = [audio] if single else list(audio)
        waves, names = [], []
        for k, a in enumerate(items):
            if isinstance(a, (str, os.PathLike)):
                waves.append(load_audio(a, self.frontend.sample_rate))
                names.append(str(a))
            else:
                waves.append(resample(to_float_mono(a, f"input {k}"), sample_rate, self.frontend.sample_rate))
                names.append(f"input {k}")
        return waves, names, single

    def transcribe(self, audio, sample_rate: int = 16000):
        """Recognise whole utterances.

        Args:
            audio: a file path, a ``(S,)`` / ``(S, channels)`` array, or a list of them (any sample rate,
                any channel count; converted to the model's rate, mono).
            sample_rate: the sample rate of arrays (files carry their own).
        Returns:
            a :class:`RecognitionResult` for one input, a list of them for a list.
        Raises:
            ValueError: naming the input: unreadable or missing file, empty audio, NaN or far out-of-range
                samples, too short for one output frame (:func:`slimasr.features.check_audio_length`).
        """
        waves, names, single = self._waves(audio, sample_rate)
        results = self._transcribe(waves, names)
        return results[0] if single else results

    def _transcribe(self, waves: list[np.ndarray], names: list[str]) -> list[RecognitionResult]:
        raise NotImplementedError


class OnlineRecognizer(Recognizer):
    """Streaming recognition with a streaming export: :meth:`create_stream`, :meth:`decode`,
    :meth:`decode_streams` (sherpa-onnx's ``OnlineRecognizer``); :meth:`transcribe` streams each input."""

    kind = "streaming"

    def __init__(self, session, model_file: Path, meta: dict[str, str], config: RecognizerConfig) -> None:
        super().__init__(session, model_file, meta, config)
        chunking = config.streaming.resolve(self.info.chunking)
        if model_file.suffix == ".engine" and (chunking.chunk_size, chunking.left_chunks) != (
                self.info.chunk_size, self.info.left_chunks):
            raise ValueError(f"the TensorRT engine {model_file} was built for chunk_size={self.info.chunk_size}, "
                             f"left_chunks={self.info.left_chunks}; got {chunking.chunk_size}, "
                             f"{chunking.left_chunks}")
        if model_file.suffix == ".engine" and not config.streaming.end_of_stream.is_sherpa_onnx:
            shortest = engine_min_frames(model_file)
            if shortest is not None and shortest > chunking.min_frames:
                raise ValueError(f"the TensorRT engine {model_file} takes only full chunks ({shortest} feature "
                                 "frames), so a stream's short last chunk cannot run: rebuild it with this slimasr "
                                 "(slimasr export tensorrt), or use StreamingConfig.sherpa_onnx()")
        info = self.info
        self.plan = StreamPlan(chunking=chunking, end=config.streaming.end_of_stream, layers=info.layers,
                               heads=info.heads, head_dim=info.head_dim, d_model=info.d_model,
                               conv_cache_frames=info.conv_cache_frames, frame_seconds=self.frame_seconds,
                               keep_log_probs=config.keep_log_probs or config.decoding.method == "beam")
        self._batched = self._open_batched(model_file, meta, config)

    @staticmethod
    def _open_batched(model_file: Path, meta: dict[str, str], config: RecognizerConfig):
        """The export's batched graph (:mod:`slimasr.runtime.batched`), or None."""
        from .batched import BatchedChunkRunner, batched_model_file

        f = batched_model_file(model_file, config.int8) if config.batch_size > 1 else None
        if f is None:
            return None
        if config.provider == "tensorrt":
            log.info("the TensorRT provider runs the batch-1 streaming graph only; %s is not used", f.name)
            return None
        return BatchedChunkRunner(f, config.session, meta, config.batch_size)

    @property
    def supports_batch(self) -> bool:
        """Whether several streams share one streaming-graph call: the export has a batched graph
        (``model.batched.onnx``) and ``batch_size`` > 1. Otherwise (sherpa-onnx's WeNet interface has no batch
        axis in its caches) ``decode_streams`` runs the streams' chunks one after another."""
        return self._batched is not None

    @property
    def batched_stats(self) -> tuple[int, int]:
        """(calls, chunks) of the batched graph so far; (0, 0) without one."""
        return self._batched.stats if self._batched is not None else (0, 0)

    def create_stream(self) -> Stream:
        """A new stream for one utterance (or, with :meth:`Stream.reset`, a sequence of segments)."""
        final = self._decoder if self.config.decoding.method != "greedy" else None
        return Stream(self.plan, self.frontend, self._greedy, final)

    def is_ready(self, stream: Stream) -> bool:
        """Whether :meth:`decode` has work on ``stream`` (``stream.is_ready()``)."""
        return stream.is_ready()

    def _run_chunks(self, chunks: list[ChunkInputs]) -> list[list[np.ndarray]]:
        """The graph's outputs for each chunk (one call per chunk: see :attr:`supports_batch`)."""
        return [self._run(c.feeds())[:3] for c in chunks]

    def decode(self, stream: Stream) -> RecognitionResult:
        """Decode every chunk of ``stream`` that is ready; after ``input_finished`` this completes the stream.

        Returns ``stream.result``: a partial (greedy) result while audio may still come, the final one (beam
        search if configured) once the input is finished and decoded; the same object when nothing ran.
        Raises:
            NonFiniteStateError: the stream's state became NaN/infinite (it is not silently emptied).
        """
        return self.decode_streams([stream])[0]

    def decode_streams(self, streams: Iterable[Stream], return_exceptions: bool = False) -> list[RecognitionResult]:
        """:meth:`decode` for several streams (their ready chunks are run as the graph allows: together through
        the batched graph when :attr:`supports_batch`, else one after another).

        With ``return_exceptions`` a stream that fails (e.g. :class:`NonFiniteStateError`) gets its exception in
        its place in the returned list and the other streams are decoded; otherwise the exception is raised.
        """
        if self._batched is not None:
            from .batched import decode_streams_batched

            return decode_streams_batched(self._batched, lambda c: self._run_chunks([c])[0], list(streams),
                                          return_exceptions)
        results = []
        for stream in streams:
            try:
                with stream.lock:
                    ran = False
                    while (chunk := stream.next_chunk()) is not None:
                        (outputs,) = self._run_chunks([chunk])
                        stream.chunk_decoded(chunk, *outputs)
                        ran = True
                    results.append(stream.publish(ran))
            except Exception as e:  # NonFiniteStateError, a decoder's error: this stream only
                results.append(stream_failed(e, return_exceptions))
        return results

    def transcribe_long(self, audio, sample_rate: int | None = None, endpoint=None, progress: bool = False):
        """A recording of any length decoded in bounded memory and split into segments at endpoints (the rules
        of ``slimasr serve``), with word timestamps: what ``slimasr transcribe`` prints.

        Args:
            audio: a file any soundfile format reads (any sample rate, channels mixed down), ``"-"`` for a WAV on
                standard input, or a ``(S,)`` / ``(S, C)`` array at ``sample_rate``.
            endpoint: a :class:`slimasr.serve.endpoint.EndpointConfig` (default: sherpa-onnx's rules).
            progress: a tqdm bar on stderr.
        Returns:
            a :class:`slimasr.decoding.Transcript` (``text``, ``words``, ``segments``, ``to_dict()``).
        Raises:
            ValueError: naming the input (missing, unreadable, empty).
        """
        from ..decoding import recognizer_backend, transcribe_audio

        return transcribe_audio(recognizer_backend(self), audio, sample_rate, endpoint, progress)

    def _transcribe(self, waves: list[np.ndarray], names: list[str]) -> list[RecognitionResult]:
        for name, w in zip(names, waves):       # as the offline recognizer, not an empty result (a stream's is)
            check_audio_length(w.size, self.frontend, min_frames(self.info.right_context), name)
        results = []
        for w in waves:
            s = self.create_stream()
            s.accept_waveform(self.frontend.sample_rate, w)
            s.input_finished()
            results.append(self.decode(s))
        return results

    def __repr__(self) -> str:
        p = self.plan
        return (f"OnlineRecognizer({self.model_file}, {self.info.layers} layers, provider={self.provider}, "
                f"chunk={p.chunk_size}, hop={p.hop}, left_chunks={p.left_chunks}, end={p.end.policy}, "
                f"decoding={self.config.decoding.method})")


class OfflineRecognizer(Recognizer):
    """Whole-utterance recognition with an offline export: :meth:`create_stream` + :meth:`decode_streams`
    (sherpa-onnx's ``OfflineRecognizer``; ready streams are decoded together, ``batch_size`` per graph call) and
    :meth:`transcribe`."""

    kind = "offline"

    @property
    def supports_batch(self) -> bool:
        return True

    def create_stream(self) -> OfflineStream:
        return OfflineStream(self.frontend.sample_rate)

    def decode(self, stream: OfflineStream) -> RecognitionResult:
        return self.decode_streams([stream])[0]

    def decode_streams(self, streams: Iterable[OfflineStream], return_exceptions: bool = False,
                       ) -> list[RecognitionResult]:
        """Decode the streams in batches of ``batch_size`` (sorted by length); sets and returns their results.

        With ``return_exceptions`` a stream that fails (no audio, shorter than the front-end needs, NaN
        log-probabilities) gets its ``ValueError`` in its place in the returned list and the others are
        decoded, as :meth:`OnlineRecognizer.decode_streams` does; otherwise an error is raised (a stream without
        audio before one that is too short).

        Raises:
            ValueError: a stream without audio or shorter than the front-end needs (naming it).
        """
        streams = list(streams)
        waves, failed = [], {}
        for k, s in enumerate(streams):
            try:
                waves.append(s.waveform())
            except ValueError as e:                  # no audio was accepted
                failed[k] = stream_failed(e, return_exceptions)
                waves.append(np.zeros(0, np.float32))  # stands in; its result is the error
        results = self._transcribe(waves, [s.name for s in streams], return_exceptions)
        results = [failed.get(k, r) for k, r in enumerate(results)]
        for s, r in zip(streams, results):
            if not isinstance(r, Exception):
                s.result = r
        return results

    def _transcribe(self, waves: list[np.ndarray], names: list[str], return_exceptions: bool = False,
                    ) -> list[RecognitionResult]:
        need = min_frames(self.info.right_context)
        results: list = [None] * len(waves)
        feats: dict[int, np.ndarray] = {}
        for i, (name, w) in enumerate(zip(names, waves)):
            try:
                check_audio_length(w.size, self.frontend, need, name)
            except ValueError as e:
                results[i] = stream_failed(e, return_exceptions)
                continue
            feats[i] = compute_features(w, self.frontend)
        order = sorted(feats, key=lambda i: feats[i].shape[0])
        bs = self.config.batch_size
        for b in range(0, len(order), bs):
            idx = order[b: b + bs]
            t_max = max(feats[i].shape[0] for i in idx)
            x = np.zeros((len(idx), t_max, feats[idx[0]].shape[1]), np.float32)
            for r, i in enumerate(idx):
                x[r, : feats[i].shape[0]] = feats[i]
            x_lens = np.array([feats[i].shape[0] for i in idx], np.int64)
            log_probs, lens = self._run((x, x_lens))[:2]
            for r, i in enumerate(idx):
                lp = log_probs[r, : int(lens[r])]
                if np.isfinite(lp).all():
                    results[i] = _to_result(self._decoder.decode(lp), True)
                else:
                    results[i] = stream_failed(ValueError(f"{names[i]}: the model's log-probabilities are "
                                                          "NaN/infinite"), return_exceptions)
        return results

    def __repr__(self) -> str:
        return (f"OfflineRecognizer({self.model_file}, {self.info.layers} layers, provider={self.provider}, "
                f"decoding={self.config.decoding.method})")
