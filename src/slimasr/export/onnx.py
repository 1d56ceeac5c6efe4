"""Export a slimasr model (pruned or not) to ONNX, in the interface sherpa-onnx uses for WeNet CTC models.

Two graphs, one per export directory (``export_onnx(..., streaming=False|True)``):

**Offline** (``model.onnx``; sherpa-onnx ``OfflineRecognizer.from_wenet_ctc``)::

    inputs   x              float32 (N, T, 80)   fbank frames, T >= 7 (global CMVN is inside the graph)
             x_lens         int64   (N,)         valid frames per utterance
    outputs  log_probs      float32 (N, T', V)   CTC log-probabilities, T' = ((T - 1) // 2 - 1) // 2
             log_probs_lens int64   (N,)

    N and T are dynamic; full-context attention, no positional table, so no length limit other than memory:
    onnxruntime's peak is about 6 x heads x T'^2 x 4 bytes (measured 6.2x at T' = 3000 and 6000), so 20 minutes
    (T' = 30000) in one call needs ~45 GB with 2 heads, ~90 GB with 4, ~180 GB with 8; decode longer audio with
    the streaming graph (constant memory) or in segments.

**Streaming** (``model.onnx``; sherpa-onnx ``OnlineRecognizer.from_wenet_ctc``), one chunk of C encoder frames
with L left chunks per call, batch 1, inputs in this order (sherpa-onnx feeds them by position)::

    x                   float32 (1, W, 80)                 the chunk's feature window: W = (C - 1) * S + R + 1
                                                           (S, R: subsampling factor and right context);
                                                           fewer frames (>= R + 1) for a short last chunk
    offset              int64   (1,)                       C * L + encoder frames before this chunk (sherpa
                                                           starts at C * L and adds C per chunk)
    required_cache_size int64   (1,)                       C * L: attention cache frames to return
    attn_cache          float32 (layers, heads, C * L, 2 * d_k)   keys | values of the last C * L frames
    conv_cache          float32 (layers, 1, d_model, (k - 1) / 2)  depthwise-convolution left context
    attn_mask           bool    (1, 1, C * L + C)          False for cache slots that hold no frame yet
    ->
    log_probs           float32 (1, C', V)                 C' = C, or fewer for a short last chunk
    next_attn_cache     float32 (layers, heads, C * L, 2 * d_k)
    next_conv_cache     float32 (layers, 1, d_model, (k - 1) / 2)

    The time axes of x, attn_cache and attn_mask are dynamic, so one file serves any chunk size and left context
    (the metadata records the ones it was exported for), and the last chunk of a stream may be short: the end
    of a stream runs the remaining frames as they are (:mod:`slimasr.chunking`).

**ONNX metadata** (all values are strings). Read by sherpa-onnx: ``model_type`` (``wenet_ctc``), ``head``,
``num_blocks``, ``output_size``, ``cnn_module_kernel``, ``right_context``, ``subsampling_factor``, ``vocab_size``;
also written: ``version``, ``model_author``, ``comment``. sherpa-onnx sizes the
convolution cache as ``cnn_module_kernel - 1`` frames, while dynamic chunk convolution keeps (k - 1) / 2, so
``cnn_module_kernel`` is written as (k - 1) / 2 + 1 and the true kernel goes to ``slimasr_kernel_size``.
slimasr's own keys: ``slimasr_version``, ``slimasr_kind`` (offline | streaming), ``slimasr_kernel_size``,
``slimasr_conv_cache_frames``, ``slimasr_head_dim``, ``slimasr_d_model``, ``slimasr_num_layers``,
``slimasr_original_layers`` (JSON list of kept original layer indices, or ``null``), ``slimasr_blank_id``,
``slimasr_sos_eos_id`` (an id, or ``null`` for a vocabulary without one, e.g. NeMo's), ``slimasr_frontend`` (JSON of the model's :class:`slimasr.features.FrontendConfig`),
``slimasr_model_config`` (JSON of the ModelConfig), ``slimasr_tokenizer`` (base64 SentencePiece model, or empty),
``slimasr_source`` (JSON provenance of an imported model, ``ASRModel.source``, or empty);
streaming graphs only: ``chunk_size``, ``left_chunks``, ``slimasr_window``, ``slimasr_shift`` (feature frames per
chunk window / chunk step), ``slimasr_required_cache_size``, all from :class:`slimasr.chunking.Chunking`
(``Chunking.to_metadata``); the runtime reads them back with ``Chunking.from_metadata``. ``model.int8.onnx``
adds ``slimasr_int8_op_types``.

**Files** in the output directory: ``model.onnx``, ``model.int8.onnx`` (with ``int8``), ``tokens.txt``
(``symbol id`` per line, ``<blank> 0`` first), ``tokenizer.model`` (when the model carries a tokenizer) and
``slimasr_export.json``, whose keys are::

    format ("slimasr-export"), format_version (1), slimasr_version, kind ("offline" | "streaming"),
    chunk_size, left_chunks, required_cache_size (chunk_size * left_chunks), window, shift (feature frames),
    subsampling_factor, right_context, num_layers, num_heads, head_dim, d_model, kernel_size,
    conv_cache_frames, sherpa_cnn_module_kernel, vocab_size, blank_id, sos_eos_id (null: none), num_mel_bins,
    frontend (the model's FrontendConfig dict), original_layers (list or null), model_config (ModelConfig dict), opset,
    inputs / outputs (lists of {name, dtype, shape}; symbolic axes are strings),
    files ({model, model_int8, tokens, tokenizer, config}: file names or null),
    int8 (null, or {file, op_types, size_bytes, float_size_bytes}),
    sizes ({file name: bytes}).

chunk_size, left_chunks, required_cache_size, window and shift are null in offline exports.

Example::

    from slimasr.model import load_model
    from slimasr.export import export_onnx
    export_onnx(load_model("exp/model.pt"), "exp/onnx-streaming", streaming=True, chunk_size=16, left_chunks=4)
"""
from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..chunking import check_positive_int
from ..model.asr import ASRModel, EncoderState

