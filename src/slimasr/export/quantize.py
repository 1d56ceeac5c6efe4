"""int8 weight quantization of an exported ONNX model: dynamic or calibrated, per-tensor or per-channel.

Wraps onnxruntime's quantization tool (``onnxruntime.quantization.quantize_dynamic`` / ``quantize_static``,
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):

* ``dynamic``: int8 weights, activations quantized per call from their observed range (``DynamicQuantizeLinear``
  -> ``MatMulInteger``); no data needed. With ``per_channel`` each output column of a weight matrix gets its own
  scale (``axis`` = the output features), which keeps small-magnitude columns from being rounded away.
* ``static`` (calibrated): activation ranges fixed from calibration features (``QDQ`` format, int8 activations
  and weights); needs a few utterances of features through :class:`FeatureReader`.

Before quantizing, the model goes through onnxruntime's ``quant_pre_process`` (shape inference and the basic,
standard-ONNX graph optimisations it recommends; the saved graph stays loadable by older onnxruntimes such as the
one inside sherpa-onnx).

``conv_as_matmul`` (dynamic only): onnxruntime quantizes ``Conv`` to ``ConvInteger``, a reference kernel several
times slower than the float convolution on CPU, so ``Conv`` is not quantized by default and a dense convolution
(the Conv2d front-end's 3x3 stride-2 convolution over 512 channels is a quarter of the ``paper`` model's FLOPs)
would stay float32. With ``conv_as_matmul`` each dense (``group`` 1, undilated) 2-D convolution with at
least ``MIN_IM2COL_K`` products per output is lowered after quantization to the same dynamic int8 scheme as the
MatMuls: the input quantized per call (``DynamicQuantizeLinear``, uint8), unfolded (im2col: one strided ``Slice``
per kernel tap, ``Concat`` on the channel axis, in uint8), multiplied by the int8 kernel as a (kh kw C_in, C_out)
matrix (``MatMulInteger``, one scale per output channel with ``per_channel``), rescaled to float and biased. The
output is the convolution's output (N, C_out, H_out, W_out), so the graph's interface does not change. With
``Conv`` in ``op_types`` the convolutions go to onnxruntime's ``ConvInteger`` instead.

The file written keeps the export's metadata (the runtime reads it unchanged) and adds
``slimasr_int8_op_types``, ``slimasr_int8_method``, ``slimasr_int8_per_channel`` and
``slimasr_int8_im2col_convs`` (convolutions lowered by ``conv_as_matmul``).

Example::

    from slimasr.export.quantize import QuantizeConfig, quantize
    quantize("exp/onnx/model.onnx", "exp/onnx/model.int8.onnx", QuantizeConfig(per_channel=True))
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .onnx import INT8_OP_TYPES, QUANTIZABLE_OP_TYPES, _set_metadata, read_metadata

__all__ = ["FeatureReader", "QuantizeConfig", "quantize", "quantize_convs_as_matmul"]

METHODS = ("dynamic", "static")
MIN_IM2COL_K = 64            # conv_as_matmul: fewer products per output (the 1-channel first convolution) stay float


@dataclass(frozen=True)
class QuantizeConfig:
    """How :func:`quantize` turns weights into int8."""

    method: str = "dynamic"                        # dynamic | static (calibrated activation ranges)
    per_channel: bool = True                       # one scale per output channel instead of one per tensor
    op_types: tuple[str, ...] = INT8_OP_TYPES      # op types whose weights are quantized (MatMul: every Linear)
    reduce_range: bool = False                     # 7-bit weights (for CPUs without VNNI, where u8s8 overflows)
    conv_as_matmul: bool = True                    # dynamic: dense 2-D Convs as int8 im2col MatMuls (see above)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        bad = [t for t in self.op_types if t not in QUANTIZABLE_OP_TYPES]
        if bad or not self.op_types:
            raise ValueError(f"op_types must be a non-empty subset of {list(QUANTIZABLE_OP_TYPES)}, got "
                             f"{list(self.op_types)}")


class FeatureReader:
    """Calibration data for ``static`` quantization: onnxruntime's ``CalibrationDataReader`` over the offline
    graph's inputs, ``x`` (1, T, F) float32 features and ``x_lens`` (1,) int64."""

    def __init__(self, features: Iterable):
        import numpy as np

        self._items = [{"x": np.asarray(f, np.float32)[None], "x_lens": np.array([len(f)], np.int64)}
                       for f in features]
        if not self._items:
            raise ValueError("static quantization needs at least one calibration utterance")
        self._it = iter(self._items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)


