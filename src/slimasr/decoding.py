"""One decoding loop over backends: the PyTorch model, the torch-free runtime on an ONNX export, sherpa-onnx.

``slimasr decode``, ``slimasr bench``, ``slimasr transcribe`` and the demo all decode through this module:
:func:`open_backend` builds a backend, :func:`decode_utterance` decodes one utterance with it (and measures the
compute it took), :func:`decode_rows` runs that over a manifest's rows, skipping (counting and naming) every
utterance that cannot be decoded, and :func:`decode_manifest` adds scoring and the hypothesis file.

**Backends** (:data:`BACKENDS`):

* ``torch``: an :class:`~slimasr.model.ASRModel`. Offline: ``ctc_log_probs`` over the whole utterance (full
  context). Streaming: ``stream_step`` chunk by chunk, which equals the chunk-masked ``ctc_log_probs`` of the
  same features (``tests/test_model.py``); the stream ends with a shorter last chunk on the real frames.
* ``onnx`` / ``onnx-int8``: :class:`slimasr.runtime.Recognizer` on ``model.onnx`` / ``model.int8.onnx`` of an
  export. Given a ``.pt`` model (or none: the embedded default) the model is exported first, once, into the
  export cache (:func:`cached_export`, :mod:`slimasr.export.cache`).
* ``sherpa-onnx`` / ``sherpa-onnx-int8``: sherpa-onnx's C++ runtime on the same export (WeNet CTC interface,
  greedy search only). A stream ends the way sherpa-onnx's examples end it: 0.66 s of zero samples appended
  before ``input_finished`` (:data:`slimasr.chunking.SHERPA_ONNX_TAIL_SECONDS`). The runtime gives the same
  tokens with ``BackendConfig(end_of_stream=EndOfStream.sherpa_onnx())`` (``--end-of-stream sherpa-onnx``);
  its default, like the torch backend's, runs the remaining frames as a short last chunk
  (:mod:`slimasr.chunking`).
* ``tensorrt`` (``slimasr bench`` only): the runtime on a TensorRT engine directory.

**Modes**: ``chunk_size=None`` decodes whole utterances (offline); a chunk size streams the utterance through
the backend's streaming path in pieces of ``feed`` samples (default: the whole utterance in one piece; the
tokens do not depend on the piece size). ``slimasr bench`` feeds 100 ms pieces and replays them in simulated
real time: piece ``i`` arrives at ``(i + 1) * feed``; its processing starts when both it and the previous
piece's processing are done. First-partial latency runs from the start of the audio to the first non-empty
partial result, final latency from the end of the audio to the final result.

Example::

    from slimasr.decoding import BackendConfig, decode_manifest
    r = decode_manifest(None, "data/synth8/test.jsonl", BackendConfig(backend="onnx", chunk_size=16, left_chunks=4))
    print(r["wer"], r["skipped"])
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .chunking import SHERPA_ONNX_TAIL_SECONDS, EndOfStream, check_positive_int, min_frames
from .export.cache import default_model_file
from .fileutil import exception_line
from .features import FrontendConfig
from .runtime.decoders import DecodingConfig
from .runtime.session import EXPORT_CONFIG_FILE

__all__ = ["BACKENDS", "Backend", "BackendConfig", "Decoded", "DecodeReport", "SkippedItem", "cached_export",
           "decode_manifest", "decode_rows", "decode_utterance", "default_model_file", "greedy_ctc",
           "greedy_transcripts", "open_backend", "read_waves", "recognizer_backend", "Transcript", "transcribe_audio", "audio_blocks"]

log = logging.getLogger(__name__)

ROW_KEYS = ("audio_filepath", "utt_id", "offset", "speaker")   # what names a decoded row (segments share a file)
BACKENDS = ("torch", "onnx", "onnx-int8", "sherpa-onnx", "sherpa-onnx-int8", "tensorrt")


# ---------------------------------------------------------------------------------------------- small helpers
def greedy_ctc(log_probs, lens=None, blank: int = 0) -> list[list[int]]:
    """Best-path CTC: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (B, T, V) array or tensor; lens: (B,) valid frames (default: all).
    Returns:
        one token-id list per utterance.
    """
    if hasattr(log_probs, "detach"):
        best = log_probs.detach().argmax(-1).cpu().numpy()
        lens = None if lens is None else lens.detach().cpu().numpy() if hasattr(lens, "detach") else lens
    else:
        best = np.asarray(log_probs).argmax(-1)
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : (int(lens[b]) if lens is not None else best.shape[1])]
        if seq.size == 0:
            out.append([])
            continue
        keep = np.ones(seq.shape, dtype=bool)
        keep[1:] = seq[1:] != seq[:-1]
        out.append([int(t) for t in seq[keep] if t != blank])
    return out


def greedy_transcripts(log_probs, lens, targets, target_lens, tokenizer, blank: int = 0
                       ) -> tuple[list[str], list[str]]:
    """A batch's references and greedy (:func:`greedy_ctc`) hypotheses as text, for scoring a dev set
    (:func:`slimasr.scoring.error_counts`) during training and pruning.

    Args:
        log_probs: (B, T, V) CTC log-probabilities; lens: (B,) valid frames.
        targets: (B, U) padded token ids; target_lens: (B,) valid tokens.
        tokenizer: turns token ids into text (:class:`slimasr.tokenizer.Tokenizer`).
    Returns:
        (references, hypotheses), one string per utterance.
    """
    ids = targets.tolist() if hasattr(targets, "tolist") else targets
    n = target_lens.tolist() if hasattr(target_lens, "tolist") else target_lens
    refs = [tokenizer.decode(r[:int(k)]) for r, k in zip(ids, n)]
    hyps = [tokenizer.decode(h) for h in greedy_ctc(log_probs, lens, blank)]
    return refs, hyps


def _gpu_memory_mb(pid: int) -> float | None:
    """Memory this process holds on the GPU now (nvidia-smi), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return None