__all__ = [
    "CONFIG_FILE", "ExportConfig", "OfflineCtcOnnx", "StreamingCtcOnnx", "UntrainedChunkSizeWarning",
    "export_onnx", "quantize_int8", "read_metadata", "write_tokens_txt",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "slimasr_export.json"
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENS_FILE = "tokens.txt"
TOKENIZER_FILE = "tokenizer.model"
EXPORT_FORMAT = "slimasr-export"
EXPORT_FORMAT_VERSION = 1
MIN_OPSET, MAX_OPSET = 14, 20        # the TorchScript exporter of torch 2.11 writes opsets up to 20

OFFLINE_INPUTS = ("x", "x_lens")
OFFLINE_OUTPUTS = ("log_probs", "log_probs_lens")
STREAMING_INPUTS = ("x", "offset", "required_cache_size", "attn_cache", "conv_cache", "attn_mask")
STREAMING_OUTPUTS = ("log_probs", "next_attn_cache", "next_conv_cache")

# Op types whose weights onnxruntime's dynamic quantization turns into int8 (activations are quantized per call).
# MatMul holds every nn.Linear (feed-forward, attention projections, CTC head): most of the weights. Conv
# (front-end, pointwise and depthwise convolutions) also quantizes and runs (ConvInteger) in onnxruntime 1.31 and
# in the onnxruntime 1.28 inside sherpa-onnx 2.0.1, shrinking the file further, but per-tensor int8 depthwise
# kernels cost more accuracy; it is opt-in. The exported graphs contain no Gemm.
INT8_OP_TYPES = ("MatMul",)
QUANTIZABLE_OP_TYPES = ("MatMul", "Conv", "Gemm")


class UntrainedChunkSizeWarning(UserWarning):
    """The requested chunking is outside what the model saw in training (results may be poor)."""


@dataclass(frozen=True)
class ExportConfig:
    """What ``export_onnx`` writes."""

    streaming: bool = False        # streaming (one chunk per call, sherpa-onnx WeNet interface) or offline graph
    chunk_size: int = 16           # encoder frames per chunk (streaming)
    left_chunks: int = 4           # chunks of attention history (streaming); sherpa-onnx needs >= 1
    int8: bool = False             # also write model.int8.onnx (dynamic quantization, int8 weights)
    int8_op_types: tuple[str, ...] = INT8_OP_TYPES   # op types whose weights are quantized
    opset: int = 17                # ONNX opset (LayerNormalization is native from 17)

    def __post_init__(self) -> None:
        # left_chunks >= 1: the streaming graph keeps a fixed cache of chunk_size * left_chunks frames
        for name in ("chunk_size", "left_chunks", "opset"):
            check_positive_int(name, getattr(self, name))
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {self.opset}")
        bad = [t for t in self.int8_op_types if t not in QUANTIZABLE_OP_TYPES]
        if bad or not self.int8_op_types:
            raise ValueError(f"int8_op_types must be a non-empty subset of {list(QUANTIZABLE_OP_TYPES)}, got "
                             f"{list(self.int8_op_types)}")


# ---------------------------------------------------------------------------------------------- wrappers
class OfflineCtcOnnx(nn.Module):
    """Whole utterances through ``ASRModel.ctc_log_probs`` (full context): the offline graph."""

    def __init__(self, model: ASRModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        """x (N, T, 80) float32, x_lens (N,) int64 -> log_probs (N, T', V), log_probs_lens (N,) int64."""
        return self.model.ctc_log_probs(x, x_lens)


class StreamingCtcOnnx(nn.Module):
    """One chunk through ``ASRModel.forward_chunk``, with the state packed as sherpa-onnx's WeNet CTC tensors.

    attn_cache (layers, H, Tc, 2 d_k) holds keys in ``[..., :d_k]`` and values in ``[..., d_k:]``; conv_cache is
    (layers, 1, D, (k - 1) / 2); ``attn_mask[:, 0, :Tc]`` marks the cache slots that hold real frames.
    """

    def __init__(self, model: ASRModel, chunk_size: int):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, x, offset, required_cache_size, attn_cache, conv_cache, attn_mask):
        """See the module docstring for shapes. Returns log_probs (1, C, V), next_attn_cache, next_conv_cache."""
        d_k = self.model.config.head_dim
        layers = attn_cache.size(0)
        att = [(attn_cache[i : i + 1, :, :, :d_k], attn_cache[i : i + 1, :, :, d_k:]) for i in range(layers)]
        conv = [conv_cache[i] for i in range(layers)]                       # each (1, D, P)
        cache_mask = attn_mask[:, 0, : attn_cache.size(2)]                  # (1, Tc)
        # sherpa-onnx's offset counts the C * L cache slots it starts with; the model's offset is the number of
        # encoder frames before the chunk (relative positions ignore it; WeNet's absolute key positions do not)
        state = EncoderState(att_cache=att, conv_cache=conv, offset=offset - required_cache_size, pending=x[:, :0])
        log_probs, new = self.model.forward_chunk(x, state, self.chunk_size, cache_mask=cache_mask,
                                                  keep_frames=required_cache_size)
        next_attn = torch.cat([torch.cat((k, v), dim=-1) for k, v in new.att_cache], dim=0)
        next_conv = torch.stack(new.conv_cache, dim=0)
        return log_probs, next_attn, next_conv


# ---------------------------------------------------------------------------------------------- helpers
def streaming_example_inputs(model: ASRModel, chunk_size: int, left_chunks: int, offset: int | None = None):
    """The six streaming inputs for the first chunk, exactly as sherpa-onnx builds them (features random)."""
    cfg = model.config
    n = len(model.encoder.layers)
    chunking = model.chunking(chunk_size, left_chunks)
    cache = chunking.cache_frames
    x = torch.randn(1, chunking.window, cfg.num_mel_bins)
    attn_cache = torch.zeros(n, cfg.num_heads, cache, 2 * cfg.head_dim)
    conv_cache = torch.zeros(n, 1, cfg.d_model, cfg.conv_cache_frames)
    attn_mask = torch.ones(1, 1, cache + chunk_size, dtype=torch.bool)
    attn_mask[:, :, :cache] = False
    off = torch.tensor([cache if offset is None else offset], dtype=torch.int64)
    return x, off, torch.tensor([cache], dtype=torch.int64), attn_cache, conv_cache, attn_mask


def _tokenizer(model: ASRModel):
    """The model's tokenizer (checked against the CTC head), or None."""
    proto = model.tokenizer_bytes
    if not proto:
        return None
    from ..tokenizer import Tokenizer

    tok = Tokenizer.from_bytes(proto)
    v = model.config.vocab_size
    if tok.vocab_size != v:
        raise ValueError(f"the model's tokenizer has {tok.vocab_size} symbols but its CTC head has {v} outputs")
    return tok


def write_tokens_txt(model: ASRModel, path: str | os.PathLike) -> Path:
    """tokens.txt from the model's tokenizer, or placeholders ``<blank> 0, t1 1, ..., <sos/eos> V-1``."""
    path = Path(path)
    v = model.config.vocab_size
    tok = _tokenizer(model)
    if tok is not None:
        return tok.write_tokens_txt(path)
    from ..tokenizer import BLANK, SOS_EOS

    syms = [BLANK] + [f"t{i}" for i in range(1, v - 1)] + [SOS_EOS]
    path.write_text("".join(f"{s} {i}\n" for i, s in enumerate(syms)), encoding="utf-8")
    return path


def _metadata(model: ASRModel, ec: ExportConfig) -> dict[str, str]:
    import slimasr

    cfg = model.config
    n = len(model.encoder.layers)
    proto = model.tokenizer_bytes
    meta = {
        # read by sherpa-onnx (online and offline WeNet CTC models)
        "model_type": "wenet_ctc",
        "version": "1",
        "model_author": "slimasr",
        "comment": "streaming" if ec.streaming else "offline",
        "head": cfg.num_heads,
        "num_blocks": n,
        "output_size": cfg.d_model,
        "cnn_module_kernel": cfg.conv_cache_frames + 1,     # sherpa-onnx's conv cache = cnn_module_kernel - 1
        "right_context": cfg.right_context,
        "subsampling_factor": cfg.subsampling_factor,
        "vocab_size": cfg.vocab_size,
        # slimasr's own
        "slimasr_version": slimasr.__version__,
        "slimasr_kind": "streaming" if ec.streaming else "offline",
        "slimasr_kernel_size": cfg.kernel_size,
        "slimasr_conv_cache_frames": cfg.conv_cache_frames,
        "slimasr_head_dim": cfg.head_dim,
        "slimasr_d_model": cfg.d_model,
        "slimasr_num_layers": n,
        "slimasr_original_layers": json.dumps(list(cfg.original_layers) if cfg.original_layers is not None else None),
        "slimasr_blank_id": cfg.blank_id,
        "slimasr_sos_eos_id": json.dumps(cfg.sos_eos_id),           # null: the vocabulary has none
        "slimasr_frontend": model.frontend.to_json(),
        "slimasr_model_config": json.dumps(cfg.to_dict()),
        "slimasr_tokenizer": base64.b64encode(proto).decode("ascii") if proto else "",
        "slimasr_source": json.dumps(model.source) if model.source is not None else "",   # imported models
    }
    meta = {k: str(v) for k, v in meta.items()}
    if ec.streaming:
        meta.update(model.chunking(ec.chunk_size, ec.left_chunks).to_metadata())
    return meta


def _set_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an ONNX file (key -> string value)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}


