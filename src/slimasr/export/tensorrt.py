"""TensorRT engines from a slimasr ONNX export (``slimasr export tensorrt``).

The engine is built from the float ``model.onnx`` of an export directory with the TensorRT Python API: the ONNX
parser, one optimization profile covering the dynamic axes, optionally FP16. ``tensorrt`` is imported only when a
build starts; it is the optional extra ``pip install 'slimasr[tensorrt]'`` and needs a CUDA GPU.

Output directory: ``model.engine`` (a serialized engine: valid only for the TensorRT version and GPU that built
it), ``slimasr_tensorrt.json`` (precision, the profile's min/opt/max shapes, TensorRT version, GPU name, source)
and copies of ``slimasr_export.json``, ``tokens.txt`` and ``tokenizer.model`` (the runtime reads chunking,
features and vocabulary from them, exactly as for the ONNX model).

Default profiles (override with trtexec-style shape strings, ``"x:1x1000x80,x_lens:1"``):

* offline: ``x`` (1, 7, 80) .. (1, 1000, 80) .. (8, 6000, 80), ``x_lens`` (1,) .. (1,) .. (8,) — up to 8 utterances
  of 60 s per call; longer audio needs a larger ``max`` (attention memory grows with the square of the length);
* streaming: shapes fixed to the export's chunk_size / left_chunks, except that ``x`` and ``attn_mask`` may be
  as short as one encoder frame (a stream's short last chunk, :mod:`slimasr.chunking`); the shape-tensor input
  ``required_cache_size`` gets the value chunk_size * left_chunks.

:data:`TRT_ONNX_SUPPORT` is the part of the ONNX-TensorRT operator support matrix (``docs/operators.md`` of
onnx/onnx-tensorrt, TensorRT 10.15, opsets 9 to 24) that covers the ops an export can contain, with the tensor
types each supports; :func:`check_tensorrt_compatibility` checks a graph against it before building.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..chunking import min_frames

__all__ = ["TRT_ONNX_SUPPORT", "TensorRTUnavailableError", "build_engines", "check_tensorrt_compatibility",
           "default_profile", "parse_shapes", "tensorrt_status"]

log = logging.getLogger(__name__)

ENGINE_FILE = "model.engine"
TRT_CONFIG_FILE = "slimasr_tensorrt.json"
TRT_OPSETS = (9, 24)
INSTALL_HINT = "pip install 'slimasr[tensorrt]'"

_FP = ("FP32", "FP16", "BF16")
_INT = ("INT32", "INT64")
_ALL = _FP + _INT + ("BOOL",)
# op type -> tensor types TensorRT 10.15 supports for it (onnx-tensorrt docs/operators.md, "Supported Types").
# Ops the doc marks "N" (e.g. MatMulInteger, ConvInteger, DynamicQuantizeLinear: the int8 ONNX model) are absent.
TRT_ONNX_SUPPORT: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in {
    "Abs": _FP + _INT, "Add": _FP + _INT, "And": ("BOOL",), "Cast": _ALL + ("UINT8",), "Concat": _ALL,
    "Constant": _ALL, "ConstantOfShape": _ALL, "Conv": _FP, "Cos": _FP, "Div": _FP + _INT, "Equal": _FP + _INT,
    "Erf": _FP, "Exp": _FP, "Expand": _ALL, "Flatten": _ALL, "Gather": _ALL, "Gemm": _FP, "Greater": _FP + _INT,
    "GreaterOrEqual": _FP + _INT, "Identity": _ALL, "LayerNormalization": _FP, "Less": _FP + _INT,
    "LessOrEqual": _FP + _INT, "Log": _FP, "LogSoftmax": _FP, "MatMul": _FP, "Max": _FP + _INT, "Min": _FP + _INT,
    "Mod": _FP + _INT, "Mul": _FP + _INT, "Neg": _FP + _INT, "Not": ("BOOL",), "Or": ("BOOL",), "Pad": _FP + _INT,
    "Pow": _FP + _INT, "Range": _FP + _INT, "Reciprocal": _FP, "ReduceMax": _FP + _INT, "ReduceMean": _FP + _INT,
    "ReduceSum": _FP + _INT, "Relu": _FP + _INT, "Reshape": _ALL, "Shape": _ALL, "Sigmoid": _FP, "Sin": _FP,
    "Slice": _ALL, "Softmax": _FP, "Split": _ALL, "Sqrt": _FP, "Squeeze": _ALL, "Sub": _FP + _INT,
    "Tanh": _FP, "Tile": _ALL, "Transpose": _ALL, "Unsqueeze": _ALL, "Where": _ALL, "Xor": ("BOOL",),
}.items()}
# which input carries the op's data type (the others are indices, shapes, axes or conditions)
_DATA_INPUT = {"Where": 1, "Range": 0, "ConstantOfShape": None, "Constant": None}
# ops whose axes input must be a build-time constant
_CONST_AXES = {"Squeeze": 1, "Unsqueeze": 1}


class TensorRTUnavailableError(RuntimeError, ValueError):
    """TensorRT or a CUDA GPU is missing (the message says which and how to get it)."""


def tensorrt_status() -> str | None:
    """None when engines can be built here, else why not (a message for the user)."""
    problems = []
    try:
        import torch

        if not torch.cuda.is_available():
            problems.append("no CUDA GPU is available (TensorRT engines are built and run on an NVIDIA GPU)")
    except ImportError:  # pragma: no cover - torch is a dependency
        problems.append("PyTorch is missing, so the GPU cannot be checked")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        problems.append(f"the TensorRT Python package is not installed ({INSTALL_HINT})")
    except Exception as e:  # a broken install (missing libnvinfer) raises OSError and friends
        problems.append(f"the TensorRT Python package does not load ({type(e).__name__}: {e}); reinstall it "
                        f"({INSTALL_HINT})")
    return "; ".join(problems) if problems else None


def _dtype_names(model) -> dict[str, str]:
    import onnx
    from onnx import shape_inference

    m = shape_inference.infer_shapes(model)
    names: dict[str, str] = {}
    short = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "DOUBLE": "FP64"}

    def put(name, elem_type):
        s = onnx.helper.tensor_dtype_to_string(elem_type).replace("TensorProto.", "")
        names[name] = short.get(s, s)

    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        if v.type.tensor_type.elem_type:
            put(v.name, v.type.tensor_type.elem_type)
    for t in m.graph.initializer:
        put(t.name, t.data_type)
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    put(n.output[0], a.t.data_type)
    return names


def check_tensorrt_compatibility(path: str | os.PathLike) -> list[str]:
    """Problems TensorRT's ONNX parser would have with the graph at ``path`` (empty list: none found).

    Checks every node against :data:`TRT_ONNX_SUPPORT` (op type and the type of its data tensors), the opset
    range, constant Squeeze/Unsqueeze axes and single-output LayerNormalization.
    """
    import onnx

    model = onnx.load(str(path))
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not TRT_OPSETS[0] <= opset <= TRT_OPSETS[1]:
        problems.append(f"opset {opset} is outside TensorRT's supported range {TRT_OPSETS[0]}..{TRT_OPSETS[1]}")
    types = _dtype_names(model)
    constants = {t.name for t in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    for n in model.graph.node:
        label = f"{n.op_type} node {n.name or n.output[0]!r}"
        if n.domain not in ("", "ai.onnx"):
            problems.append(f"{label}: custom domain {n.domain!r}")
            continue
        allowed = TRT_ONNX_SUPPORT.get(n.op_type)
        if allowed is None:
            problems.append(f"{label}: op type not supported by TensorRT's ONNX parser")
            continue
        idx = _DATA_INPUT.get(n.op_type, 0)
        tensors = list(n.output) if idx is None else [n.input[idx]] if len(n.input) > idx else []
        if n.op_type == "Cast":
            tensors = [n.input[0], n.output[0]]
        for t in tensors:
            ty = types.get(t)
            if ty is None:
                problems.append(f"{label}: type of {t!r} unknown (shape inference failed)")
            elif ty not in allowed:
                problems.append(f"{label}: {ty} tensor {t!r}; TensorRT supports {sorted(allowed)} for {n.op_type}")
        if n.op_type in _CONST_AXES and len(n.input) > _CONST_AXES[n.op_type]:
            if n.input[_CONST_AXES[n.op_type]] not in constants:
                problems.append(f"{label}: axes must be a constant")
        if n.op_type == "LayerNormalization" and len([o for o in n.output if o]) > 1:
            problems.append(f"{label}: only the first output (Y) is supported")
    return problems


# ---------------------------------------------------------------------------------------------- profiles
Shapes = dict[str, tuple[int, ...]]


def parse_shapes(spec: str | None) -> Shapes:
    """``"x:1x67x80,offset:1"`` -> {"x": (1, 67, 80), "offset": (1,)} (trtexec's --minShapes syntax)."""
    out: Shapes = {}
    if not spec:
        return out
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, dims = item.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = tuple(int(d) for d in dims.lower().split("x"))
            if any(d < 0 for d in out[name]):
                raise ValueError
        except ValueError:
            raise ValueError(f"bad shape {item!r}: expected name:AxBxC (e.g. x:1x1000x80)") from None
    return out


def default_profile(export_config: dict) -> tuple[Shapes, Shapes, Shapes]:
    """(min, opt, max) input shapes for an export described by its ``slimasr_export.json``."""
    c = export_config
    mel = c["num_mel_bins"]
    if c["kind"] == "offline":
        lo = {"x": (1, 7, mel), "x_lens": (1,)}
        opt = {"x": (1, 1000, mel), "x_lens": (1,)}
        hi = {"x": (8, 6000, mel), "x_lens": (8,)}
        return lo, opt, hi
    cache = c["required_cache_size"]
    fixed = {
        "x": (1, c["window"], mel),
        "offset": (1,),
        "required_cache_size": (1,),
        "attn_cache": (c["num_layers"], c["num_heads"], cache, 2 * c["head_dim"]),
        "conv_cache": (c["num_layers"], 1, c["d_model"], c["conv_cache_frames"]),
        "attn_mask": (1, 1, cache + c["chunk_size"]),
    }
    # the last chunk of a stream may be short (slimasr.chunking): down to one encoder frame
    lo = {**fixed, "x": (1, min_frames(c["right_context"]), mel), "attn_mask": (1, 1, cache + 1)}
    return lo, dict(fixed), dict(fixed)


def _read_export(onnx_dir: Path) -> dict:
    from .onnx import CONFIG_FILE, EXPORT_FORMAT

    cfg_path = onnx_dir / CONFIG_FILE
    if not onnx_dir.is_dir():
        raise ValueError(f"ONNX export directory {onnx_dir} does not exist (make one with `slimasr export onnx`)")
    if not cfg_path.is_file():
        raise ValueError(f"{onnx_dir} is not a slimasr ONNX export: {CONFIG_FILE} is missing")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_path} is unreadable: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{cfg_path} is not a slimasr export description (format != {EXPORT_FORMAT!r})")
    model = onnx_dir / (cfg.get("files") or {}).get("model", "model.onnx")
    if not model.is_file():
        raise ValueError(f"{model} is missing: TensorRT engines are built from the float ONNX model")
    return cfg