# ---------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class BackendConfig:
    """How :func:`open_backend` decodes: which backend, offline or streaming, which search, how many threads.

    The runtime options of ``slimasr decode``, ``transcribe``, ``serve`` and ``bench`` are built from these
    fields (:func:`slimasr.cli.options.runtime_options`); ``threads`` and ``spin_threads`` default as
    :class:`slimasr.runtime.RecognizerConfig`'s ``num_threads`` and ``spin_threads`` do.

    Attributes:
        backend: One of :data:`BACKENDS`.
        chunk_size: Encoder frames per chunk (40 ms each); none: offline, whole utterances.
        left_chunks: Chunks of left context; none: unlimited (torch) or the export's (onnx backends).
        hop: Runtime streams: encoder frames between chunk starts; none: the chunk size.
        decoding: Greedy search, or beam search with an LM.
        threads: Threads of the backend: onnxruntime intra-op, sherpa-onnx, or PyTorch intra-op (a process-wide
            setting, made by the command, not by the backend).
        device: torch backend: cpu or cuda.
        spin_threads: onnx backends: onnxruntime's worker threads busy-wait between operators (as sherpa-onnx's
            do): faster on idle, dedicated cores, much slower on shared or oversubscribed ones (servers).
        time_search: onnx offline beam search: also run greedy search, to time the search alone.
        end_of_stream: Runtime streams: flush the last frames as a short chunk, or pad as sherpa-onnx does.
    """

    backend: str = "torch"
    chunk_size: int | None = None
    left_chunks: int | None = None
    hop: int | None = None
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    threads: int = 1
    device: str = "cpu"
    spin_threads: bool = False
    time_search: bool = False
    end_of_stream: EndOfStream = field(default_factory=EndOfStream)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("chunk_size", "left_chunks", "hop"):
            check_positive_int(name, getattr(self, name), allow_none=True)
        if self.hop not in (None, self.chunk_size) and self.backend not in ("onnx", "onnx-int8", "tensorrt"):
            raise ValueError(f"a hop below the chunk size (overlapping chunks) is the runtime's (onnx backends); "
                             f"the {self.backend} backend streams with hop = chunk size")
        if self.left_chunks is not None and self.chunk_size is None:
            raise ValueError("left_chunks needs a chunk_size (streaming)")
        check_positive_int("threads", self.threads)
        if self.backend.startswith("sherpa-onnx") and self.decoding.method != "greedy":
            raise ValueError("the sherpa-onnx backend decodes with greedy search only")
        if self.end_of_stream.is_sherpa_onnx and self.backend not in ("onnx", "onnx-int8", "tensorrt"):
            raise ValueError(f"the sherpa-onnx end-of-stream setting is the runtime's (onnx backends); the "
                             f"{self.backend} backend " + ("always ends streams that way" if self.backend.startswith(
                                 "sherpa") else "runs a short last chunk"))

    @property
    def streaming(self) -> bool:
        return self.chunk_size is not None


# ---------------------------------------------------------------------------------------------- exports
def _export_kind(where: Path) -> str | None:
    """``streaming`` or ``offline`` from an export's (or TensorRT engine directory's) description, else None."""
    d = where if where.is_dir() else where.parent
    for name in (EXPORT_CONFIG_FILE, "slimasr_tensorrt.json"):
        f = d / name
        if f.is_file():
            kind = json.loads(f.read_text(encoding="utf-8")).get("kind")
            if kind in ("streaming", "offline"):
                return kind
    return None


def _is_export(path: Path) -> bool:
    return path.suffix == ".onnx" or (path.is_dir() and (path / EXPORT_CONFIG_FILE).is_file())


def cached_export(model, model_file: str | os.PathLike | None, streaming: bool, chunk_size: int = 16,
                  left_chunks: int = 4, root: str | os.PathLike | None = None) -> Path:
    """The export the runtime backends decode (with ``model.int8.onnx``), made once and reused: the entry of
    :func:`slimasr.export.cache.cached_onnx_export` for ``ExportKind(streaming, chunk_size, left_chunks, int8=True)``.

    Args:
        model: the loaded :class:`~slimasr.model.ASRModel` (None: loaded from ``model_file`` when needed).
        model_file: the ``.pt`` file it came from (None = the embedded default model); its bytes key the cache.
        streaming, chunk_size, left_chunks: which graph (see :func:`slimasr.export.onnx.export_onnx`).
        root: where exports live; default :func:`slimasr.export.cache.exports_dir` (``$SLIMASR_CACHE/exports``).
    Returns:
        the export directory ``root/<offline | streaming-c{C}-l{L}>-int8-<key[:16]>``.
    Raises:
        ValueError / FileNotFoundError: an unreadable model file, or a model export refuses.
    """
    from .export.cache import ExportKind, cached_onnx_export

    kind = ExportKind(streaming=streaming, chunk_size=chunk_size, left_chunks=left_chunks, int8=True)
    return cached_onnx_export(model_file, kind, model=model, root=root)


# ---------------------------------------------------------------------------------------------- backends
class Backend:
    """What the decoding loop needs from a backend.

    Offline: :meth:`offline`. Streaming (sherpa-onnx's shape): :meth:`create_stream` gives a stream with
    ``accept_waveform(sample_rate, samples)``, ``input_finished()``, ``reset()``, ``result``,
    ``frames_emitted`` and ``chunks`` (chunks run so far); :meth:`decode` decodes what is ready and, once the input
    is finished, completes the stream (``result.is_final``; the beam search's time in ``stream.search_s``).
    """

    name = ""
    model_file: Path
    frame_seconds: float = 0.04
    streaming: bool = False
    chunking: tuple[int, int | None] | None = None   # streaming: (chunk size, left chunks; None = all history)
    min_frames: int                     # feature frames for one encoder frame (chunking.min_frames of the model)
    frontend: FrontendConfig            # the model's features (sample rate, frames)

    @property
    def mode(self) -> str:
        """What the backend runs, whatever was asked: ``offline`` or ``chunk C, left L`` (a streaming export
        decoded without a chunk size runs the export's chunking)."""
        if not self.streaming or self.chunking is None:
            return "offline"
        chunk, left = self.chunking
        return f"chunk {chunk}, left {'all' if left is None else left}"

    def offline(self, wave: np.ndarray):
        """Decode one whole 16 kHz utterance: (RecognitionResult, {"compute", "features", "encoder", "search"}
        seconds; None where the backend cannot split its time)."""
        raise NotImplementedError

    def create_stream(self):
        raise NotImplementedError

    def decode(self, stream):
        raise NotImplementedError

    def segment_result(self, stream, final: bool = False):
        """The current segment's result (beam search over its log-probabilities when configured), at an
        endpoint (see :func:`transcribe_audio`)."""
        raise NotImplementedError(f"the {self.name} backend does not split streams into segments")

    def gpu_memory(self) -> float | None:
        return None


