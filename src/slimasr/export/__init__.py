"""Export: ONNX graphs in sherpa-onnx's WeNet CTC interface (offline and streaming), int8 quantization, and
TensorRT engines built from those graphs."""
from .onnx import CONFIG_FILE, ExportConfig, UntrainedChunkSizeWarning, export_onnx, quantize_int8, read_metadata
from .tensorrt import TensorRTUnavailableError, build_engines

__all__ = ["CONFIG_FILE", "ExportConfig", "TensorRTUnavailableError", "UntrainedChunkSizeWarning", "build_engines",
           "export_onnx", "quantize_int8", "read_metadata"]
