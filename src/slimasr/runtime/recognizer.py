"""The recognizer: onnxruntime sessions of an export, streaming chunk by chunk or whole utterances in batches.

Torch-free (numpy, onnxruntime, kaldi-native-fbank, sentencepiece; pyctcdecode/kenlm for beam search).

Streaming follows sherpa-onnx's WeNet CTC loop exactly, so that with the default configuration the tokens are the
ones ``sherpa_onnx.OnlineRecognizer.from_wenet_ctc`` produces for the same export:

* a chunk of C encoder frames reads a window of (C - 1) * 4 + 7 feature frames; chunks start 4 * C feature
  frames apart; a chunk runs once ``start + window < frames ready`` (strictly);
* ``offset`` starts at C * L and grows by C per chunk; ``attn_cache`` starts as zeros, and while fewer than L
  chunks have run the first C * L - idx * C entries of ``attn_mask`` are False; ``required_cache_size`` = C * L;
* greedy CTC carries the last frame's argmax across chunks.

**End of stream.** ``Stream.input_finished()`` appends 0.66 s of zero samples to the *waveform* before the last
features are computed, as sherpa-onnx's examples do. Zero *feature* frames would not be silence (the graph
applies CMVN), and the fixed chunk window cannot take a shorter last chunk, so padding the audio is what lets the
last partial chunk be decoded. The final result therefore equals sherpa-onnx's; it differs from
``ASRModel.stream_log_probs`` (which runs a shorter last chunk on the real frames only) in the frames of that
last chunk. When the hop exceeds 16 frames, the padding grows to one hop (4 * hop feature frames) so that every
real frame is still covered.

**Chunk, hop and left context** (:class:`StreamingConfig`). WeNet-style streaming is hop = chunk: each chunk
emits all its C frames. The paper (Bekal et al., 2023, Section 4) runs inference "using a chunk size of 64,
with a hop size of 32 frames and 128 frames of left context". We read these as 10 ms *feature* frames, the only
frames the paper defines (80-dimensional filterbanks): chunk 640 ms = 16 encoder frames, hop 320 ms = 8 encoder
frames, left context 1.28 s = 32 encoder frames = 2 chunks (``StreamingConfig.paper()``). The alternative
reading, encoder frames (40 ms each), would mean 2.56 s chunks emitted every 1.28 s, which is not a latency an
online model is run at, and chunks larger than dynamic chunk training draws (``max_chunk_size`` 25); it is
available as ``StreamingConfig.from_frames(64, 32, 128, unit="encoder")``.

A hop smaller than the chunk means *overlapping* chunks: chunk i covers encoder frames [i * hop, i * hop + C)
and emits only its first hop of outputs, frames [i * hop, (i + 1) * hop) — the frames no earlier chunk emitted.
Every emitted frame thus sees at least C - hop frames of future context (32 feature frames in the paper's
setting) plus the left context, and results update every hop. It is implemented with C / hop interleaved
WeNet-style caches ("lanes"): lane j runs the chunks that start at j * hop + k * C, each chunk attending to
that lane's previous L chunks, which is exactly the chunk mask the model was trained with (a lane's first
chunk has no left context, like the first chunk of any stream). It costs C / hop times the compute of
hop = chunk. At the end of the stream the last chunk also emits the rest of its frames.

**Providers.** ``provider="cuda"`` / ``"tensorrt"`` use onnxruntime's CUDA / TensorRT execution providers; a
TensorRT engine directory (``model.engine`` from :mod:`slimasr.export.tensorrt`) is loaded through the same
:meth:`Recognizer.from_onnx`, the engine wrapped in onnxruntime's ``EPContext`` node. When a provider cannot
start (no GPU, missing CUDA/TensorRT libraries), a warning says so and the next one runs (an engine falls back
to the ONNX model it was built from).
"""
from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..features import FbankConfig, fbank_numpy, load_audio_numpy
from .decoders import DecodingConfig, GreedyDecoder, Hypothesis, Vocabulary, make_decoder
from .stream import RecognitionResult, Stream, StreamPlan, as_float_mono