def _result(h, is_final: bool, segment: int = 0, start_time: float = 0.0):
    from .runtime.stream import RecognitionResult

    return RecognitionResult(text=h.text, tokens=h.tokens, timestamps=h.timestamps, words=h.words,
                             is_final=is_final, segment=segment, start_time=start_time)


class _TorchStream:
    """One utterance streamed through ``ASRModel.stream_step`` (interface of :class:`slimasr.runtime.Stream`)."""

    def __init__(self, backend: "_TorchBackend") -> None:
        from .features import StreamFeatures
        from .runtime.stream import RecognitionResult

        self._b = backend
        self._intake = StreamFeatures(backend.model.frontend)
        self._fbank = self._intake.features
        self._used = 0
        self._state = backend.model.init_state(1, backend.device)
        self.is_final = False
        self.frames_emitted = 0
        self.chunks = 0
        self.search_s = 0.0
        self._segment = 0
        self._segment_start = 0
        self._new_segment()
        self.result = RecognitionResult()

    def _new_segment(self) -> None:
        from .runtime.decoders import IncrementalHypothesis

        self._hyp = IncrementalHypothesis(self._b.greedy)
        self._prev = -1
        self._lps: list[np.ndarray] = []

    def accept_waveform(self, sample_rate: int, samples) -> None:
        self._intake.accept_waveform(sample_rate, samples)

    def input_finished(self) -> None:
        self._intake.input_finished()

    def reset(self) -> None:
        from .runtime.stream import RecognitionResult

        if self._hyp.received:
            self._segment += 1
        self._segment_start = self.frames_emitted
        self._new_segment()
        self.result = RecognitionResult(segment=self._segment,
                                        start_time=round(self.frames_emitted * self._b.frame_seconds, 6))


class _TorchBackend(Backend):
    """The PyTorch model (see the module docstring)."""

    def __init__(self, model, model_file: Path, cfg: BackendConfig) -> None:
        import torch

        from .runtime.decoders import GreedyDecoder, Vocabulary, make_decoder
        from .tokenizer import Tokenizer

        self.torch = torch
        self.cfg = cfg
        self.name = "torch"
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device).eval()
        if not self.model.tokenizer_bytes:
            raise ValueError(f"model {model_file} has no tokenizer attached; cannot turn tokens into text")
        self.model_file = model_file
        self.vocab = Vocabulary.from_tokenizer(Tokenizer.from_bytes(self.model.tokenizer_bytes))
        self.frontend = self.model.frontend
        self.frame_seconds = self.model.config.subsampling_factor * self.frontend.frame_shift_ms / 1000.0
        self.min_frames = self.model.min_frames
        self.decoder = make_decoder(self.vocab, cfg.decoding, self.frame_seconds)
        self.greedy = GreedyDecoder(self.vocab, self.frame_seconds)
        self.streaming = cfg.streaming
        if self.streaming:                       # model.config.StreamingRefused: the caller may decode offline
            self.model.config.check_streaming(self.frontend)
            self.chunking = (cfg.chunk_size, cfg.left_chunks)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def offline(self, wave):
        from .features import compute_features

        torch = self.torch
        t0 = time.perf_counter()
        feats = torch.from_numpy(compute_features(wave, self.frontend))
        t1 = time.perf_counter()
        with torch.inference_mode():
            lp, _ = self.model.ctc_log_probs(feats[None].to(self.device))
            lp = lp[0].float().cpu().numpy()
        self._sync()
        t2 = time.perf_counter()
        h = self.decoder.decode(lp)
        t3 = time.perf_counter()
        search = t3 - t2 if self.cfg.decoding.method == "beam" else 0.0
        return _result(h, True), {"compute": t3 - t0, "features": t1 - t0, "encoder": t3 - t1 - search,
                                  "search": search}

    def create_stream(self):
        return _TorchStream(self)

    def decode(self, st: _TorchStream):
        from .runtime.decoders import ctc_greedy

        if st.is_final:
            return st.result
        n = st._fbank.num_frames_ready
        feats = self.torch.from_numpy(st._fbank.get_frames(st._used, n - st._used)).to(self.device)
        st._used = n
        st._fbank.discard_before(n)                          # stream_step buffers what it still needs
        with self.torch.inference_mode():
            lp, st._state = self.model.stream_step(feats[None], st._state, self.cfg.chunk_size, self.cfg.left_chunks,
                                                   final=st._intake.is_input_finished)
        lp = lp[0].float().cpu().numpy()
        self._sync()
        if lp.shape[0]:
            toks, frames, st._prev = ctc_greedy(lp, prev=st._prev)
            st._hyp.extend(toks, [f + st.frames_emitted for f in frames])
            if self.cfg.decoding.method == "beam":
                st._lps.append(lp)
            st.frames_emitted += lp.shape[0]
            st.chunks += math.ceil(lp.shape[0] / self.cfg.chunk_size)
        start = round(st._segment_start * self.frame_seconds, 6)
        if st._intake.is_input_finished:
            t0 = time.perf_counter()
            st.result = self.segment_result(st, final=True)
            st.search_s = time.perf_counter() - t0 if self.cfg.decoding.method == "beam" else 0.0
            st.is_final = True
        elif lp.shape[0]:
            st.result = _result(st._hyp.hypothesis(), False, st._segment, start)
        return st.result

    def segment_result(self, st: _TorchStream, final: bool = False):
        """The current segment's result: greedy, or beam search over its log-probabilities."""
        start = round(st._segment_start * self.frame_seconds, 6)
        if self.cfg.decoding.method == "beam":
            lps = np.concatenate(st._lps) if st._lps else np.zeros((0, len(self.vocab)), np.float32)
            h = self.decoder.decode(lps, frame_offset=st._segment_start)
        else:
            h = st._hyp.hypothesis()
        return _result(h, final, st._segment, start)

    def gpu_memory(self):
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20


