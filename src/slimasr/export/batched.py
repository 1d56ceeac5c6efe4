"""The batched streaming graph: one chunk of each of N streams per call, written beside a streaming export's
sherpa-onnx graph (which stays batch 1 and unchanged).

``model.batched.onnx`` has the six inputs of the streaming graph (:mod:`slimasr.export.onnx`), in the same order
and with the same names, each with a leading stream axis N (dynamic); the caches of the N streams are stacked on
it, so streams at different positions run together::

    x                   float32 (N, W, 80)                        the chunks' feature windows, all of W frames
    offset              int64   (N,)                              encoder frames before each stream's chunk
    required_cache_size int64   (1,)                              C * L: attention cache frames to return
    attn_cache          float32 (N, layers, heads, C * L, 2 * d_k)  each stream's attn_cache of the batch-1 graph
    conv_cache          float32 (N, layers, d_model, (k - 1) / 2)   each stream's conv_cache, its axis 1 dropped
    attn_mask           bool    (N, 1, C * L + C)                 each stream's mask: False for empty cache slots
    ->
    log_probs           float32 (N, C', V)
    next_attn_cache     float32 (N, layers, heads, C * L, 2 * d_k)
    next_conv_cache     float32 (N, layers, d_model, (k - 1) / 2)

Row n of every output is what the batch-1 graph returns for stream n's chunk alone
(``ASRModel.forward_chunk`` with a (N, C * L) cache mask: every operation is per row). Attention positions
are relative (Transformer-XL, Dai et al. 2019, Section 3.3) and depend only on distances within a stream's
cache and chunk, so the streams' offsets do not change the outputs; the input is kept so that the graph takes
what WeNet's ``forward_chunk`` interface takes. All rows share one window length W: a stream's short last chunk
runs with other chunks of its length, or alone (:mod:`slimasr.runtime.batched`).

**Metadata**: the streaming graph's keys (:func:`slimasr.export.onnx.read_metadata`), with ``slimasr_batched``
= ``1`` and ``comment`` = ``streaming, batched``. **slimasr_export.json** gains ``files.model_batched``
(``model.batched.onnx``) and, when the export has an int8 model, ``files.model_batched_int8``
(``model.batched.int8.onnx``, quantized like ``model.int8.onnx``), ``batched_inputs`` / ``batched_outputs``
(``{name, dtype, shape}``) and their sizes.

Example::

    from slimasr.model import load_model
    from slimasr.export import export_onnx
    from slimasr.export.batched import export_batched_streaming
    export_onnx(load_model("exp/model.pt"), "exp/onnx-streaming", streaming=True)
    export_batched_streaming(load_model("exp/model.pt"), "exp/onnx-streaming")

or ``slimasr export onnx --streaming --batched``.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..model.asr import ASRModel, EncoderState
from .onnx import (CONFIG_FILE, STREAMING_INPUTS, STREAMING_OUTPUTS, ExportConfig, _io_spec, _name_output_axes,
                   _set_metadata, _torch_export, quantize_int8, read_metadata, streaming_example_inputs)

__all__ = ["BATCHED_FILE", "BATCHED_INT8_FILE", "BatchedStreamingCtcOnnx", "export_batched_streaming"]

BATCHED_FILE = "model.batched.onnx"
BATCHED_INT8_FILE = "model.batched.int8.onnx"


class BatchedStreamingCtcOnnx(nn.Module):
    """One chunk of each of N streams through ``ASRModel.forward_chunk``; the state of stream n is row n of the
    stacked caches (see the module docstring for shapes)."""

    def __init__(self, model: ASRModel, chunk_size: int):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, x, offset, required_cache_size, attn_cache, conv_cache, attn_mask):
        """Returns log_probs (N, C', V), next_attn_cache (N, layers, H, C * L, 2 d_k), next_conv_cache
        (N, layers, D, (k - 1) / 2)."""
        d_k = self.model.config.head_dim
        layers = attn_cache.size(1)
        att = [(attn_cache[:, i, :, :, :d_k], attn_cache[:, i, :, :, d_k:]) for i in range(layers)]  # (N, H, Tc, d_k)
        conv = [conv_cache[:, i] for i in range(layers)]                     # each (N, D, P)
        cache_mask = attn_mask[:, 0, : attn_cache.size(3)]                  # (N, Tc)
        # relative positions: only distances matter, so any one stream's offset gives every stream's result
        state = EncoderState(att_cache=att, conv_cache=conv, offset=offset[:1], pending=x[:, :0])
        log_probs, new = self.model.forward_chunk(x, state, self.chunk_size, cache_mask=cache_mask,
                                                  keep_frames=required_cache_size)
        next_attn = torch.stack([torch.cat((k, v), dim=-1) for k, v in new.att_cache], dim=1)
        next_conv = torch.stack(new.conv_cache, dim=1)
        return log_probs, next_attn, next_conv


def batched_example_inputs(model: ASRModel, chunk_size: int, left_chunks: int, streams: int = 3):
    """The six batched inputs for ``streams`` streams at their first chunk (features random)."""
    x, off, req, attn, conv, mask = streaming_example_inputs(model, chunk_size, left_chunks)
    n = streams
    return (torch.randn(n, *x.shape[1:]), off.repeat(n), req, attn[None].repeat(n, 1, 1, 1, 1),
            conv[:, 0][None].repeat(n, 1, 1, 1), mask.repeat(n, 1, 1))


def export_batched_streaming(model: ASRModel, export_dir: str | os.PathLike) -> dict[str, Path]:
    """Add the batched streaming graph to a streaming export written by ``export_onnx(..., streaming=True)``.

    Args:
        model: the model the export was written from (its layer count and widths must match the export's).
        export_dir: the streaming export directory; its ``slimasr_export.json`` gives the chunking, opset and
            whether an int8 graph is wanted.
    Returns:
        {"model_batched"[, "model_batched_int8"]} -> written paths.
    Raises:
        ValueError: not a slimasr model, not a streaming export directory, or a model that differs from the
            export's in shape.
    """
    if not isinstance(model, ASRModel):
        raise ValueError(f"expected a slimasr ASRModel, got {type(model).__module__}.{type(model).__name__}")
    d = Path(export_dir)
    cfg_file = d / CONFIG_FILE
    if not cfg_file.is_file():
        raise ValueError(f"{d} is not a slimasr export directory (no {CONFIG_FILE})")
    e = json.loads(cfg_file.read_text(encoding="utf-8"))
    if e.get("kind") != "streaming":
        raise ValueError(f"{d} is a {e.get('kind')} export; the batched graph goes beside a streaming one "
                         "(slimasr export onnx --streaming --batched)")
    m = copy.deepcopy(model).cpu().float().eval()
    cfg = m.config
    n = len(m.encoder.layers)
    mine = {"num_layers": n, "num_heads": cfg.num_heads, "head_dim": cfg.head_dim, "d_model": cfg.d_model,
            "conv_cache_frames": cfg.conv_cache_frames, "vocab_size": cfg.vocab_size}
    diff = {k: (e.get(k), v) for k, v in mine.items() if e.get(k) != v}
    if diff:
        raise ValueError(f"the model does not match the export in {d}: " +
                         ", ".join(f"{k} {a} in the export, {b} in the model" for k, (a, b) in diff.items()))
    ec = ExportConfig(streaming=True, chunk_size=e["chunk_size"], left_chunks=e["left_chunks"], opset=e["opset"])
    path = d / BATCHED_FILE
    args = batched_example_inputs(m, ec.chunk_size, ec.left_chunks)
    _torch_export(BatchedStreamingCtcOnnx(m, ec.chunk_size).eval(), args, path, ec, STREAMING_INPUTS,
                  STREAMING_OUTPUTS,
                  {"x": {0: "N", 1: "T"}, "offset": {0: "N"}, "attn_cache": {0: "N", 3: "cache"},
                   "conv_cache": {0: "N"}, "attn_mask": {0: "N", 2: "cache_plus_chunk"},
                   "log_probs": {0: "N", 1: "chunk"}, "next_attn_cache": {0: "N", 3: "cache"},
                   "next_conv_cache": {0: "N"}})
    _name_output_axes(path, {
        "log_probs": {0: "N", 1: "chunk", 2: cfg.vocab_size},
        "next_attn_cache": {0: "N", 1: n, 2: cfg.num_heads, 3: "cache", 4: 2 * cfg.head_dim},
        "next_conv_cache": {0: "N", 1: n, 2: cfg.d_model, 3: cfg.conv_cache_frames},
    })
    meta = read_metadata(d / e["files"]["model"])
    meta.pop("slimasr_int8_op_types", None)
    meta.update(slimasr_batched="1", comment="streaming, batched")
    _set_metadata(path, meta)
    import onnx

    onnx.checker.check_model(str(path))
    written = {"model_batched": path}
    files = dict(e["files"])
    files["model_batched"] = BATCHED_FILE
    if e.get("int8"):
        q = quantize_int8(path, d / BATCHED_INT8_FILE, tuple(e["int8"]["op_types"]))
        written["model_batched_int8"] = q
        files["model_batched_int8"] = BATCHED_INT8_FILE
    inputs, outputs = _io_spec(path)
    e.update(files=files, batched_inputs=inputs, batched_outputs=outputs)
    e["sizes"] = {**e.get("sizes", {}), **{p.name: p.stat().st_size for p in written.values()}}
    tmp = cfg_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(e, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, cfg_file)
    return written