def _io_spec(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def spec(v):
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name, "shape": dims}

    return [spec(v) for v in m.graph.input], [spec(v) for v in m.graph.output]


def _name_output_axes(path: Path, axes: dict[str, dict[int, "str | int"]]) -> None:
    """Give the outputs' dynamic axes readable names (the TorchScript exporter invents long ones)."""
    import onnx

    m = onnx.load(str(path))
    for out in m.graph.output:
        for i, name in axes.get(out.name, {}).items():
            d = out.type.tensor_type.shape.dim[i]
            if isinstance(name, int):
                d.dim_value = name
            else:
                d.dim_param = name
    onnx.save(m, str(path))


@contextlib.contextmanager
def _quiet_export():
    """The TorchScript exporter warns about its own deprecation and about traced shape arithmetic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _torch_export(module: nn.Module, args: tuple, path: Path, ec: ExportConfig, input_names, output_names,
                  dynamic_axes) -> None:
    # The TorchScript exporter (dynamo=False): 20x faster than the dynamo exporter here, writes the requested
    # opset, keeps all six streaming inputs, and traces the shape arithmetic (chunk and cache lengths) as
    # graph ops, so the time axes stay dynamic.
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=ec.opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)


def _export_offline(model: ASRModel, path: Path, ec: ExportConfig) -> None:
    cfg = model.config
    x = torch.randn(2, 67, cfg.num_mel_bins)
    x_lens = torch.tensor([67, 50], dtype=torch.int64)
    _torch_export(OfflineCtcOnnx(model).eval(), (x, x_lens), path, ec, OFFLINE_INPUTS, OFFLINE_OUTPUTS,
                  {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"},
                   "log_probs": {0: "N", 1: "T_out"}, "log_probs_lens": {0: "N"}})
    _name_output_axes(path, {"log_probs": {0: "N", 1: "T_out", 2: cfg.vocab_size}, "log_probs_lens": {0: "N"}})


def _export_streaming(model: ASRModel, path: Path, ec: ExportConfig) -> None:
    cfg = model.config
    n = len(model.encoder.layers)
    args = streaming_example_inputs(model, ec.chunk_size, ec.left_chunks)
    _torch_export(StreamingCtcOnnx(model, ec.chunk_size).eval(), args, path, ec, STREAMING_INPUTS,
                  STREAMING_OUTPUTS,
                  {"x": {1: "T"}, "attn_cache": {2: "cache"}, "attn_mask": {2: "cache_plus_chunk"},
                   "log_probs": {1: "chunk"}, "next_attn_cache": {2: "cache"}})
    _name_output_axes(path, {
        "log_probs": {0: 1, 1: "chunk", 2: cfg.vocab_size},
        "next_attn_cache": {0: n, 1: cfg.num_heads, 2: "cache", 3: 2 * cfg.head_dim},
        "next_conv_cache": {0: n, 1: 1, 2: cfg.d_model, 3: cfg.conv_cache_frames},
    })


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike,
                  op_types: tuple[str, ...] = INT8_OP_TYPES) -> Path:
    """onnxruntime dynamic quantization: int8 weights for ``op_types`` (one scale per tensor), activations
    quantized per call. Per-channel and calibrated variants: :mod:`slimasr.export.quantize`."""
    from .quantize import QuantizeConfig, quantize

    return quantize(src, dst, QuantizeConfig(per_channel=False, op_types=tuple(op_types)))


# The largest attention window (encoder frames) of a streaming export: its trace and its caches grow with it, and
# long before this size an offline export does the same work better.
MAX_STREAMING_WINDOW = 5000


def _check_chunking(model: ASRModel, ec: ExportConfig) -> None:
    cfg = model.config
    if not ec.streaming:
        return
    window = ec.chunk_size * (ec.left_chunks + 1)
    if window > MAX_STREAMING_WINDOW:
        raise ValueError(f"a streaming export attends over chunk_size x (left_chunks + 1) = {ec.chunk_size} x "
                         f"{ec.left_chunks + 1} = {window} encoder frames, at most {MAX_STREAMING_WINDOW}; for a "
                         "longer context export offline (no streaming)")
    from ..model.config import StreamingRefused

    why = cfg.streaming_refusal(model.frontend, onnx=True)
    if why:
        raise StreamingRefused(why)            # the caller names the way out (export or decode offline)
    if not cfg.dynamic_chunk:
        warnings.warn(f"the model was trained with full context only (config.dynamic_chunk is False); a streaming "
                      f"export with chunk_size={ec.chunk_size} runs it on chunks it never saw in training",
                      UntrainedChunkSizeWarning, stacklevel=3)
    elif ec.chunk_size > cfg.max_chunk_size:
        warnings.warn(f"chunk_size={ec.chunk_size} is larger than the largest chunk the model was trained with "
                      f"(config.max_chunk_size={cfg.max_chunk_size}); accuracy may drop",
                      UntrainedChunkSizeWarning, stacklevel=3)


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ValueError(f"output directory {out_dir} already exists and is not empty; choose another or pass "
                         "force=True (--force) to overwrite")


def export_onnx(model: ASRModel, out_dir: str | os.PathLike, streaming: bool = False, chunk_size: int = 16,
                left_chunks: int = 4, int8: bool = False, opset: int = 17, force: bool = False, *,
                int8_op_types: tuple[str, ...] = INT8_OP_TYPES) -> dict[str, Path]:
    """Write an ONNX export of ``model`` (see the module docstring for the interface and the files).

    Args:
        model: a slimasr :class:`~slimasr.model.ASRModel`, pruned or not (not modified).
        out_dir: created; must not exist or be empty unless ``force``.
        streaming: the streaming (sherpa-onnx WeNet CTC) graph instead of the offline one.
        chunk_size, left_chunks: streaming chunking in encoder frames / chunks (metadata and defaults).
        int8: also write ``model.int8.onnx`` (onnxruntime dynamic quantization of MatMul weights).
        opset: ONNX opset, 14..20.
        force: overwrite the files of an earlier export in ``out_dir``.
        int8_op_types: op types quantized with ``int8`` (default MatMul; ("MatMul", "Conv") is smaller).
    Returns:
        {"model", "tokens", "config"[, "model_int8"][, "tokenizer"]} -> written paths.
    Raises:
        ValueError: not a slimasr model, bad chunking (a streaming window over :data:`MAX_STREAMING_WINDOW`
            frames) or opset, or an existing output directory without ``force``.
    Warns:
        UntrainedChunkSizeWarning: streaming with a chunk size the model was not trained for.
    """
    import onnx
    import slimasr

    if not isinstance(model, ASRModel):
        raise ValueError(f"expected a slimasr ASRModel (from slimasr.load_model or build_model), got "
                         f"{type(model).__module__}.{type(model).__name__}")
    ec = ExportConfig(streaming=bool(streaming), chunk_size=chunk_size, left_chunks=left_chunks, int8=bool(int8),
                      int8_op_types=tuple(int8_op_types), opset=opset)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, force)
    _tokenizer(model)
    _check_chunking(model, ec)

    # export a CPU float32 copy in eval mode; the caller's model is left untouched
    m = copy.deepcopy(model).cpu().float().eval()
    cfg = m.config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    os.chmod(tmp, 0o755)                             # mkdtemp makes it private; the export is an ordinary folder
    try:
        model_path = tmp / MODEL_FILE
        (_export_streaming if ec.streaming else _export_offline)(m, model_path, ec)
        _set_metadata(model_path, _metadata(m, ec))
        onnx.checker.check_model(str(model_path))
        files: dict[str, str | None] = {"model": MODEL_FILE, "model_int8": None, "tokens": TOKENS_FILE,
                                        "tokenizer": None, "config": CONFIG_FILE}
        int8_info = None
        if ec.int8:
            quantize_int8(model_path, tmp / INT8_FILE, ec.int8_op_types)
            files["model_int8"] = INT8_FILE
            int8_info = {"file": INT8_FILE, "op_types": list(ec.int8_op_types),
                         "size_bytes": (tmp / INT8_FILE).stat().st_size,
                         "float_size_bytes": model_path.stat().st_size}
        write_tokens_txt(m, tmp / TOKENS_FILE)
        if m.tokenizer_bytes:
            (tmp / TOKENIZER_FILE).write_bytes(m.tokenizer_bytes)
            files["tokenizer"] = TOKENIZER_FILE
        inputs, outputs = _io_spec(model_path)
        chunking = m.chunking(ec.chunk_size, ec.left_chunks) if ec.streaming else None
        config = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "slimasr_version": slimasr.__version__,
            "kind": "streaming" if ec.streaming else "offline",
            "chunk_size": chunking.chunk_size if chunking else None,
            "left_chunks": chunking.left_chunks if chunking else None,
            "required_cache_size": chunking.cache_frames if chunking else None,
            "window": chunking.window if chunking else None,
            "shift": chunking.shift if chunking else None,
            "subsampling_factor": cfg.subsampling_factor,
            "right_context": cfg.right_context,
            "num_layers": len(m.encoder.layers),
            "num_heads": cfg.num_heads,
            "head_dim": cfg.head_dim,
            "d_model": cfg.d_model,
            "kernel_size": cfg.kernel_size,
            "conv_cache_frames": cfg.conv_cache_frames,
            "sherpa_cnn_module_kernel": cfg.conv_cache_frames + 1,
            "vocab_size": cfg.vocab_size,
            "blank_id": cfg.blank_id,
            "sos_eos_id": cfg.sos_eos_id,
            "num_mel_bins": cfg.num_mel_bins,
            "frontend": m.frontend.to_dict(),
            "original_layers": list(cfg.original_layers) if cfg.original_layers is not None else None,
            "model_config": cfg.to_dict(),
            "opset": ec.opset,
            "inputs": inputs,
            "outputs": outputs,
            "files": files,
            "int8": int8_info,
            "sizes": {p.name: p.stat().st_size for p in sorted(tmp.iterdir())},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        _move_into(tmp, out_dir, [f for f in files.values() if f] + [INT8_FILE, TOKENIZER_FILE])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    written = {k: out_dir / v for k, v in files.items() if v}
    log.info("exported %s ONNX model to %s (%s)", config["kind"], out_dir,
             ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in written.values()))
    return written


def _move_into(tmp: Path, out_dir: Path, known: list[str]) -> None:
    """Publish the finished files: rename the temporary directory, or (``force``) replace our files in place."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    for name in set(known):                      # stale files of an earlier export (say, model.int8.onnx)
        p = out_dir / name
        if p.is_file() and not (tmp / name).exists():
            p.unlink()
    for p in tmp.iterdir():
        os.replace(p, out_dir / p.name)