class _RuntimeStream:
    """A :class:`slimasr.runtime.Stream` with the chunk count and search time the loop reads."""

    def __init__(self, stream, hop: int) -> None:
        self.inner = stream
        self._hop = hop
        self.search_s = 0.0

    def accept_waveform(self, sample_rate, samples) -> None:
        self.inner.accept_waveform(sample_rate, samples)

    def input_finished(self) -> None:
        self.inner.input_finished()

    def reset(self) -> None:
        self.inner.reset()

    @property
    def result(self):
        return self.inner.result

    @property
    def frames_emitted(self) -> int:
        return self.inner.frames_emitted

    @property
    def chunks(self) -> int:
        return self.inner.frames_emitted // self._hop

    @property
    def is_final(self) -> bool:
        return self.inner.is_final


class _RuntimeBackend(Backend):
    """slimasr's torch-free runtime (onnx, onnx-int8, tensorrt)."""

    @classmethod
    def from_recognizer(cls, rec) -> "_RuntimeBackend":
        """A backend around an existing :class:`~slimasr.runtime.Recognizer` (its own decoding configuration)."""
        self = cls.__new__(cls)
        dec = rec.config.decoding
        self.cfg = BackendConfig(backend="onnx-int8" if rec.config.int8 else "onnx", decoding=dec)
        self.name, self.rec, self.greedy = self.cfg.backend, rec, None
        self.streaming = rec.is_streaming
        self.search = None
        if self.streaming and dec.method == "beam":
            from .runtime.decoders import make_decoder

            self.search = make_decoder(rec.vocab, dec, rec.frame_seconds)
        self.frame_seconds, self.model_file, self.vocab = rec.frame_seconds, Path(rec.model_file), rec.vocab
        self.frontend = rec.frontend
        self.min_frames = min_frames(rec.info.right_context)
        self.chunking = (rec.plan.chunk_size, rec.plan.left_chunks) if self.streaming else None
        return self

    def __init__(self, where: Path, cfg: BackendConfig) -> None:
        from .runtime import Recognizer
        from .runtime.decoders import make_decoder
        from .runtime.recognizer import StreamingConfig

        self.cfg = cfg
        self.name = cfg.backend
        opts = dict(num_threads=cfg.threads, provider="tensorrt" if cfg.backend == "tensorrt" else "cpu",
                    int8=cfg.backend == "onnx-int8", spin_threads=cfg.spin_threads, batch_size=1)
        kind = _export_kind(where)
        sc = StreamingConfig(chunk_size=cfg.chunk_size, left_chunks=cfg.left_chunks, hop=cfg.hop,
                             end_of_stream=cfg.end_of_stream)
        if kind is None:                                   # a bare .onnx file: ask the graph
            kind = "streaming" if Recognizer.from_onnx(where, **opts).is_streaming else "offline"
        self.streaming = kind == "streaming"
        if cfg.streaming and not self.streaming:
            raise ValueError(f"{where} is an offline export; streaming (a chunk size) needs a streaming export")
        self.search = None
        self.greedy = None
        if self.streaming:
            # greedy partials, log-probabilities kept: beam search runs at the end of the stream, timed alone
            self.rec = Recognizer.from_onnx(where, **opts, streaming=sc, keep_log_probs=True)
            if cfg.decoding.method == "beam":
                self.search = make_decoder(self.rec.vocab, cfg.decoding, self.rec.frame_seconds)
        else:
            self.rec = Recognizer.from_onnx(where, **opts, decoding=cfg.decoding)
            # beam search: the same export with greedy decoding times the encoder part (bench)
            if cfg.decoding.method == "beam" and cfg.time_search:
                self.greedy = Recognizer.from_onnx(where, **opts)
        self.frontend = self.rec.frontend
        self.frame_seconds = self.rec.frame_seconds
        self.min_frames = min_frames(self.rec.info.right_context)
        self.chunking = (self.rec.plan.chunk_size, self.rec.plan.left_chunks) if self.streaming else None
        self.model_file = Path(self.rec.model_file)
        self.vocab = self.rec.vocab

    def offline(self, wave):
        from .features import compute_features

        t0 = time.perf_counter()
        res = self.rec.transcribe(wave, sample_rate=SAMPLE_RATE)
        compute = time.perf_counter() - t0
        t0 = time.perf_counter()
        compute_features(wave, self.frontend)
        features = time.perf_counter() - t0
        search = 0.0
        if self.greedy is not None:
            t0 = time.perf_counter()
            self.greedy.transcribe(wave, sample_rate=SAMPLE_RATE)
            search = max(0.0, compute - (time.perf_counter() - t0))
        return res, {"compute": compute, "features": features, "encoder": max(0.0, compute - features - search),
                     "search": search}

    def create_stream(self):
        return _RuntimeStream(self.rec.create_stream(), self.rec.plan.hop)

    def decode(self, st: _RuntimeStream):
        if st.is_final:
            return st.result
        res = self.rec.decode(st.inner)
        if res.is_final and self.search is not None and self.rec.config.decoding.method != "beam":
            t0 = time.perf_counter()
            st.inner.result = res = self.segment_result(st, final=True)
            st.search_s = time.perf_counter() - t0
        return res

    def segment_result(self, st: _RuntimeStream, final: bool = False):
        """The current segment's result: greedy, or beam search over its log-probabilities."""
        res = st.result
        if self.search is None:
            return dataclasses.replace(res, is_final=final)
        lp = st.inner.log_probs.reshape(-1, len(self.vocab))
        h = self.search.decode(lp, frame_offset=st.frames_emitted - lp.shape[0])
        return _result(h, final, res.segment, res.start_time)

    def gpu_memory(self):
        return _gpu_memory_mb(os.getpid()) if self.cfg.backend == "tensorrt" else None