def build_engines(onnx_dir: str | os.PathLike, out_dir: str | os.PathLike, fp16: bool = False,
                  min_shapes: Shapes | str | None = None, opt_shapes: Shapes | str | None = None,
                  max_shapes: Shapes | str | None = None, workspace_gib: float = 4.0,
                  force: bool = False) -> dict[str, Path]:
    """Build a TensorRT engine from the ONNX export in ``onnx_dir`` (see the module docstring).

    Args:
        onnx_dir: an output directory of :func:`slimasr.export.export_onnx`.
        out_dir: created; must not exist or be empty unless ``force``.
        fp16: allow FP16 kernels (LayerNorm is kept in FP32).
        min_shapes, opt_shapes, max_shapes: override the default profile per input (dicts or shape strings).
        workspace_gib: builder workspace limit.
    Returns:
        {"engine", "config", "export_config", "tokens"[, "tokenizer"]} -> written paths.
    Raises:
        ValueError: not an export directory, bad shapes, an existing output directory, or a graph with ops
            TensorRT does not support.
        TensorRTUnavailableError: no TensorRT package or no CUDA GPU.
    """
    from .onnx import CONFIG_FILE, TOKENIZER_FILE, TOKENS_FILE

    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    cfg = _read_export(onnx_dir)
    model_path = onnx_dir / (cfg.get("files") or {}).get("model", "model.onnx")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise ValueError(f"output directory {out_dir} already exists; choose another or pass force=True (--force)")
    lo, opt, hi = default_profile(cfg)
    for base, extra in ((lo, min_shapes), (opt, opt_shapes), (hi, max_shapes)):
        extra = parse_shapes(extra) if isinstance(extra, str) or extra is None else extra
        unknown = set(extra) - set(base)
        if unknown:
            raise ValueError(f"unknown input(s) {sorted(unknown)} in the shapes; the model's inputs are "
                             f"{sorted(base)}")
        base.update({k: tuple(v) for k, v in extra.items()})
    for name in lo:
        if not (len(lo[name]) == len(opt[name]) == len(hi[name])
                and all(a <= b <= c for a, b, c in zip(lo[name], opt[name], hi[name]))):
            raise ValueError(f"input {name}: need min <= opt <= max in every dimension, got {lo[name]}, "
                             f"{opt[name]}, {hi[name]}")
    problems = check_tensorrt_compatibility(model_path)
    if problems:
        raise ValueError(f"{model_path} has constructs TensorRT cannot parse:\n  " + "\n  ".join(problems))
    why = tensorrt_status()
    if why:
        raise TensorRTUnavailableError(f"cannot build TensorRT engines here: {why}")

    engine_bytes, info = _build(model_path, lo, opt, hi, fp16, workspace_gib)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / ENGINE_FILE).write_bytes(engine_bytes)
        files = {"engine": ENGINE_FILE, "config": TRT_CONFIG_FILE, "export_config": CONFIG_FILE,
                 "tokens": TOKENS_FILE}
        for name in (CONFIG_FILE, TOKENS_FILE, TOKENIZER_FILE):
            if (onnx_dir / name).is_file():
                shutil.copy2(onnx_dir / name, tmp / name)
        if (tmp / TOKENIZER_FILE).is_file():
            files["tokenizer"] = TOKENIZER_FILE
        desc = {
            "format": "slimasr-tensorrt", "format_version": 1, "kind": cfg["kind"], "source": str(model_path),
            "precision": "fp16" if fp16 else "fp32", "engine": ENGINE_FILE,
            "profile": {"min": {k: list(v) for k, v in lo.items()}, "opt": {k: list(v) for k, v in opt.items()},
                        "max": {k: list(v) for k, v in hi.items()}},
            **info,
        }
        (tmp / TRT_CONFIG_FILE).write_text(json.dumps(desc, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            for p in tmp.iterdir():
                os.replace(p, out_dir / p.name)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: out_dir / v for k, v in files.items()}


def _build(model_path: Path, lo: Shapes, opt: Shapes, hi: Shapes, fp16: bool, workspace_gib: float):
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):     # TensorRT < 10 needs it
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ValueError(f"TensorRT could not parse {model_path}:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not fp16 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)        # fp32 means fp32: TF32 matmuls would cost ~1e-3 accuracy
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        # LayerNorm statistics overflow in FP16: keep normalization layers in FP32
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.NORMALIZATION:
                layer.precision = trt.float32
                layer.set_output_type(0, trt.float32)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if t.name not in lo:
            raise ValueError(f"the engine has an input {t.name!r} that the profile does not cover")
        if t.is_shape_tensor:
            # required_cache_size: its value (not its shape) sets the cache length
            vals = [(s["attn_cache"][2],) if "attn_cache" in s else s[t.name] for s in (lo, opt, hi)]
            profile.set_shape_input(t.name, *vals)
        profile.set_shape(t.name, lo[t.name], opt[t.name], hi[t.name])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"TensorRT failed to build an engine from {model_path} (see the log above)")
    info = {"tensorrt_version": trt.__version__, "gpu": torch.cuda.get_device_name(0)}
    return bytes(serialized), info


class TensorRTRunner:
    """Run a built engine on torch CUDA tensors: ``runner(**inputs) -> dict of outputs`` (numpy in, numpy out)."""

    def __init__(self, engine_path: str | os.PathLike):
        import tensorrt as trt

        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ValueError(f"{engine_path} is not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def __call__(self, **feeds):
        import numpy as np
        import torch

        trt = self._trt
        keep = []
        for name in self.inputs:
            a = np.ascontiguousarray(feeds[name])
            if self.engine.is_shape_inference_io(name):
                t = torch.from_numpy(a.copy())                            # shape tensors live in host memory
            else:
                t = torch.from_numpy(a.copy()).cuda()
            self.context.set_input_shape(name, tuple(a.shape))
            self.context.set_tensor_address(name, t.data_ptr())
            keep.append(t)
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            outs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outs.items()}