def quantize(src: str | os.PathLike, dst: str | os.PathLike, config: QuantizeConfig = QuantizeConfig(),
             calibration: Sequence | None = None) -> Path:
    """Write an int8 copy of the ONNX model ``src`` to ``dst``.

    Args:
        src: a float32 ``model.onnx`` (offline or streaming export).
        config: method, per-channel scales and op types.
        calibration: ``static`` only: feature matrices (T, F) of a few utterances (offline exports only: the
            streaming graph's caches are not calibrated).
    Returns:
        ``dst``.
    Raises:
        ValueError: ``src`` missing, ``static`` without calibration data or on a streaming export.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_dynamic, quantize_static)

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ValueError(f"{src}: no such ONNX model")
    meta = read_metadata(src)
    if config.method == "static" and meta.get("slimasr_kind") == "streaming":
        raise ValueError(f"{src}: static quantization calibrates the offline graph; this is a streaming "
                         "export (use method='dynamic')")
    if config.method == "static" and not calibration:
        raise ValueError("static quantization needs calibration features")
    lowered = 0
    with tempfile.TemporaryDirectory(prefix="slimasr-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)   # onnxruntime's symbolic inference
        # fails on the exported graphs; ONNX shape inference and the basic optimisations still run
        if config.method == "dynamic":
            quantize_dynamic(model_input=str(pre), model_output=str(dst), op_types_to_quantize=list(config.op_types),
                             per_channel=config.per_channel, reduce_range=config.reduce_range,
                             weight_type=QuantType.QInt8)
            if config.conv_as_matmul and "Conv" not in config.op_types:
                import onnx

                model = onnx.load(str(dst))
                lowered = quantize_convs_as_matmul(model, config.per_channel, config.reduce_range)
                if lowered:
                    onnx.save(model, str(dst))
        else:
            quantize_static(model_input=str(pre), model_output=str(dst), calibration_data_reader=FeatureReader(
                calibration), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(config.op_types),
                per_channel=config.per_channel, reduce_range=config.reduce_range,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)
    meta.update(slimasr_int8_op_types=",".join(config.op_types), slimasr_int8_method=config.method,
                slimasr_int8_per_channel=str(int(config.per_channel)), slimasr_int8_im2col_convs=str(lowered))
    _set_metadata(dst, meta)
    return dst


def quantize_convs_as_matmul(model, per_channel: bool = True, reduce_range: bool = False,
                             min_k: int = MIN_IM2COL_K) -> int:
    """Replace, in place, every float dense 2-D ``Conv`` of the ONNX ``model`` (``group`` 1, dilation 1, explicit pads,
    weight an initializer of shape (C_out, C_in, kh, kw) with C_in kh kw >= ``min_k``) by dynamic int8 im2col:
    ``DynamicQuantizeLinear`` of the input (N, C_in, H, W) -> uint8 NHWC (``Pad`` with the zero point, which is
    the quantized 0.0, where the convolution pads) -> ``Slice`` per kernel tap (strides of
    the convolution) -> ``Concat`` (N, H_out, W_out, kh kw C_in) -> ``MatMulInteger`` with the symmetric int8
    kernel matrix (kh kw C_in, C_out) -> ``Cast`` float, ``Mul`` by input scale x weight scale (one per output
    channel with ``per_channel``, else one) -> ``Add`` bias -> (N, C_out, H_out, W_out). H_out = (H + pads - kh)
    // stride + 1, as the convolution's. Weights: 7-bit (+-63) with ``reduce_range``, else +-127 (onnxruntime's
    symmetric int8 weights, ``onnxruntime.quantization.quant_utils``). Returns the number of convolutions replaced.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    qmax = 63.0 if reduce_range else 127.0
    nodes, added, replaced = [], [], 0

    def const(name: str, value) -> str:
        added.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if (w is None or len(w.dims) != 4 or w.data_type != 1 or attrs.get("group", 1) != 1
                or any(d != 1 for d in attrs.get("dilations", [1, 1]))
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
                or w.dims[1] * w.dims[2] * w.dims[3] < min_k):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(w).astype(np.float32)
        c_out, c_in, kh, kw = weight.shape
        sh, sw = attrs.get("strides", [1, 1])
        mat = weight.transpose(2, 3, 1, 0).reshape(kh * kw * c_in, c_out)      # rows ordered (tap i, tap j, c)
        amax = np.abs(mat).max(axis=0) if per_channel else np.full(c_out, np.abs(mat).max())
        w_scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        w_q = np.clip(np.rint(mat / w_scale), -qmax, qmax).astype(np.int8)
        p = f"{node.name or node.output[0]}/im2col_int8"
        xq, xs, xz, xt = f"{p}/x_q", f"{p}/x_scale", f"{p}/x_zero_point", f"{p}/x_q_nhwc"
        nodes += [helper.make_node("DynamicQuantizeLinear", [node.input[0]], [xq, xs, xz], name=f"{p}/quantize"),
                  helper.make_node("Transpose", [xq], [xt], perm=[0, 2, 3, 1], name=f"{p}/nhwc")]
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        if top or left or bottom or right:          # pad with the zero point: the quantized 0.0
            nodes.append(helper.make_node("Pad", [xt, const(f"{p}/pads", np.array(
                [0, top, left, 0, 0, bottom, right, 0], np.int64)), xz], [f"{p}/x_q_padded"], name=f"{p}/pad"))
            xt = f"{p}/x_q_padded"
        big = np.iinfo(np.int64).max
        cols = []
        for i in range(kh):
            for j in range(kw):
                col = f"{p}/tap_{i}_{j}"
                nodes.append(helper.make_node("Slice", [
                    xt, const(f"{col}/starts", np.array([i, j], np.int64)),
                    const(f"{col}/ends", np.array([i - kh + 1 or big, j - kw + 1 or big], np.int64)),
                    const(f"{col}/axes", np.array([1, 2], np.int64)),
                    const(f"{col}/steps", np.array([sh, sw], np.int64))], [col], name=col))
                cols.append(col)
        cat = f"{p}/columns"
        nodes.append(helper.make_node("Concat", cols, [cat], axis=3, name=cat))
        acc, acc_f, scale, y = f"{p}/acc", f"{p}/acc_float", f"{p}/scale", f"{p}/y"
        nodes += [helper.make_node("MatMulInteger", [cat, const(f"{p}/w_q", w_q), xz,
                                                     const(f"{p}/w_zero_point", np.zeros(c_out, np.int8))], [acc],
                                   name=f"{p}/matmul"),
                  helper.make_node("Cast", [acc], [acc_f], to=1, name=f"{p}/cast"),
                  helper.make_node("Mul", [xs, const(f"{p}/w_scale", w_scale)], [scale], name=f"{p}/scale"),
                  helper.make_node("Mul", [acc_f, scale], [y], name=f"{p}/rescale")]
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [y, node.input[2]], [f"{p}/biased"], name=f"{p}/bias"))
            y = f"{p}/biased"
        nodes.append(helper.make_node("Transpose", [y], [node.output[0]], perm=[0, 3, 1, 2], name=f"{p}/nchw"))
        replaced += 1
    if replaced:
        del g.node[:]
        g.node.extend(nodes)
        g.initializer.extend(added)
        used = {i for n in g.node for i in n.input}
        keep = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
    return replaced