class _SherpaStream:
    def __init__(self, rec, stream, chunk_size: int) -> None:
        from .runtime.stream import RecognitionResult

        self._rec = rec
        self.inner = stream
        self._chunk = chunk_size
        self._finished = False
        self.is_final = False
        self.chunks = 0
        self.search_s = 0.0
        self.result = RecognitionResult()

    @property
    def frames_emitted(self) -> int:
        return self.chunks * self._chunk

    def accept_waveform(self, sample_rate, samples) -> None:
        from .audio import to_float_mono

        self.inner.accept_waveform(int(sample_rate), to_float_mono(samples, "accept_waveform"))

    def input_finished(self) -> None:
        if not self._finished:
            self.inner.accept_waveform(SAMPLE_RATE, np.zeros(int(SHERPA_ONNX_TAIL_SECONDS * SAMPLE_RATE), np.float32))
            self.inner.input_finished()
            self._finished = True

    def reset(self) -> None:
        self._rec.reset(self.inner)


def sherpa_frontend_refusal(frontend: FrontendConfig) -> str | None:
    """Why sherpa-onnx cannot decode a model with this front-end (None: it can). Its WeNet CTC recognizers
    compute Kaldi fbank themselves with fixed settings (slimasr's defaults, :class:`slimasr.features.FbankConfig`)
    and no per-utterance normalisation, so an imported model with other features would get wrong input."""
    from .features import FbankConfig

    if frontend.kind != "kaldi_fbank" or frontend.cmvn != "global":
        return (f"sherpa-onnx computes Kaldi fbank features itself; this model reads {frontend.kind} features "
                f"(cmvn={frontend.cmvn!r}); decode it with the onnx backend")
    want = FbankConfig(num_mel_bins=frontend.fbank.num_mel_bins)
    diff = [f"{k}={v!r}" for k, v in frontend.fbank.to_dict().items() if getattr(want, k) != v]
    if diff:
        return (f"sherpa-onnx computes Kaldi fbank with fixed settings; this model's differ ({', '.join(diff)}); "
                "decode it with the onnx backend")
    return None


class _SherpaBackend(Backend):
    """sherpa-onnx's C++ runtime on the same export (WeNet CTC interface, greedy search)."""

    def __init__(self, where: Path, cfg: BackendConfig) -> None:
        try:
            import sherpa_onnx
        except ImportError:
            raise ValueError("the sherpa-onnx backend needs sherpa-onnx (pip install sherpa-onnx)") from None
        d = where if where.is_dir() else where.parent
        e = json.loads((d / EXPORT_CONFIG_FILE).read_text(encoding="utf-8"))
        missing = [k for k in ("files", "kind", "frontend", "right_context", "chunk_size", "left_chunks") if k not in e]
        if missing:
            raise ValueError(f"{d / EXPORT_CONFIG_FILE} lacks {', '.join(missing)}; re-export the model with this "
                             "slimasr version (slimasr export onnx)")
        files = e["files"]
        name = files["model_int8"] if cfg.backend.endswith("int8") else files["model"]
        if not name:
            raise ValueError(f"{d} has no int8 model (export with int8=True)")
        self.model_file = d / name
        self.cfg = cfg
        self.name = cfg.backend
        self.streaming = e["kind"] == "streaming"
        self.min_frames = min_frames(e["right_context"])
        self.frontend = FrontendConfig.from_dict(e["frontend"], f"{d / EXPORT_CONFIG_FILE}: frontend")
        why = sherpa_frontend_refusal(self.frontend)
        if why:
            raise ValueError(f"{d}: {why}")
        if cfg.streaming and not self.streaming:
            raise ValueError(f"{d} is an offline export; streaming (a chunk size) needs a streaming export")
        tokens = str(d / files["tokens"])
        if self.streaming:
            self.chunk_size = cfg.chunk_size or e["chunk_size"]
            self.chunking = (self.chunk_size, cfg.left_chunks or e["left_chunks"])
            self.rec = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
                tokens=tokens, model=str(self.model_file), chunk_size=self.chunk_size,
                num_left_chunks=self.chunking[1], num_threads=cfg.threads)
        else:
            self.rec = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model=str(self.model_file), tokens=tokens,
                                                                    num_threads=cfg.threads)
            # measured in benchmarks/sherpa_agreement.py (offline_dither_probe): a result seen to differ from the
            # onnx backend's on the same export should not pass for a difference of the graphs
            log.warning("%s: sherpa-onnx's offline recognizer dithers its features although its config says "
                        "dither=0, so its transcripts are a sample: on near-tie frames they can differ from the onnx "
                        "backend's and with the order of the utterances (its streaming recognizer does not)", d)

    def offline(self, wave):
        from .runtime.stream import RecognitionResult

        t0 = time.perf_counter()
        s = self.rec.create_stream()
        s.accept_waveform(SAMPLE_RATE, wave)
        self.rec.decode_stream(s)
        res = RecognitionResult(text=s.result.text, is_final=True)
        return res, {"compute": time.perf_counter() - t0, "features": None, "encoder": None, "search": 0.0}

    def create_stream(self):
        return _SherpaStream(self.rec, self.rec.create_stream(), self.chunk_size)

    def decode(self, st: _SherpaStream):
        from .runtime.stream import RecognitionResult

        if st.is_final:
            return st.result
        n = 0
        while self.rec.is_ready(st.inner):
            self.rec.decode_stream(st.inner)
            n += 1
        st.chunks += n
        if n or st._finished:
            st.is_final = st._finished
            st.result = RecognitionResult(text=self.rec.get_result(st.inner).strip(), is_final=st.is_final)
        return st.result


