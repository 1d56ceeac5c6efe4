"""int8 weight quantization of an exported ONNX model: dynamic or calibrated, per-tensor or per-channel.

Wraps onnxruntime's quantization tool (``onnxruntime.quantization.quantize_dynamic`` / ``quantize_static``,
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):

* ``dynamic``: int8 weights, activations quantized per call from their observed range (``DynamicQuantizeLinear``
  -> ``MatMulInteger``); no data needed. With ``per_channel`` each output column of a weight matrix gets its own
  scale (``axis`` = the output features), which keeps small-magnitude columns from being rounded away.
* ``static`` (calibrated): activation ranges fixed from calibration features (``QDQ`` format, int8 activations
  and weights); needs a few utterances of features through :class:`FeatureReader`.

The file written keeps the export's metadata (the runtime reads it unchanged) and adds
``slimasr_int8_op_types``, ``slimasr_int8_method`` and ``slimasr_int8_per_channel``.

Example::

    from slimasr.export.quantize import QuantizeConfig, quantize
    quantize("exp/onnx/model.onnx", "exp/onnx/model.int8.onnx", QuantizeConfig(per_channel=True))
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .onnx import INT8_OP_TYPES, QUANTIZABLE_OP_TYPES, _DropRecords, _set_metadata, read_metadata

__all__ = ["FeatureReader", "QuantizeConfig", "quantize"]

METHODS = ("dynamic", "static")


@dataclass(frozen=True)
class QuantizeConfig:
    """How :func:`quantize` turns weights into int8."""

    method: str = "dynamic"                        # dynamic | static (calibrated activation ranges)
    per_channel: bool = True                       # one scale per output channel instead of one per tensor
    op_types: tuple[str, ...] = INT8_OP_TYPES      # op types whose weights are quantized (MatMul: every Linear)
    reduce_range: bool = False                     # 7-bit weights (for CPUs without VNNI, where u8s8 overflows)

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
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ValueError(f"{src}: no such ONNX model")
    meta = read_metadata(src)
    root = logging.getLogger()                   # onnxruntime.quantization warns there about optional pre-processing
    hint = _DropRecords("pre-processing before quantization")
    root.addFilter(hint)
    try:
        if config.method == "dynamic":
            quantize_dynamic(model_input=str(src), model_output=str(dst), op_types_to_quantize=list(config.op_types),
                             per_channel=config.per_channel, reduce_range=config.reduce_range,
                             weight_type=QuantType.QInt8)
        else:
            if meta.get("slimasr_kind") == "streaming":
                raise ValueError(f"{src}: static quantization calibrates the offline graph; this is a streaming "
                                 "export (use method='dynamic')")
            if not calibration:
                raise ValueError("static quantization needs calibration features")
            quantize_static(model_input=str(src), model_output=str(dst), calibration_data_reader=FeatureReader(
                calibration), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(config.op_types),
                per_channel=config.per_channel, reduce_range=config.reduce_range,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)
    finally:
        root.removeFilter(hint)
    meta = read_metadata(dst)
    meta.update(slimasr_int8_op_types=",".join(config.op_types), slimasr_int8_method=config.method,
                slimasr_int8_per_channel=str(int(config.per_channel)))
    _set_metadata(dst, meta)
    return dst
