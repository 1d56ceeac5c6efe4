"""onnxruntime sessions for slimasr exports: execution providers (CPU, CUDA, TensorRT), thread settings, and
TensorRT engine directories. Torch-free; used by :mod:`slimasr.runtime.recognizer`.

**Providers.** ``provider="cuda"`` / ``"tensorrt"`` use onnxruntime's CUDA / TensorRT execution providers; a
TensorRT engine directory (``model.engine`` from :mod:`slimasr.export.tensorrt`) is run through onnxruntime's
TensorRT provider, the engine wrapped in its ``EPContext`` node (``com.microsoft``, embed_mode 1; onnxruntime's
``TensorRT Execution Provider`` documentation, "EP context"). When a provider cannot start (no GPU, missing
CUDA/TensorRT libraries), a warning says so and the next one runs (an engine falls back to the ONNX model it was
built from).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileutil import exception_line

__all__ = ["EXPORT_CONFIG_FILE", "PROVIDERS", "SessionConfig", "create_session", "engine_min_frames",
           "engine_session", "engine_wrapper", "resolve_model_file", "trt_profile"]

log = logging.getLogger(__name__)

EXPORT_CONFIG_FILE = "slimasr_export.json"
TRT_ENGINE_FILE = "model.engine"           # written by slimasr.export.tensorrt.build_engines
TRT_CONFIG_FILE = "slimasr_tensorrt.json"
PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


@dataclass(frozen=True)
class SessionConfig:
    """How an onnxruntime session is created (the session part of ``RecognizerConfig``)."""

    num_threads: int = 1              # onnxruntime intra-op threads per session
    provider: str = "cpu"             # "cpu" | "cuda" | "tensorrt" (falls back, with a warning, when unavailable)
    spin_threads: bool = False        # worker threads busy-wait between ops (see RecognizerConfig)
    trt_fp16: bool = False            # TensorRT: allow fp16 kernels
    trt_cache_dir: str | None = None  # TensorRT engine cache (default: <export>/trt_cache, else the user cache)

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}")
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {self.num_threads!r}")


def trt_profile(export_dir: Path, resolve=None) -> str | None:
    """TensorRT optimisation profile (min;opt;max shapes) of a streaming graph, from ``slimasr_export.json``: full
    chunks, and as little as one encoder frame for a stream's short last chunk. ``resolve`` maps the export's
    :class:`slimasr.chunking.Chunking` to the one that will run (default: the export's)."""
    f = export_dir / EXPORT_CONFIG_FILE
    if not f.is_file():
        return None
    e = json.loads(f.read_text(encoding="utf-8"))
    if e.get("kind") != "streaming":
        return None
    from ..chunking import Chunking

    chunking = Chunking(chunk_size=e["chunk_size"], left_chunks=e["left_chunks"],
                        subsampling_factor=e["subsampling_factor"], right_context=e["right_context"])
    if resolve is not None:
        chunking = resolve(chunking)
    cache, layers, heads, mel = chunking.cache_frames, e["num_layers"], e["num_heads"], e["num_mel_bins"]

    def shapes(window: int, chunk: int) -> str:
        return (f"x:1x{window}x{mel},attn_cache:{layers}x{heads}x{cache}x{2 * e['head_dim']},"
                f"attn_mask:1x1x{cache + chunk}")

    full = shapes(chunking.window, chunking.chunk_size)
    return ";".join((shapes(chunking.min_frames, 1), full, full))


def engine_min_frames(engine: Path) -> int | None:
    """The fewest feature frames (``x`` time axis) a streaming TensorRT engine's profile admits, from
    ``slimasr_tensorrt.json`` next to it (None when not recorded)."""
    f = engine.parent / TRT_CONFIG_FILE
    if not f.is_file():
        return None
    lo = (json.loads(f.read_text(encoding="utf-8")).get("profile") or {}).get("min") or {}
    return int(lo["x"][1]) if "x" in lo else None


def resolve_model_file(path: Path, int8: bool) -> Path:
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


def _trt_cache_dir(model_file: Path, configured: str | None) -> Path:
    if configured:
        d = Path(configured)
    else:
        d = model_file.parent / "trt_cache"
        if not os.access(model_file.parent, os.W_OK):
            import hashlib

            key = hashlib.sha1(str(model_file.resolve()).encode()).hexdigest()[:16]
            from ..fileutil import cache_dir

            d = cache_dir() / "trt" / key
    d.mkdir(parents=True, exist_ok=True)
    return d


def _session_options(cfg: SessionConfig):
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


def metadata_from_export(e: dict) -> dict[str, str]:
    """The ONNX metadata keys the runtime reads, rebuilt from ``slimasr_export.json``."""
    meta = {"model_type": "wenet_ctc", "slimasr_kind": e["kind"], "vocab_size": e["vocab_size"],
            "slimasr_num_layers": e["num_layers"], "head": e["num_heads"], "slimasr_head_dim": e["head_dim"],
            "slimasr_d_model": e["d_model"], "slimasr_conv_cache_frames": e["conv_cache_frames"],
            "subsampling_factor": e["subsampling_factor"], "right_context": e["right_context"],
            "chunk_size": e.get("chunk_size") or "", "left_chunks": e.get("left_chunks") or "",
            "slimasr_window": e.get("window") or "", "slimasr_shift": e.get("shift") or "",
            "slimasr_required_cache_size": e.get("required_cache_size") or "",
            "slimasr_frontend": json.dumps(e["frontend"]),
            "slimasr_original_layers": json.dumps(e.get("original_layers"))}
    return {k: str(v) for k, v in meta.items()}


def engine_wrapper(engine: Path, export: dict) -> bytes:
    """An ONNX model whose only node is onnxruntime's ``com.microsoft::EPContext`` holding the TensorRT engine
    (embed_mode 1), with the export's inputs and outputs: how onnxruntime's TensorRT provider runs a prebuilt
    engine. The runtime's metadata keys are attached (see :func:`metadata_from_export`)."""
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
    for k, v in metadata_from_export(export).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model.SerializeToString()


def engine_session(engine: Path, cfg: SessionConfig, profile: str | None):
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
            sess = ort.InferenceSession(engine_wrapper(engine, export), _session_options(cfg),
                                        providers=[("TensorrtExecutionProvider", {"trt_fp16_enable": cfg.trt_fp16})])
            if sess.get_providers()[0] == "TensorrtExecutionProvider":
                return sess, engine
            reason = "onnxruntime could not start its TensorRT provider"
        except Exception as e:  # onnxruntime's own exception types
            msg = exception_line(e)
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
    return create_session(source, cfg, profile), source


def create_session(model_file: Path, cfg: SessionConfig, profile: str | None):
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
            if profile:
                lo, opt, hi = profile.split(";")
                opts.update(trt_profile_min_shapes=lo, trt_profile_opt_shapes=opt, trt_profile_max_shapes=hi)
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