def recognizer_backend(recognizer) -> Backend:
    """The backend of an existing :class:`slimasr.runtime.Recognizer` (decoding with its own configuration)."""
    return _RuntimeBackend.from_recognizer(recognizer)


def _load_torch_model(model, device: str):
    """(ASRModel, its file) from a model, a .pt path or None (the embedded default). An in-memory model is named
    ``<memory>`` (as in :meth:`ASRModel.from_checkpoint_dict`'s errors), not after a file it may have been loaded
    from: a model derived from a loaded one (``remove_layers`` copies it) is no longer that file's model."""
    from .model import load_model
    from .model.asr import default_model_path

    if hasattr(model, "ctc_log_probs"):
        return model, Path("<memory>")
    return load_model(model, device=device), Path(model) if model is not None else default_model_path()


def open_backend(model, config: BackendConfig = BackendConfig(), export_root: str | os.PathLike | None = None
                 ) -> Backend:
    """A backend ready to decode.

    Args:
        model: an :class:`~slimasr.model.ASRModel`, a slimasr model file (``.pt``), an ONNX export directory (or
            one ``.onnx`` file of it), a TensorRT engine directory (``tensorrt``), or None (the embedded default
            model). Runtime and sherpa-onnx backends export a ``.pt`` model on demand (:func:`cached_export`).
        config: backend, chunking, search and threads.
        export_root: where on-demand exports go (default ``$SLIMASR_CACHE/exports``).
    Raises:
        ValueError / FileNotFoundError: naming the model or setting that does not fit.
    """
    cfg = config
    path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    if path is not None and not path.exists():
        raise FileNotFoundError(f"model {path} does not exist (expected a .pt model or an ONNX export directory)")
    export = path is not None and (_is_export(path) or (path / "model.engine").is_file())
    if path is not None and path.is_dir() and not export:
        from .importers.detect import import_hint

        raise ValueError(f"model {path} is a directory without {EXPORT_CONFIG_FILE}, so not an ONNX export "
                         f"(expected a .pt model or a directory written by `slimasr export onnx`){import_hint(path)}")
    if cfg.backend == "torch":
        if export:
            raise ValueError(f"{path} is an ONNX export; the torch backend needs a slimasr model (.pt). Use "
                             "--backend onnx for exports")
        m, f = _load_torch_model(model, cfg.device)
        return _TorchBackend(m, f, cfg)
    if export:
        where = path
    else:
        if hasattr(model, "ctc_log_probs"):
            raise ValueError(f"backend {cfg.backend} needs a model file or an export (it exports the model once and "
                             "caches the export by the file's hash), got an in-memory model")
        if cfg.streaming and cfg.left_chunks is None:
            raise ValueError(f"backend {cfg.backend} streams with a fixed left context: give left_chunks "
                             "(--left-chunks)")
        where = cached_export(None, model, cfg.streaming, cfg.chunk_size or 16, cfg.left_chunks or 4, export_root)
    if cfg.backend.startswith("sherpa-onnx"):
        return _SherpaBackend(where, cfg)
    return _RuntimeBackend(where, cfg)


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class Decoded:
    """One utterance decoded: its result and what it cost (seconds; streaming: per-chunk times, latencies)."""

    result: object                      # slimasr.runtime.RecognitionResult
    measures: dict

    @property
    def text(self) -> str:
        return self.result.text


@dataclass(frozen=True)
class SkippedItem:
    """An utterance a batch job could not decode, and why (the error's one line)."""

    item: str
    reason: str

    def to_dict(self) -> dict:
        return {"audio_filepath": self.item, "reason": self.reason}

    @classmethod
    def malformed_rows(cls, errors: Iterable) -> list["SkippedItem"]:
        """Manifest rows that ``read_manifest(..., skipped=errors)`` could not read, named ``manifest:line``."""
        return [cls(e.where, str(e).removeprefix(f"{e.where}: ")) for e in errors]


def check_length(backend: Backend, samples: int, name: str | None = None) -> None:
    """Refuse audio of ``samples`` samples (at the front-end's rate) that gives fewer feature frames than the
    ``backend`` needs for one encoder frame (``backend.min_frames``; 65 ms for 4x subsampling of 10 ms frames).

    Raises:
        ValueError: ``"[name: ]audio too short (N ms); at least M ms is needed (...)"``
            (:func:`slimasr.features.check_audio_length`).
    """
    from .features import check_audio_length

    check_audio_length(samples, backend.frontend, backend.min_frames, name)


def decode_utterance(backend: Backend, wave: np.ndarray, feed: int | None = None) -> Decoded:
    """Decode one 16 kHz utterance ``(S,)`` with ``backend``: whole (offline backends) or streamed in pieces of
    ``feed`` samples (default: one piece) in simulated real time (see the module docstring).

    Returns:
        :class:`Decoded`; ``measures`` has ``compute`` and, offline, ``features`` / ``encoder`` / ``search``;
        streaming, ``search``, ``chunk_times``, ``first_partial`` and ``final_latency`` (seconds).
    Raises:
        ValueError: audio the backend cannot decode (e.g. shorter than one encoder frame's 65 ms).
    """
    check_length(backend, wave.size)
    if not backend.streaming:
        res, m = backend.offline(wave)
        return Decoded(res, m)
    feed = max(1, int(feed or wave.size))
    st = backend.create_stream()
    clock = compute = 0.0
    first_partial = None
    chunk_times: list[float] = []
    for start in range(0, wave.size, feed):
        piece = wave[start:start + feed]
        arrival = (start + piece.size) / SAMPLE_RATE
        before = st.chunks
        t0 = time.perf_counter()
        st.accept_waveform(SAMPLE_RATE, piece)
        res = backend.decode(st)
        dt = time.perf_counter() - t0
        compute += dt
        clock = max(clock, arrival) + dt
        chunks = st.chunks - before
        if chunks:
            chunk_times += [dt / chunks] * chunks
        if first_partial is None and res.text:
            first_partial = clock
    duration = wave.size / SAMPLE_RATE
    t0 = time.perf_counter()
    st.input_finished()
    res = backend.decode(st)
    dt = time.perf_counter() - t0
    compute += dt
    final = max(clock, duration) + dt - duration
    return Decoded(res, {"compute": compute, "search": st.search_s, "chunk_times": chunk_times,
                         "first_partial": first_partial, "final_latency": final})