__all__ = ["Recognizer", "RecognizerConfig", "StreamingConfig"]

log = logging.getLogger(__name__)

EXPORT_CONFIG_FILE = "slimasr_export.json"
TRT_ENGINE_FILE = "model.engine"           # written by slimasr.export.tensorrt.build_engines
TRT_CONFIG_FILE = "slimasr_tensorrt.json"
MIN_FRAMES = 7                 # feature frames the front-end needs for one encoder frame
SHERPA_TAIL_SECONDS = 0.66     # zero padding sherpa-onnx's examples append at the end of a stream
PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


@dataclass(frozen=True)
class StreamingConfig:
    """Chunking of streaming recognition, in encoder frames (40 ms). None = the export's value.

    See the module docstring for hop < chunk (overlapping chunks) and the paper's configuration.
    """

    chunk_size: int | None = None     # C: encoder frames per chunk
    left_chunks: int | None = None    # L: chunks of attention history (>= 1)
    hop: int | None = None            # encoder frames between chunk starts; None = chunk_size (WeNet style)
    tail_padding: float = SHERPA_TAIL_SECONDS  # seconds of zeros appended at input_finished (at least one hop)

    def __post_init__(self) -> None:
        for name in ("chunk_size", "left_chunks", "hop"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if self.chunk_size is not None and self.hop is not None and self.chunk_size % self.hop:
            raise ValueError(f"hop ({self.hop}) must divide chunk_size ({self.chunk_size})")
        if self.tail_padding < 0:
            raise ValueError(f"tail_padding must be >= 0 seconds, got {self.tail_padding}")

    @classmethod
    def from_frames(cls, chunk: int, hop: int, left: int, unit: str = "feature") -> "StreamingConfig":
        """Chunk, hop and left context given in ``feature`` frames (10 ms; multiples of 4) or ``encoder``
        frames (40 ms); left context must be a whole number of chunks."""
        if unit not in ("feature", "encoder"):
            raise ValueError(f"unit must be 'feature' or 'encoder', got {unit!r}")
        if unit == "feature":
            if chunk % 4 or hop % 4 or left % 4:
                raise ValueError(f"feature-frame chunk/hop/left must be multiples of the subsampling factor 4, "
                                 f"got {chunk}/{hop}/{left}")
            chunk, hop, left = chunk // 4, hop // 4, left // 4
        if left % chunk:
            raise ValueError(f"left context ({left} frames) must be a whole number of chunks ({chunk} frames)")
        return cls(chunk_size=chunk, hop=hop, left_chunks=left // chunk)

    @classmethod
    def paper(cls) -> "StreamingConfig":
        """Chunk 64, hop 32, 128 frames of left context, read as 10 ms feature frames (module docstring)."""
        return cls.from_frames(64, 32, 128, unit="feature")


@dataclass(frozen=True)
class RecognizerConfig:
    """Everything a :class:`Recognizer` is built with, besides the export itself."""

    num_threads: int = 1              # onnxruntime intra-op threads per session
    provider: str = "cpu"             # "cpu" | "cuda" | "tensorrt" (falls back, with a warning, when unavailable)
    int8: bool = False                # load model.int8.onnx instead of model.onnx
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    batch_size: int = 8               # transcribe(): utterances per offline-graph call
    keep_log_probs: bool = False      # streams keep their log-probabilities (always on for beam search)
    trt_fp16: bool = False            # TensorRT: allow fp16 kernels
    trt_cache_dir: str | None = None  # TensorRT engine cache (default: <export>/trt_cache, else the user cache)
    spin_threads: bool = False        # onnxruntime worker threads busy-wait between ops: lower latency on idle,
                                      # dedicated cores; much slower on shared or oversubscribed cores (servers)

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# ---------------------------------------------------------------------------------------------- export reading
@dataclass(frozen=True)
class _ExportInfo:
    kind: str                 # "offline" | "streaming"
    vocab_size: int
    layers: int
    heads: int
    head_dim: int
    d_model: int
    conv_cache_frames: int
    subsampling: int
    right_context: int
    chunk_size: int | None
    left_chunks: int | None
    fbank: FbankConfig
    original_layers: tuple[int, ...] | None

    @classmethod
    def from_metadata(cls, meta: dict[str, str], input_names: Sequence[str], source: str) -> "_ExportInfo":
        """slimasr's metadata keys, falling back to the WeNet/sherpa-onnx ones."""
        def get(*keys, default=None):
            for k in keys:
                v = meta.get(k, "")
                if v != "":
                    return v
            if default is not None:
                return default
            raise ValueError(f"{source} lacks the ONNX metadata key {keys[0]!r}; is it a slimasr export?")

        kind = "streaming" if "attn_cache" in input_names or len(input_names) == 6 else "offline"
        heads = int(get("head", default=0)) or 1
        d_model = int(get("slimasr_d_model", "output_size", default=0))
        # sherpa-onnx's cnn_module_kernel is the convolution cache length + 1 (see slimasr.export.onnx)
        conv_cache = int(get("slimasr_conv_cache_frames", default="")
                         or int(get("cnn_module_kernel", default=1)) - 1)
        chunk = get("chunk_size", default="")
        left = get("left_chunks", default="")
        fb = get("slimasr_fbank", default="")
        orig = json.loads(get("slimasr_original_layers", default="null"))
        return cls(
            kind=kind,
            vocab_size=int(get("vocab_size")),
            layers=int(get("slimasr_num_layers", "num_blocks", default=0)),
            heads=heads,
            head_dim=int(get("slimasr_head_dim", default=d_model // heads if d_model else 0)),
            d_model=d_model,
            conv_cache_frames=conv_cache,
            subsampling=int(get("subsampling_factor", default=4)),
            right_context=int(get("right_context", default=6)),
            chunk_size=int(chunk) if chunk else None,
            left_chunks=int(left) if left else None,
            fbank=FbankConfig.from_dict(json.loads(fb)) if fb else FbankConfig(),
            original_layers=tuple(orig) if orig is not None else None,
        )


def _resolve_model_file(path: Path, int8: bool) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise ValueError(f"{path} does not exist (expected an export directory or a .onnx file)")
    names = {"model": "model.onnx", "model_int8": "model.int8.onnx"}
    cfg_file = path / EXPORT_CONFIG_FILE
    if cfg_file.is_file():
        files = json.loads(cfg_file.read_text(encoding="utf-8")).get("files") or {}
        names = {k: files.get(k) or v for k, v in names.items()}
    f = path / names["model_int8" if int8 else "model"]
    if not f.is_file() and not int8 and (path / TRT_ENGINE_FILE).is_file():
        return path / TRT_ENGINE_FILE          # a TensorRT engine directory (slimasr.export.tensorrt)
    if not f.is_file():
        hint = " (export with int8=True / --int8)" if int8 else ""
        raise ValueError(f"{path} has no {f.name}{hint}")
    return f


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


def _trt_cache_dir(model_file: Path, configured: str | None) -> Path:
    if configured:
        d = Path(configured)
    else:
        d = model_file.parent / "trt_cache"
        if not os.access(model_file.parent, os.W_OK):
            import hashlib

            key = hashlib.sha1(str(model_file.resolve()).encode()).hexdigest()[:16]
            d = Path(os.environ.get("SLIMASR_CACHE", Path.home() / ".cache" / "slimasr")) / "trt" / key
    d.mkdir(parents=True, exist_ok=True)
    return d


def _session_options(cfg: RecognizerConfig):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg.num_threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not cfg.spin_threads:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def _metadata_from_export(e: dict) -> dict[str, str]:
    """The ONNX metadata keys the runtime reads, rebuilt from ``slimasr_export.json``."""
    meta = {"model_type": "wenet_ctc", "slimasr_kind": e["kind"], "vocab_size": e["vocab_size"],
            "slimasr_num_layers": e["num_layers"], "head": e["num_heads"], "slimasr_head_dim": e["head_dim"],
            "slimasr_d_model": e["d_model"], "slimasr_conv_cache_frames": e["conv_cache_frames"],
            "subsampling_factor": e["subsampling_factor"], "right_context": e["right_context"],
            "chunk_size": e.get("chunk_size") or "", "left_chunks": e.get("left_chunks") or "",
            "slimasr_fbank": json.dumps(e["fbank"]), "slimasr_original_layers": json.dumps(e.get("original_layers"))}
    return {k: str(v) for k, v in meta.items()}


def _engine_wrapper(engine: Path, export: dict) -> bytes:
    """An ONNX model whose only node is onnxruntime's ``com.microsoft::EPContext`` holding the TensorRT engine
    (embed_mode 1), with the export's inputs and outputs: how onnxruntime's TensorRT provider runs a prebuilt
    engine. The runtime's metadata keys are attached (see :func:`_metadata_from_export`)."""
    from onnx import helper

    def value_info(spec: dict):
        dtype = helper.np_dtype_to_tensor_dtype(np.dtype(spec["dtype"]))
        return helper.make_tensor_value_info(spec["name"], dtype, [d if isinstance(d, int) else str(d)
                                                                    for d in spec["shape"]])

    inputs, outputs = [value_info(i) for i in export["inputs"]], [value_info(o) for o in export["outputs"]]
    node = helper.make_node("EPContext", [i.name for i in inputs], [o.name for o in outputs], name="tensorrt_engine",
                            domain="com.microsoft", embed_mode=1, ep_cache_context=engine.read_bytes(),
                            source="TensorrtExecutionProvider",
                            onnx_model_filename=(export.get("files") or {}).get("model") or "model.onnx")
    opsets = [helper.make_opsetid("", int(export.get("opset", 17))), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(helper.make_graph([node], "slimasr_tensorrt", inputs, outputs), opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True))
    for k, v in _metadata_from_export(export).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model.SerializeToString()


def _engine_session(engine: Path, cfg: RecognizerConfig, trt_profile: str | None):
    """A TensorRT engine directory: the engine through onnxruntime's TensorRT provider, else (with a warning
    naming the reason) the ONNX model it was built from on the requested provider.

    Returns (session, the file it runs).
    """
    import onnxruntime as ort

    d = engine.parent
    if not (d / EXPORT_CONFIG_FILE).is_file():
        raise ValueError(f"{d} has {engine.name} but no {EXPORT_CONFIG_FILE}; expected a directory written by "
                         "slimasr's TensorRT export")
    export = json.loads((d / EXPORT_CONFIG_FILE).read_text(encoding="utf-8"))
    desc = json.loads((d / TRT_CONFIG_FILE).read_text(encoding="utf-8")) if (d / TRT_CONFIG_FILE).is_file() else {}
    if cfg.provider != "tensorrt":
        reason = f"provider={cfg.provider!r} was requested"
    elif "TensorrtExecutionProvider" not in ort.get_available_providers():
        reason = "this onnxruntime build has no TensorrtExecutionProvider"
    else:
        try:
            sess = ort.InferenceSession(_engine_wrapper(engine, export), _session_options(cfg),
                                        providers=[("TensorrtExecutionProvider", {"trt_fp16_enable": cfg.trt_fp16})])
            if sess.get_providers()[0] == "TensorrtExecutionProvider":
                return sess, engine
            reason = "onnxruntime could not start its TensorRT provider"
        except Exception as e:  # onnxruntime's own exception types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "not compatible with any execution provider" in msg:   # the provider itself did not start
                reason = ("onnxruntime could not start its TensorRT provider (no GPU, or the CUDA/TensorRT "
                          "libraries are missing)")
            else:
                reason = f"onnxruntime's TensorRT provider could not load it ({msg})"
    source = Path(desc["source"]) if desc.get("source") else None
    if source is None or not source.is_file():
        raise ValueError(f"{engine} is a TensorRT engine, which runs only with provider='tensorrt' on the GPU type "
                         f"that built it; {reason}, and the ONNX model it was built from ({source}) is not "
                         "available: load the ONNX export directory instead")
    log.warning("%s is a TensorRT engine, which runs only with provider='tensorrt' (onnxruntime's "
                "TensorrtExecutionProvider on a GPU); %s. Running the ONNX model it was built from instead: %s",
                engine, reason, source)
    return _create_session(source, cfg, trt_profile), source


def _create_session(model_file: Path, cfg: RecognizerConfig, trt_profile: str | None):
    """An onnxruntime session on the requested provider, or on the next one available (with a warning)."""
    import onnxruntime as ort

    so = _session_options(cfg)
    wanted = PROVIDERS[cfg.provider]
    if cfg.provider != "cpu" and hasattr(ort, "preload_dlls"):
        try:  # CUDA / cuDNN from the nvidia-* wheels, when they are installed
            ort.preload_dlls()
        except Exception as e:  # pragma: no cover - depends on the machine
            log.debug("onnxruntime.preload_dlls failed: %s", e)
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    if chosen[0] != wanted[0]:
        log.warning("provider %r needs onnxruntime's %s, which this onnxruntime build lacks (it has: %s); "
                    "falling back to %s", cfg.provider, wanted[0], ", ".join(sorted(available)), chosen[0])
    providers = []
    for p in chosen:
        opts: dict = {}
        if p == "TensorrtExecutionProvider":
            opts = {"trt_engine_cache_enable": True, "trt_timing_cache_enable": True,
                    "trt_engine_cache_path": str(_trt_cache_dir(model_file, cfg.trt_cache_dir)),
                    "trt_fp16_enable": bool(cfg.trt_fp16)}
            if trt_profile:
                opts.update(trt_profile_min_shapes=trt_profile, trt_profile_opt_shapes=trt_profile,
                            trt_profile_max_shapes=trt_profile)
        providers.append((p, opts))
    try:
        sess = ort.InferenceSession(str(model_file), so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        if "CPUExecutionProvider" in chosen[:1]:
            raise ValueError(f"{model_file} is not a loadable ONNX model: {e}") from None
        log.warning("could not create a %s session for %s (%s); falling back to CPU", chosen[0], model_file, e)
        sess = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
    active = sess.get_providers()
    if active[0] != wanted[0] and chosen[0] == wanted[0]:
        log.warning("provider %r was requested but %s could not be initialised (no GPU, or its CUDA/TensorRT "
                    "libraries are missing); running on %s", cfg.provider, wanted[0], active[0])
    return sess


def _to_result(h: Hypothesis, is_final: bool, segment: int = 0, start_time: float = 0.0) -> RecognitionResult:
    return RecognitionResult(text=h.text, tokens=h.tokens, timestamps=h.timestamps, words=h.words,
                             is_final=is_final, segment=segment, start_time=start_time)


# ---------------------------------------------------------------------------------------------- recognizer
class Recognizer:
    """Holds the onnxruntime session and the decoder of one export; streams hold per-utterance state.

    Build it with :meth:`from_onnx`. A streaming export serves :meth:`create_stream` / :meth:`decode` /
    :meth:`decode_streams` and also :meth:`transcribe` (each file streamed); an offline export serves
    :meth:`transcribe` (batched whole utterances).

    Example::

        rec = Recognizer.from_onnx("exp/onnx-streaming", num_threads=2)
        s = rec.create_stream()
        s.accept_waveform(16000, samples)
        rec.decode(s)                 # partial result in s.result
        s.input_finished()
        print(rec.decode(s).text)     # final
        print(Recognizer.from_onnx("exp/onnx-offline").transcribe(["a.wav", "b.flac"]))
    """

    def __init__(self, model_file: str | os.PathLike, config: RecognizerConfig = RecognizerConfig()) -> None:
        model_file = Path(model_file)
        export_dir = model_file.parent
        self.config = config
        profile = self._trt_profile(export_dir, config) if config.provider == "tensorrt" else None
        if model_file.suffix == ".engine":
            self._session, model_file = _engine_session(model_file, config, profile)
        else:
            self._session = _create_session(model_file, config, profile)
        self.model_file = model_file           # the file the session runs
        self.provider = self._session.get_providers()[0]
        meta = dict(self._session.get_modelmeta().custom_metadata_map)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.info = _ExportInfo.from_metadata(meta, self._inputs, str(model_file))
        self.vocab = _load_vocabulary(export_dir, meta, self.info.vocab_size)
        self.fbank = self.info.fbank
        self.frame_seconds = self.info.subsampling * self.fbank.frame_shift_ms / 1000.0
        self._greedy = GreedyDecoder(self.vocab, self.frame_seconds)
        self._decoder = make_decoder(self.vocab, config.decoding, self.frame_seconds)
        self._keep = config.keep_log_probs or config.decoding.method == "beam"
        self.plan = self._make_plan() if self.is_streaming else None

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, num_threads: int = 1, provider: str = "cpu", *,
                  int8: bool = False, streaming: StreamingConfig | None = None,
                  decoding: DecodingConfig | None = None, config: RecognizerConfig | None = None,
                  **overrides) -> "Recognizer":
        """Load an export directory (``model.onnx``, ``tokens.txt``, ``tokenizer.model``, ``slimasr_export.json``)
        or one ``.onnx`` file of it, or a TensorRT engine directory (``model.engine``, from
        ``slimasr.export.tensorrt.build_engines``).

        A TensorRT engine runs through onnxruntime's TensorrtExecutionProvider (``provider="tensorrt"``), wrapped
        in an ``EPContext`` node; where that is not possible (no GPU, no TensorRT, another provider requested)
        a warning says why and the ONNX model the engine was built from runs instead.

        Args:
            num_threads: onnxruntime intra-op threads.
            provider: ``cpu``, ``cuda`` or ``tensorrt`` (onnxruntime's CUDA / TensorRT execution providers; when
                unavailable, a warning names the reason and the next provider is used).
            int8: load ``model.int8.onnx``.
            streaming / decoding: see :class:`StreamingConfig`, :class:`DecodingConfig`.
            config: a complete :class:`RecognizerConfig`; the positional arguments are then ignored and
                keyword ``overrides`` (any RecognizerConfig field) replace its fields.
        Raises:
            ValueError: a missing or unloadable export, or bad settings.
        """
        import dataclasses

        if config is None:
            config = RecognizerConfig(num_threads=num_threads, provider=provider, int8=int8,
                                      streaming=streaming or StreamingConfig(),
                                      decoding=decoding or DecodingConfig(), **overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        return cls(_resolve_model_file(Path(path), config.int8), config)

    @staticmethod
    def _trt_profile(export_dir: Path, config: RecognizerConfig) -> str | None:
        """TensorRT optimisation profile of a streaming graph's fixed chunk shapes (from slimasr_export.json)."""
        f = export_dir / EXPORT_CONFIG_FILE
        if not f.is_file():
            return None
        e = json.loads(f.read_text(encoding="utf-8"))
        if e.get("kind") != "streaming":
            return None
        sc = config.streaming
        c = sc.chunk_size or e["chunk_size"]
        cache = c * (sc.left_chunks or e["left_chunks"])
        window = (c - 1) * e["subsampling_factor"] + e["right_context"] + 1
        return (f"x:1x{window}x{e['num_mel_bins']},attn_cache:{e['num_layers']}x{e['num_heads']}x{cache}x"
                f"{2 * e['head_dim']},attn_mask:1x1x{cache + c}")

    # ------------------------------------------------------------------ properties
    @property
    def is_streaming(self) -> bool:
        return self.info.kind == "streaming"

    @property
    def supports_batch(self) -> bool:
        """Whether several streams can share one streaming-graph call. The WeNet/sherpa-onnx interface has no
        batch axis in its caches, so ``decode_streams`` decodes the streams one after another."""
        return False

    def _make_plan(self) -> StreamPlan:
        sc, info = self.config.streaming, self.info
        chunk = sc.chunk_size or info.chunk_size
        left = sc.left_chunks or info.left_chunks
        if chunk is None or left is None:
            raise ValueError(f"{self.model_file} does not record its chunking; pass StreamingConfig(chunk_size=..., "
                             "left_chunks=...)")
        if self.model_file.suffix == ".engine" and (chunk, left) != (info.chunk_size, info.left_chunks):
            raise ValueError(f"the TensorRT engine {self.model_file} was built for chunk_size={info.chunk_size}, "
                             f"left_chunks={info.left_chunks}; got {chunk}, {left}")
        hop = sc.hop or chunk
        if chunk % hop:
            raise ValueError(f"hop ({hop}) must divide the chunk size ({chunk})")
        sub = info.subsampling
        pad = int(round(sc.tail_padding * self.fbank.sample_rate))
        if pad and pad < (sub * hop + 1) * self.fbank.frame_shift:  # the last chunk must reach every real frame
            pad = (sub * hop + 1) * self.fbank.frame_shift
        return StreamPlan(chunk_size=chunk, left_chunks=left, hop=hop, window=(chunk - 1) * sub + info.right_context
                          + 1, subsampling=sub, tail_padding=pad, layers=info.layers, heads=info.heads,
                          head_dim=info.head_dim, d_model=info.d_model, conv_cache_frames=info.conv_cache_frames,
                          frame_seconds=self.frame_seconds)

    def _run(self, feeds: dict) -> list[np.ndarray]:
        return self._session.run(None, feeds)   # onnxruntime sessions may be run from several threads

    # ------------------------------------------------------------------ streaming
    def create_stream(self) -> Stream:
        """A new stream for one utterance (or, with :meth:`Stream.reset`, a sequence of segments)."""
        if not self.is_streaming:
            raise ValueError(f"{self.model_file} is an offline export; streaming needs a streaming export "
                             "(export_onnx(..., streaming=True)). Use transcribe() for whole files")
        return Stream(self.plan, self.fbank, self._keep)

    def is_ready(self, stream: Stream) -> bool:
        """Whether a chunk of ``stream`` can be decoded now."""
        with stream.lock:
            return stream._chunk_ready()

    def _decode_chunk(self, stream: Stream) -> None:
        p = self.plan
        lane, feats = stream._chunk_input()
        cache = p.cache_frames
        mask = np.ones((1, 1, cache + p.chunk_size), dtype=bool)
        mask[..., : cache - min(lane.chunks * p.chunk_size, cache)] = False
        values = (feats[None], np.array([lane.offset], np.int64), np.array([cache], np.int64), lane.attn_cache,
                  lane.conv_cache, mask)
        log_probs, lane.attn_cache, lane.conv_cache = self._run(dict(zip(self._inputs, values)))[:3]
        lane.offset += log_probs.shape[1]
        lane.chunks += 1
        stream._emit(stream._chunk_done(log_probs[0]))

    def decode(self, stream: Stream) -> RecognitionResult:
        """Decode every chunk of ``stream`` that is ready; after ``input_finished`` this completes the stream.

        Returns ``stream.result``: a partial (greedy) result while audio may still come, the final one (beam
        search if configured) once the input is finished and decoded.
        """
        with stream.lock:
            if stream.is_final:
                return stream.result
            ran = False
            while stream._chunk_ready():
                self._decode_chunk(stream)
                ran = True
            if stream.is_input_finished:
                self._finalize(stream)
            elif ran:
                h = self._greedy.hypothesis(stream._tokens, stream._frames)
                stream.result = _to_result(h, False, stream._segment, stream._time(stream._segment_start))
            return stream.result

    def decode_streams(self, streams: Iterable[Stream]) -> list[RecognitionResult]:
        """:meth:`decode` for several streams (one after another: see :attr:`supports_batch`)."""
        return [self.decode(s) for s in streams]

    def _finalize(self, stream: Stream) -> None:
        tail = stream._tail()
        if tail is not None:
            stream._emit(tail)
        if self.config.decoding.method == "beam":
            h = self._decoder.decode(stream.log_probs.reshape(-1, self.info.vocab_size),
                                     frame_offset=stream._segment_start)
        else:
            h = self._greedy.hypothesis(stream._tokens, stream._frames)
        stream._finalized = True
        stream.result = _to_result(h, True, stream._segment, stream._time(stream._segment_start))

    # ------------------------------------------------------------------ offline
    def transcribe(self, audio, sample_rate: int = 16000):
        """Recognise whole utterances.

        Args:
            audio: a file path, a ``(S,)`` / ``(S, channels)`` array, or a list of them (any sample rate,
                any channel count; converted to 16 kHz mono).
            sample_rate: the sample rate of arrays (files carry their own).
        Returns:
            a :class:`RecognitionResult` for one input, a list of them for a list.
        Raises:
            ValueError: naming the input: unreadable or missing file, empty audio, NaN samples, too short.
        """
        single = isinstance(audio, (str, os.PathLike, np.ndarray))
        items = [audio] if single else list(audio)
        waves = []
        for k, a in enumerate(items):
            if isinstance(a, (str, os.PathLike)):
                waves.append(load_audio_numpy(a, target_sr=self.fbank.sample_rate))
            else:
                x = as_float_mono(a, f"input {k}")
                waves.append(load_audio_numpy(x, sample_rate=sample_rate, target_sr=self.fbank.sample_rate))
        if self.is_streaming:
            results = [self._transcribe_streaming(w) for w in waves]
        else:
            results = self._transcribe_offline(waves, items)
        return results[0] if single else results

    def transcribe_long(self, audio, sample_rate: int | None = None, endpoint=None, progress: bool = False):
        """A recording of any length decoded in bounded memory and split into segments at endpoints (the rules
        of ``slimasr serve``), with word timestamps: what ``slimasr transcribe`` prints. Needs a streaming export.

        Args:
            audio: a file any soundfile format reads (any sample rate, channels mixed down), ``"-"`` for a WAV on
                standard input, or a ``(S,)`` / ``(S, C)`` array at ``sample_rate``.
            endpoint: a :class:`slimasr.serve.endpoint.EndpointConfig` (default: sherpa-onnx's rules).
        Returns:
            a :class:`slimasr.decoding.Transcript` (``text``, ``words``, ``segments``, ``to_dict()``).
        Raises:
            ValueError: naming the input (missing, unreadable, empty), or an offline export.
        """
        from ..decoding import recognizer_backend, transcribe_audio

        return transcribe_audio(recognizer_backend(self), audio, sample_rate, endpoint, progress)

    def _transcribe_streaming(self, wave: np.ndarray) -> RecognitionResult:
        s = self.create_stream()
        s.accept_waveform(self.fbank.sample_rate, wave)
        s.input_finished()
        return self.decode(s)

    def _transcribe_offline(self, waves: list[np.ndarray], items: list) -> list[RecognitionResult]:
        feats = []
        for k, w in enumerate(waves):
            f = fbank_numpy(w, self.fbank)
            if f.shape[0] < MIN_FRAMES:
                name = items[k] if isinstance(items[k], (str, os.PathLike)) else f"input {k}"
                raise ValueError(f"{name}: audio too short ({w.size / self.fbank.sample_rate * 1000:.0f} ms); "
                                 f"at least {MIN_FRAMES * self.fbank.frame_shift_ms:.0f} ms is needed")
            feats.append(f)
        results: list[RecognitionResult | None] = [None] * len(feats)
        order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
        bs = self.config.batch_size
        for b in range(0, len(order), bs):
            idx = order[b: b + bs]
            t_max = max(feats[i].shape[0] for i in idx)
            x = np.zeros((len(idx), t_max, self.fbank.num_mel_bins), np.float32)
            for r, i in enumerate(idx):
                x[r, : feats[i].shape[0]] = feats[i]
            x_lens = np.array([feats[i].shape[0] for i in idx], np.int64)
            log_probs, lens = self._run(dict(zip(self._inputs, (x, x_lens))))[:2]
            for r, i in enumerate(idx):
                lp = log_probs[r, : int(lens[r])]
                results[i] = _to_result(self._decoder.decode(lp), True)
        return results  # type: ignore[return-value]

    def __repr__(self) -> str:
        extra = ""
        if self.plan is not None:
            extra = f", chunk={self.plan.chunk_size}, hop={self.plan.hop}, left_chunks={self.plan.left_chunks}"
        return (f"Recognizer({self.model_file}, {self.info.kind}, {self.info.layers} layers, provider="
                f"{self.provider}{extra}, decoding={self.config.decoding.method})")
