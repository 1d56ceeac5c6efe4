"""Export: ONNX graphs in sherpa-onnx's WeNet CTC interface (offline and streaming), int8 quantization, TensorRT
engines built from those graphs, and the cache of exports made on demand (:mod:`slimasr.export.cache`).

Names are imported on first use, so that ``slimasr.export.cache`` (used by torch-free commands) does not import
torch."""
from __future__ import annotations

import importlib

_NAMES = {"CONFIG_FILE": "onnx", "ExportConfig": "onnx", "UntrainedChunkSizeWarning": "onnx", "export_onnx": "onnx",
          "quantize_int8": "onnx", "read_metadata": "onnx", "TensorRTUnavailableError": "tensorrt",
          "build_engines": "tensorrt", "ExportKind": "cache", "cached_onnx_export": "cache", "exports_dir": "cache"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