@dataclass
class DecodeReport:
    """What :func:`decode_rows` decoded and what it skipped."""

    utterances: list[dict] = field(default_factory=list)   # row fields + text, reference, audio_s, measures
    skipped: list[SkippedItem] = field(default_factory=list)

    @property
    def audio_s(self) -> float:
        return sum(u["audio_s"] for u in self.utterances)

    @property
    def compute_s(self) -> float:
        return sum(u["compute"] for u in self.utterances)


def read_waves(rows: Iterable[dict]) -> list:
    """Each row's audio (the whole file or its segment: :func:`slimasr.data.manifest.load_utterance`), or a
    :class:`SkippedItem` saying why it could not be read."""
    from .data.manifest import load_utterance, utterance_key

    out: list = []
    for row in rows:
        try:
            out.append(load_utterance(row))
        except ValueError as e:
            out.append(SkippedItem(utterance_key(row), exception_line(e)))
    return out


def decode_rows(backend: Backend, rows: Iterable[dict], feed: int | None = None, warmup: int = 0,
                waves: Sequence | None = None, progress: bool = False) -> DecodeReport:
    """Decode every manifest row (``audio_filepath``, ``text``) with ``backend``; an utterance whose audio cannot be
    read or decoded is skipped, counted and named (``report.skipped``, and a warning), never fatal.

    Args:
        feed: streaming piece size in samples (see :func:`decode_utterance`).
        warmup: decode the first N readable utterances once before measuring (not counted).
        waves: the rows' audio from :func:`read_waves` (default: read here).
    """
    rows = list(rows)
    report = DecodeReport()
    loaded = list(waves) if waves is not None else read_waves(rows)
    if len(loaded) != len(rows):
        raise ValueError(f"got {len(loaded)} waves for {len(rows)} rows")
    report.skipped += [w for w in loaded if isinstance(w, SkippedItem)]
    loaded = [None if isinstance(w, SkippedItem) else w for w in loaded]
    usable = [w for w in loaded if w is not None]
    for w in usable[:warmup]:
        try:
            decode_utterance(backend, w, feed)
        except ValueError:
            pass                                             # reported when it is decoded for real
    from tqdm import tqdm

    for row, wave in tqdm(list(zip(rows, loaded)), desc="decoding", unit="utt", disable=not progress, leave=False):
        if wave is None:
            continue
        try:
            d = decode_utterance(backend, wave, feed)
        except ValueError as e:
            report.skipped.append(SkippedItem(str(row["audio_filepath"]), exception_line(e)))
            continue
        report.utterances.append({**{k: row[k] for k in ROW_KEYS if k in row},
                                  "text": d.text, "reference": row.get("text", ""),
                                  "audio_s": wave.size / SAMPLE_RATE, **d.measures})
    for s in report.skipped:
        log.info("skipped %s: %s", s.item, s.reason)
    return report


def decode_manifest(model, manifest: str | os.PathLike, config: BackendConfig = BackendConfig(),
                    out: str | os.PathLike | None = None, export_root: str | os.PathLike | None = None,
                    progress: bool = False, *, chunk_size: int | None = None, left_chunks: int | None = None,
                    device: str | None = None) -> dict:
    """Decode every utterance of ``manifest`` and score it (:func:`slimasr.scoring.error_rates`).

    Args:
        model: see :func:`open_backend` (an ASRModel, a ``.pt`` file, an export, or None = the default model).
        config: backend, chunking, search; ``chunk_size`` / ``left_chunks`` / ``device`` override its fields.
        out: write one JSON line per decoded utterance (``audio_filepath``, ``text``, ``reference``, ...).
    Returns:
        dict(wer, cer, utterances, skipped (count), skipped_items [{audio_filepath, reason}] (a malformed manifest
        row is skipped too, its ``audio_filepath`` being ``manifest:line``), rtf, audio_s, compute_s, backend,
        mode (:attr:`Backend.mode`), hyps [...]) plus the counts of :func:`slimasr.scoring.error_rates`; each hyp
        holds the raw ``reference`` and hypothesis ``text``.
    Raises:
        ValueError: the manifest has no utterances, or none that could be decoded (the message says how many were
            skipped and why).
    """
    from .bench.runner import load_rows

    over = {k: v for k, v in (("chunk_size", chunk_size), ("left_chunks", left_chunks), ("device", device))
            if v is not None}
    cfg = dataclasses.replace(config, **over) if over else config
    bad: list = []                               # malformed rows: skipped and named, as unreadable audio is
    rows = load_rows(manifest, skipped=bad)      # before the backend: an empty manifest exports nothing
    backend = open_backend(model, cfg, export_root)
    report = decode_rows(backend, rows, progress=progress)
    report.skipped[:0] = SkippedItem.malformed_rows(bad)
    if not report.utterances:
        why = "; ".join(f"{s.item}: {s.reason}" for s in report.skipped[:3])
        raise ValueError(f"no utterance of {manifest} could be decoded ({len(report.skipped)} skipped: {why})")
    from .scoring import error_rates

    hyps = [{k: u[k] for k in (*ROW_KEYS, "text", "reference") if k in u}
            for u in report.utterances]
    rates = error_rates([h["reference"] for h in hyps], [h["text"] for h in hyps])
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            for h in hyps:
                f.write(json.dumps(h) + "\n")
    audio_s, compute_s = report.audio_s, report.compute_s
    return {**rates, "utterances": len(hyps), "skipped": len(report.skipped),
            "skipped_items": [s.to_dict() for s in report.skipped], "rtf": compute_s / max(audio_s, 1e-9),
            "audio_s": audio_s, "compute_s": compute_s, "backend": backend.name, "mode": backend.mode, "hyps": hyps}


# ---------------------------------------------------------------------------------------------- long recordings
@dataclass(frozen=True)
class Transcript:
    """A recording decoded in segments (split at endpoints); times in seconds from its start."""

    source: str                          # file name, "-" (stdin) or "array"
    duration: float                      # seconds of audio read
    segments: tuple = ()                 # RecognitionResult per non-empty segment (text, tokens, timestamps, words)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    @property
    def words(self) -> tuple[tuple[str, float, float], ...]:
        return tuple(w for s in self.segments for w in s.words)

    def to_dict(self) -> dict:
        """JSON-ready: file, duration, text and segments (start, end, text, words with start / end), seconds
        rounded to the millisecond."""
        def ms(x: float) -> float:
            return round(float(x), 3)

        return {"file": self.source, "duration": ms(self.duration), "text": self.text, "segments": [
            {"start": ms(s.words[0][1] if s.words else s.start_time),
             "end": ms(s.words[-1][2] if s.words else s.start_time), "text": s.text,
             "words": [{"word": w, "start": ms(a), "end": ms(b)} for w, a, b in s.words]}
            for s in self.segments]}


def audio_blocks(source, sample_rate: int | None = None, block_seconds: float = 1.0):
    """Read audio piece by piece: ``(sample_rate, total seconds or None, iterator of (S,) / (S, C) blocks)``.

    Args:
        source: a file any soundfile format reads (any sample rate, any channel count), ``"-"`` for a WAV
            (or other soundfile format) on standard input (read into memory first: pipes cannot seek), or an
            ``(S,)`` / ``(S, C)`` array (then ``sample_rate`` is required).
    Raises:
        ValueError: naming the input: missing, unreadable, empty, or an array without a sample rate.
    """
    from .audio import open_audio

    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ValueError("sample_rate is required when passing an array")
        step = max(1, int(block_seconds * sample_rate))
        return sample_rate, source.shape[0] / sample_rate, (source[i:i + step] for i in range(0, source.shape[0], step))
    if str(source) == "-":
        import io
        import sys

        f = open_audio(io.BytesIO(sys.stdin.buffer.read()), "standard input")
    else:
        f = open_audio(str(source))
    step = max(1, int(block_seconds * f.samplerate))

    def blocks():
        with f:
            yield from f.blocks(blocksize=step, dtype="float32", always_2d=False)

    return f.samplerate, f.frames / f.samplerate, blocks()


def transcribe_audio(backend: Backend, source, sample_rate: int | None = None, endpoint=None,
                     progress: bool = False, block_seconds: float = 1.0) -> Transcript:
    """Decode a recording of any length in bounded memory: read in blocks, streamed through ``backend`` and
    split into segments at endpoints (the rules ``slimasr serve`` applies, :mod:`slimasr.serve.endpoint`).

    Memory stays bounded: the stream keeps a fixed left context, each segment's log-probabilities (beam search)
    last until its endpoint (rule 3 ends a segment after 20 s), and audio is read ``block_seconds`` at a time
    (standard input excepted, see :func:`audio_blocks`).

    An offline backend (a model that cannot stream, or an offline export) decodes the whole recording as one
    utterance instead: memory grows with its length, and it is one segment (no endpoints).

    Args:
        backend: a streaming backend (:func:`open_backend` with a chunk size, or a streaming export), or an
            offline one.
        source: see :func:`audio_blocks`.
        endpoint: an :class:`~slimasr.serve.endpoint.EndpointConfig` (default: sherpa-onnx's rules).
        progress: a tqdm bar on stderr (seconds of audio).
    Raises:
        ValueError: an unreadable input, or one too short to decode (:func:`check_length`).
    """
    from tqdm import tqdm

    from .serve.endpoint import EndpointConfig, Endpointer

    sr, total, blocks = audio_blocks(source, sample_rate, block_seconds)
    name = "array" if isinstance(source, np.ndarray) else "standard input" if str(source) == "-" else str(source)
    if not backend.streaming:
        from .audio import resample, to_float_mono

        parts = [to_float_mono(b, name) for b in blocks]
        wave = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if wave.size == 0:
            raise ValueError(f"{name}: audio is empty (0 samples)")
        wave = resample(wave, sr, backend.frontend.sample_rate)
        check_length(backend, wave.size, name)
        res, _ = backend.offline(wave)
        return Transcript(name, wave.size / backend.frontend.sample_rate, (res,) if res.text else ())
    st = backend.create_stream()
    ep = Endpointer(endpoint or EndpointConfig(), backend.frame_seconds)
    segments = []
    samples = 0
    with tqdm(total=round(total, 1), unit="s", desc=Path(name).name, disable=not progress, leave=False) as bar:
        for block in blocks:
            st.accept_waveform(sr, block)
            samples += block.shape[0]
            backend.decode(st)
            if ep.check(st) is not None:
                seg = backend.segment_result(st, final=True)
                if seg.text:
                    segments.append(seg)
                ep.reset(st)
            bar.update(round(block.shape[0] / sr, 1))
    if samples == 0:
        raise ValueError(f"{name}: audio is empty (0 samples)")
    check_length(backend, round(samples * backend.frontend.sample_rate / sr), name)
    st.input_finished()
    res = backend.decode(st)
    if res.text:
        segments.append(res)
    return Transcript(name, samples / sr, tuple(segments))
