"""Benchmark runs: one (model, backend, mode, decoder) at a time, each measured in its own process.

A run decodes every utterance of a manifest and reports accuracy (WER, CER with jiwer), speed and memory. Each run
is a fresh ``python -m slimasr.bench.runner`` process, so its peak RSS (``VmHWM``, see :func:`_peak_rss_mb`) is
its own: the libraries it imports, the model, the audio and the decoding. The torch backend's peak therefore includes PyTorch itself.
Before timing, ``warmup`` utterances are decoded once (not counted).

**Backends** (see :mod:`slimasr.decoding`, whose loop every run times: the loop ``slimasr decode`` runs):
``torch`` (eager PyTorch: ``ASRModel.ctc_log_probs`` / ``stream_step``), ``onnx`` and ``onnx-int8`` (the
torch-free :class:`slimasr.runtime.Recognizer` on ``model.onnx`` / ``model.int8.onnx``), ``sherpa-onnx`` and
``sherpa-onnx-int8`` (sherpa-onnx's C++ runtime on the same files, greedy only) and ``tensorrt`` (the runtime on a
TensorRT engine; needs a CUDA GPU, skipped with the reason otherwise). An utterance that cannot be read or decoded
(e.g. shorter than one encoder frame, 65 ms) is skipped and named in the run's ``skipped_items``; the run goes on.

**Modes**:

* ``offline``: each utterance whole (batch 1). Latency = an utterance's compute time (features, encoder,
  search). Throughput = audio seconds per compute second (1 / RTF) and utterances per second.
* ``chunked``: each utterance streamed in pieces of ``feed_ms`` (100 ms) in *simulated real time*: piece ``i``
  arrives at ``(i + 1) * feed_ms``; its processing starts when both it and the previous piece's processing are
  done. Per-chunk compute is the time of the calls that ran a chunk (feature extraction of the piece included).
  First-partial latency: from the start of the audio to the first non-empty partial result. Final latency:
  from the end of the audio to the final result (the tail chunks, and beam search when configured). The end of
  a stream follows :mod:`slimasr.chunking`: the torch and runtime backends run the remaining frames as a short
  last chunk; sherpa-onnx, which cannot, is fed its examples' 0.66 s of trailing zeros.

**Time split**: ``features_s`` (fbank), ``encoder_s`` (the network) and ``search_s`` (beam search; greedy
decoding is counted in the encoder part, it is an argmax). The torch backend times each part directly. For the
runtime offline, fbank is timed separately on the same audio and subtracted; with beam search the same export
also runs with greedy decoding on every utterance (interleaved, not counted in the run's compute) and
``search_s`` is the difference. Chunked, beam search runs once over the stream's log-probabilities at the end
(what the recognizer does), timed alone.

Every process gets ``threads`` as ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` and, unless
the environment sets it, ``OMP_WAIT_POLICY=PASSIVE`` (see :data:`OMP_WAIT_POLICY`). **Thread policy**: sherpa-onnx
leaves onnxruntime's worker threads spinning between operators (onnxruntime's default); our runtime's default is
not to spin (robust on shared cores), ``spin_threads=True`` runs it as sherpa-onnx does. Each run records its
policy (``spin_threads``); the comparison with sherpa-onnx is made at the same policy where such a run exists.
The subprocess protocol (``python -m slimasr.bench.runner SPEC.json OUT.json``) is internal to the benchmark.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..decoding import BackendConfig
from ..fileutil import file_sha256
from ..runtime.decoders import METHODS, DecodingConfig

__all__ = ["BACKENDS", "DECODERS", "MODES", "ModelSpec", "RunSpec", "aggregate", "execute", "load_rows",
           "machine_info", "plan_runs", "run_benchmark", "run_subprocess"]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8", "sherpa-onnx", "sherpa-onnx-int8", "tensorrt")
MODES = ("offline", "chunked")
DECODERS = METHODS
SAMPLE_RATE = 16000
# ModelConfig fields that layer removal keeps: two runs' models can be one and its pruned version only when these
# (and the front-end's kind) are equal (``report._pruned_from``).
ARCHITECTURE_FIELDS = ("d_model", "num_heads", "ffn_dim", "kernel_size", "vocab_size", "num_mel_bins", "subsampling",
                       "subsampling_channels", "pos_enc", "causal_conv", "conv_norm")
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# OpenMP threads (PyTorch's) sleep while they wait instead of spinning, unless the environment says otherwise: on a
# machine shared with other work, spinning threads that lose their core make 2-thread PyTorch several times slower.
OMP_WAIT_POLICY = "PASSIVE"


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run (``kind="floor"``: the GEMM floor measurement of one model and mode instead)."""

    model: str                          # label shown in the tables
    model_path: str | None              # slimasr model file (.pt); None = the embedded default model
    backend: str = "torch"
    mode: str = "offline"
    decoder: str = "greedy"
    data: str = ""                      # manifest (JSON lines)
    limit: int | None = None            # first N utterances after sorting by audio_filepath
    threads: int = BackendConfig.threads
    spin_threads: bool = False          # onnx backends: onnxruntime's worker threads busy-wait between operators
                                        # (onnxruntime's default, and what sherpa-onnx runs with); the runtime's
                                        # default is off (see RecognizerConfig.spin_threads)
    lm: str | None = None               # KenLM model for beam search
    beam_size: int = DecodingConfig.beam_size
    lm_weight: float = DecodingConfig.lm_weight
    word_score: float = DecodingConfig.word_score
    chunk_size: int = 16                # encoder frames per chunk (chunked mode)
    left_chunks: int = 4
    hop: int | None = None              # encoder frames between chunk starts (onnx backends); None = chunk_size
    feed_ms: int = 100                  # audio piece size in chunked mode
    warmup: int = 2                     # utterances decoded before timing
    export_dir: str | None = None       # the ONNX export (offline or streaming, as the mode needs)
    engine_dir: str | None = None       # the TensorRT engine directory (tensorrt backend)
    device: str = BackendConfig.device  # torch backend: cpu | cuda
    shard: int = 0                      # this process decodes utterances shard, shard + shards, ...
    shards: int = 1
    kind: str = "run"                   # run | floor
    floor_configs: dict | None = None   # floor: label -> ModelConfig dict of the models to measure
    floor_modes: tuple[str, ...] = ()   # floor: the modes to measure
    floor_min_time: float = 0.01        # floor: seconds each GEMM shape is timed for (best of 7)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.lm is not None and self.decoder != "beam":
            raise ValueError("an LM is only used by the beam decoder")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not 0 <= self.shard < self.shards:
            raise ValueError(f"need 0 <= shard < shards, got {self.shard}, {self.shards}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- helpers
def load_rows(manifest: str | os.PathLike, limit: int | None = None, skipped: list | None = None) -> list[dict]:
    """The manifest's rows sorted by ``audio_filepath`` (a fixed order), the first ``limit`` of them.

    ``skipped``: collect malformed rows here instead of failing (:func:`slimasr.data.manifest.read_manifest`).

    Raises:
        ValueError: the manifest is missing, has no usable row, or (without ``skipped``) has a malformed row.
    """
    from ..data.manifest import no_utterances, read_manifest

    rows = sorted(read_manifest(manifest, skipped=skipped), key=lambda r: r["audio_filepath"])
    if not rows:
        raise no_utterances(manifest, skipped or ())
    return rows[:limit] if limit else rows


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty elsewhere)."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.split("\n\n")[0].splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


def _cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpu_detail() -> str:
    """Vendor, family / model numbers, vector extensions and whether it is a virtual machine."""
    info = _cpuinfo()
    if not info:
        return platform.machine()
    flags = set(info.get("flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    parts = [info.get("vendor_id", ""), f"family {info.get('cpu family', '?')} model {info.get('model', '?')}",
             "+".join(simd)]
    if "hypervisor" in flags:
        parts.append("virtual machine")
    return ", ".join(p for p in parts if p)


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine_info() -> dict:
    """CPU model, cores, memory, OS, GPU and the versions of the libraries the backends use."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    mem = None
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    return {
        "cpu_model": _cpu_model(),
        "cpu_detail": _cpu_detail(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpu": _gpu_name(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": {p: _version(p) for p in ("slimasr", "torch", "onnxruntime", "onnxruntime-gpu", "sherpa-onnx",
                                              "numpy", "pyctcdecode", "kenlm", "tensorrt")},
    }


def _percentiles(values: Sequence[float], scale: float = 1000.0) -> tuple[float | None, float | None]:
    import numpy as np

    if not len(values):
        return None, None
    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95])
    return float(p50) * scale, float(p95) * scale


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    On Linux this is ``VmHWM`` of /proc/self/status: ``ru_maxrss`` would do, but it survives ``exec`` and so
    starts at the peak of the parent that spawned the process (the benchmark's parent holds PyTorch and the
    models). Elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0                       # kB
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0     # bytes on macOS, KiB elsewhere


def _decoding_config(spec: RunSpec) -> DecodingConfig:
    if spec.decoder == "greedy":
        return DecodingConfig()
    return DecodingConfig(method="beam", beam_size=spec.beam_size, lm=spec.lm, lm_weight=spec.lm_weight,
                          word_score=spec.word_score)


# ---------------------------------------------------------------------------------------------- measuring
def backend_config(spec: RunSpec):
    """The :class:`slimasr.decoding.BackendConfig` a run decodes with (the loop ``slimasr decode`` runs)."""
    from ..decoding import BackendConfig

    chunked = spec.mode == "chunked"
    return BackendConfig(backend=spec.backend, chunk_size=spec.chunk_size if chunked else None,
                         left_chunks=spec.left_chunks if chunked else None, hop=spec.hop if chunked else None,
                         decoding=_decoding_config(spec),
                         threads=spec.threads, device=spec.device, spin_threads=spec.spin_threads, time_search=True)


def execute(spec: RunSpec) -> dict:
    """Run ``spec`` in this process: per-utterance measurements of its shard and the process's peak RSS (see
    :func:`aggregate` for the totals, :func:`run_subprocess` for running it in a fresh process).

    Every utterance goes through :func:`slimasr.decoding.decode_rows`, the loop ``slimasr decode`` runs; one that
    cannot be read or decoded is skipped and named in ``skipped_items``.

    Raises:
        ValueError: no utterance of the shard could be decoded.
    """
    if spec.kind == "floor":
        return _execute_floor(spec)
    from ..decoding import SkippedItem, decode_rows, open_backend, read_waves
    from ..scoring import normalize_for_scoring

    bad: list = []                         # malformed manifest rows: skipped and named, as unreadable audio is
    rows = load_rows(spec.data, spec.limit, skipped=bad)[spec.shard::spec.shards]
    waves = read_waves(rows)
    rss_data = _peak_rss_mb()
    t_load = time.perf_counter()
    where = spec.model_path if spec.backend == "torch" else (
        spec.engine_dir if spec.backend == "tensorrt" else spec.export_dir)
    if spec.backend != "torch" and not where:
        raise ValueError(f"backend {spec.backend} needs an export directory")
    backend = open_backend(where, backend_config(spec))
    load_s = time.perf_counter() - t_load
    feed = max(1, int(spec.feed_ms * SAMPLE_RATE / 1000)) if spec.mode == "chunked" else None
    load_avg = os.getloadavg()
    report = decode_rows(backend, rows, feed=feed, warmup=spec.warmup, waves=waves)
    if spec.shard == 0:                    # named once per run, not once per round
        report.skipped[:0] = SkippedItem.malformed_rows(bad)
    if not report.utterances:
        why = "; ".join(f"{s.item}: {s.reason}" for s in report.skipped[:3])
        raise ValueError(f"no utterance could be decoded ({len(report.skipped)} skipped: {why})")
    utts = [{**{k: v for k, v in u.items() if k not in ("text", "speaker", "reference")},
             "reference": normalize_for_scoring(u["reference"]), "hypothesis": normalize_for_scoring(u["text"])}
            for u in report.utterances]
    return {"utts": utts, "skipped_items": [s.to_dict() for s in report.skipped], "peak_rss_mb": _peak_rss_mb(),
            "peak_rss_before_model_mb": rss_data, "model_load_s": load_s, "model_file": backend.model_file.name,
            "model_file_mb": backend.model_file.stat().st_size / 1e6, "gpu_memory_mb": backend.gpu_memory(),
            "load_average": [round(x, 2) for x in load_avg], "frame_ms": backend.frame_seconds * 1000.0}


def aggregate(spec: RunSpec, parts: Sequence[dict]) -> dict:
    """Totals of a run from its processes' results (one per round): WER/CER over all utterances (jiwer), RTF,
    percentiles, the largest peak RSS."""
    from ..scoring import error_rates

    utts = sorted((u for p in parts for u in p["utts"]), key=lambda u: u["audio_filepath"])
    skipped = sorted((x for p in parts for x in p.get("skipped_items", [])), key=lambda x: x["audio_filepath"])
    audio_s = sum(u["audio_s"] for u in utts)
    compute = sum(u["compute"] for u in utts)
    rates = error_rates([u["reference"] for u in utts], [u["hypothesis"] for u in utts])
    out = {
        "utterances": len(utts), "audio_s": audio_s, "wer": rates["wer"], "cer": rates["cer"],
        "compute_s": compute, "rtf": compute / audio_s, "throughput_x_realtime": audio_s / compute,
        "throughput_utt_per_s": len(utts) / compute,
        "search_rtf": sum(u.get("search") or 0.0 for u in utts) / audio_s if spec.decoder == "beam" else 0.0,
        "model_file": parts[0]["model_file"], "model_file_mb": parts[0]["model_file_mb"],
        "model_load_s": max(p["model_load_s"] for p in parts),
        "peak_rss_mb": max(p["peak_rss_mb"] for p in parts),
        "peak_rss_before_model_mb": max(p["peak_rss_before_model_mb"] for p in parts),
        "gpu_memory_mb": max((p["gpu_memory_mb"] for p in parts if p.get("gpu_memory_mb")), default=None),
        "processes": len(parts), "load_average_1min": [p["load_average"][0] for p in parts],
        "skipped_utterances": len(skipped), "skipped_items": skipped,
    }
    if spec.mode == "offline":
        out["latency_p50_ms"], out["latency_p95_ms"] = _percentiles([u["compute"] for u in utts])
        if all(u.get("features") is not None for u in utts):
            out["features_rtf"] = sum(u["features"] for u in utts) / audio_s
            out["encoder_rtf"] = sum(u["encoder"] for u in utts) / audio_s
    else:
        chunk_times = [t for u in utts for t in u["chunk_times"]]
        out["chunk_ms"] = spec.chunk_size * parts[0].get("frame_ms", 40.0)     # encoder frames: 40 ms at 4x
        out["chunks"] = len(chunk_times)
        out["chunk_p50_ms"], out["chunk_p95_ms"] = _percentiles(chunk_times)
        fp = [u["first_partial"] for u in utts if u["first_partial"] is not None]
        out["first_partial_p50_ms"], out["first_partial_p95_ms"] = _percentiles(fp)
        out["final_latency_p50_ms"], out["final_latency_p95_ms"] = _percentiles([u["final_latency"] for u in utts])
    out["hypotheses"] = [{k: u[k] for k in ("audio_filepath", "reference", "hypothesis")} for u in utts]
    return out


def _execute_floor(spec: RunSpec) -> dict:
    """Floors of several models (``floor_configs``: label -> ModelConfig dict) in ``floor_modes``, each distinct
    matrix shape timed once, so models that share shapes are compared on the same timings. The chunked floor
    models the streaming graph's fixed windows: a model that has no streaming export has no chunked floor."""
    from ..model.config import ModelConfig
    from .flops import measure_floor

    durations = [r["duration"] for r in load_rows(spec.data, spec.limit, skipped=[])]
    cache: dict = {}
    out: dict = {}
    for label, cfg in (spec.floor_configs or {}).items():
        cfg = ModelConfig.from_dict(cfg)
        out[label] = {mode: measure_floor(cfg, mode, spec.threads, durations if mode == "offline" else (),
                                          spec.chunk_size, spec.left_chunks, min_time=spec.floor_min_time,
                                          cache=cache, hop=spec.hop)
                      for mode in spec.floor_modes if mode == "offline" or not cfg.streaming_refusal(onnx=True)}
    return out


def _error_line(lines: Sequence[str]) -> str:
    """The line of a child's output that says what went wrong: its ``error:`` line, else the exception line
    that ends a traceback, else its last line."""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if not line.startswith(" ") and (head.endswith("Error") or head.endswith("Exception")):
            return line
    return lines[-1] if lines else "no output"


def run_subprocess(spec: RunSpec, timeout: float | None = None) -> dict:
    """Run ``spec`` in a fresh Python process with ``threads`` threads for every thread pool.

    Raises:
        RuntimeError: the child failed (the message ends with its last lines of output).
    """
    env = dict(os.environ)
    for k in _THREAD_ENV:
        env[k] = str(spec.threads)
    env.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    with tempfile.TemporaryDirectory(prefix="slimasr-bench-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "slimasr.bench.runner", str(spec_file), str(out_file)],
                              env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out_file.is_file():
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(f"{spec.model} / {spec.backend} / {spec.mode} / {spec.decoder} failed "
                               f"(exit {proc.returncode}): {_error_line(lines)}\n" + "\n".join(lines[-15:]))
        return json.loads(out_file.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- orchestration
@dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark: a label for the tables and a slimasr model file (None = the embedded default)."""

    label: str
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        """``LABEL=PATH``, ``PATH`` (label: the file name without suffix) or ``default`` (the embedded model)."""
        label, sep, path = text.rpartition("=")
        if not sep:
            label, path = "", text
        if not path:
            raise ValueError(f"model {text!r}: expected PATH, LABEL=PATH or 'default'")
        if path == "default":
            return cls(label or "default", None)
        return cls(label or Path(path).stem, path)


def plan_runs(models: Sequence[ModelSpec], backends: Sequence[str], modes: Sequence[str],
              decoders: Sequence[str] = ("greedy",), spin: Sequence[bool] = (False,), **common) -> list[RunSpec]:
    """Every combination of model, backend, mode and decoder (models outermost), with the ``common`` RunSpec
    fields (data, threads, lm, chunking, ...). An ``lm`` applies to the beam runs only. ``spin``: the thread
    policies the onnx backends run with (``(False, True)``: each onnx configuration both ways)."""
    lm = common.pop("lm", None)
    if not spin:
        raise ValueError("spin needs at least one thread policy")
    return [RunSpec(model=m.label, model_path=m.path, backend=b, mode=mo, decoder=d,
                    lm=lm if d == "beam" else None, spin_threads=sp, **common)
            for m in models for b in backends for mo in modes for d in decoders
            for sp in (dict.fromkeys(spin) if b in ("onnx", "onnx-int8") else (False,))]


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "model"


def _spins(spec: RunSpec) -> bool:
    """Whether the run's worker threads busy-wait between operators: sherpa-onnx leaves onnxruntime's default
    (spinning) on; our runtime spins when asked; PyTorch's OpenMP threads follow ``OMP_WAIT_POLICY``."""
    if spec.backend.startswith("sherpa-onnx"):
        return True
    if spec.backend == "torch":
        return os.environ.get("OMP_WAIT_POLICY", OMP_WAIT_POLICY).upper() == "ACTIVE"
    return spec.spin_threads


def _skip_reason(spec: RunSpec) -> str | None:
    import importlib.util

    if spec.mode == "chunked" and spec.hop not in (None, spec.chunk_size) and spec.backend not in (
            "onnx", "onnx-int8", "tensorrt"):
        return f"the {spec.backend} backend streams with hop = chunk size only"
    if spec.backend.startswith("sherpa-onnx"):
        if importlib.util.find_spec("sherpa_onnx") is None:
            return "sherpa-onnx is not installed (pip install sherpa-onnx)"
        if spec.decoder != "greedy":
            return "sherpa-onnx is benchmarked with greedy search only"
    if spec.backend == "tensorrt":
        from ..export.tensorrt import tensorrt_status

        return tensorrt_status()
    if spec.backend == "torch" and spec.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is available for --device cuda"
    return None


class _Models:
    """Loads each model once in the parent (its size, layers, parameters) and exports it on demand, caching
    exports in ``work_dir`` keyed by the model file's hash."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self._info: dict[str, dict] = {}
        self._models: dict[str, object] = {}
        self._exports: dict[tuple, Path] = {}

    def _load(self, spec: RunSpec):
        from ..model import load_model
        from ..model.asr import default_model_path

        if spec.model not in self._models:
            path = Path(spec.model_path) if spec.model_path else default_model_path()
            try:
                m = load_model(spec.model_path)
            except (FileNotFoundError, ValueError) as e:
                raise ValueError(f"model {spec.model!r}: {e}") from None
            self._models[spec.model] = m
            cfg = m.config
            self._info[spec.model] = {
                "model_path": spec.model_path or "default", "layers": len(m.encoder.layers),
                "params": m.num_parameters(encoder_only=True), "original_layers": (
                    list(cfg.original_layers) if cfg.original_layers is not None else None),
                "d_model": cfg.d_model, "model_sha256": file_sha256(path), "torch_file_mb": path.stat().st_size / 1e6,
                "architecture": {**{k: getattr(cfg, k) for k in ARCHITECTURE_FIELDS}, "frontend": m.frontend.kind},
            }
        return self._models[spec.model]

    def info(self, spec: RunSpec) -> dict:
        self._load(spec)
        return self._info[spec.model]

    def skip_reason(self, spec: RunSpec) -> str | None:
        """Why the model cannot run ``spec``: features sherpa-onnx does not compute, chunked decoding of a model
        that cannot stream (on this backend)."""
        from ..decoding import sherpa_frontend_refusal

        m = self._load(spec)
        if spec.backend.startswith("sherpa-onnx") and (why := sherpa_frontend_refusal(m.frontend)):
            return why
        if spec.mode != "chunked":
            return None
        why = m.config.streaming_refusal(m.frontend, onnx=spec.backend != "torch")
        return f"chunked decoding: {why}; benchmark it with --mode offline" if why else None

    def config(self, spec: RunSpec) -> dict:
        """The model's config as a dict; ``num_layers`` is the model's own layer count."""
        m = self._load(spec)
        return m.config.replace(num_layers=len(m.encoder.layers)).to_dict()

    def export(self, spec: RunSpec) -> Path:
        """The ONNX export ``spec`` needs (offline, or streaming with its chunking), with model.int8.onnx
        (:func:`slimasr.decoding.cached_export`, kept in ``work_dir/<label>``)."""
        from ..decoding import cached_export

        model = self._load(spec)
        streaming = spec.mode == "chunked"
        key = (spec.model, streaming)
        if key not in self._exports:
            self._exports[key] = cached_export(model, spec.model_path, streaming, spec.chunk_size, spec.left_chunks,
                                               root=self.work_dir / _safe(spec.model))
        return self._exports[key]

    def engine(self, spec: RunSpec) -> Path:
        from ..export.tensorrt import build_engines

        src = self.export(spec)
        out = src.parent / f"trt-{src.name}"
        if not (out / "model.engine").is_file():
            build_engines(src, out, force=True)
        return out


def run_benchmark(specs: Sequence[RunSpec], work_dir: str | os.PathLike | None = None, floor: bool = True,
                  rounds: int = 1, progress: bool = True, keep_hypotheses: bool = False,
                  timeout: float | None = None) -> dict:
    """Run every spec in fresh processes and measure the physical floor of every model.

    Args:
        work_dir: where ONNX exports (and TensorRT engines) are written and reused; default a temporary
            directory removed afterwards.
        floor: measure the GEMM floor (one extra process for all models).
        rounds: split the utterances into this many interleaved shards and run every spec once per shard, round
            by round (round r decodes utterances r, r + rounds, ...). On a machine whose load changes, every
            run then samples the whole period rather than one stretch of it, so runs compare fairly. Each
            round is a fresh process (peak RSS: the largest).
        keep_hypotheses: keep each utterance's reference and hypothesis in the runs.
    Returns:
        ``{"machine": {...}, "settings": {...}, "runs": [...], "floors": [...]}``; a run that could not be made
        has ``skipped`` (why) or ``error`` (what failed) instead of measurements.
    """
    from tqdm import tqdm

    if not specs:
        raise ValueError("nothing to benchmark: no runs")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for s in specs:
        if not Path(s.data).is_file():
            raise ValueError(f"manifest {s.data} does not exist")
        if s.lm is not None and not Path(s.lm).is_file():
            raise ValueError(f"language model {s.lm} does not exist (build one with `slimasr lm build`)")
    n_utts = len(load_rows(specs[0].data, specs[0].limit, skipped=[]))   # the runs name malformed rows
    rounds = min(rounds, n_utts)
    machine = machine_info()
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="slimasr-bench-")
        work_dir = tmp.name
    models = _Models(Path(work_dir))
    rows: list[dict] = []
    ready: list[RunSpec | None] = []          # the spec to run (export filled in), None when skipped / failed
    parts: list[list[dict]] = [[] for _ in specs]
    floors: list[dict] = []
    try:
        for spec in specs:
            row = {"model": spec.model, "backend": spec.backend, "mode": spec.mode, "decoder": spec.decoder,
                   "threads": spec.threads, "spin_threads": _spins(spec), "device": spec.device
                   if spec.backend == "torch" else ("gpu" if spec.backend == "tensorrt" else "cpu"),
                   "cpu_model": machine["cpu_model"], **models.info(spec)}
            if spec.mode == "chunked":
                row.update(chunk_size=spec.chunk_size, left_chunks=spec.left_chunks, hop=spec.hop or spec.chunk_size,
                           feed_ms=spec.feed_ms)
            if spec.decoder == "beam":
                row.update(beam_size=spec.beam_size, lm=Path(spec.lm).name if spec.lm else None,
                           lm_weight=spec.lm_weight if spec.lm else None)
            rows.append(row)
            ready.append(None)
            why = _skip_reason(spec) or models.skip_reason(spec)
            if why:
                row["skipped"] = why
                continue
            try:
                if spec.backend == "tensorrt":
                    spec = dataclasses.replace(spec, engine_dir=str(models.engine(spec)))
                elif spec.backend != "torch":
                    spec = dataclasses.replace(spec, export_dir=str(models.export(spec)))
            except (RuntimeError, ValueError, OSError) as e:
                row["error"] = f"export failed: {e}"
                continue
            ready[-1] = spec
        bar = tqdm(total=rounds * sum(s is not None for s in ready), desc="bench", unit="run", disable=not progress)
        for r in range(rounds):
            for i, spec in enumerate(ready):
                if spec is None or "error" in rows[i]:
                    continue
                try:
                    parts[i].append(run_subprocess(dataclasses.replace(spec, shard=r, shards=rounds), timeout))
                except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as e:
                    log.error("%s", e)
                    rows[i]["error"] = str(e)
                bar.update(1)
        bar.close()
        for i, spec in enumerate(ready):
            if spec is not None and "error" not in rows[i] and parts[i]:
                res = aggregate(spec, parts[i])
                if not keep_hypotheses:
                    res.pop("hypotheses", None)
                rows[i].update(res)
        done = [(s, r) for s, r in zip(ready, rows) if "rtf" in r]
        if floor and done:
            configs = {s.model: models.config(s) for s, _ in done}
            modes = tuple(dict.fromkeys(s.mode for s, _ in done))
            fspec = dataclasses.replace(done[0][0], kind="floor", backend="torch", decoder="greedy", lm=None,
                                        floor_configs=configs, floor_modes=modes)
            try:
                res = run_subprocess(fspec, timeout)
                for label, by_mode in res.items():
                    layers = configs[label]["num_layers"]
                    floors += [{"model": label, "mode": m, "layers": layers, **f} for m, f in by_mode.items()]
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                log.error("floor measurement: %s", e)
    finally:
        if tmp is not None:
            tmp.cleanup()
    by_key = {(f["model"], f["mode"]): f for f in floors}
    for row in rows:
        f = by_key.get((row["model"], row["mode"]))
        if f and "rtf" in row:
            row["floor_rtf"] = f["floor_rtf"]
            row["x_floor"] = row["rtf"] / f["floor_rtf"]
            row["flops_per_audio_s"] = f["flops_per_audio_s"]
    first = specs[0]
    settings = {"data": str(first.data), "limit": first.limit, "threads": sorted({s.threads for s in specs}),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", OMP_WAIT_POLICY), "rounds": rounds,
                "warmup": first.warmup, "chunk_size": first.chunk_size, "left_chunks": first.left_chunks,
                "feed_ms": first.feed_ms}
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"machine": machine, "settings": settings, "runs": rows, "floors": floors}


def _main(argv: Sequence[str]) -> int:
    import warnings

    if len(argv) != 2:
        print("usage: python -m slimasr.bench.runner SPEC.json OUT.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    warnings.filterwarnings("ignore", category=UserWarning)
    spec = RunSpec(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    if spec.backend == "torch":
        import torch

        torch.set_num_threads(spec.threads)         # this process is the run: its threads are the run's
    try:
        result = execute(spec)
    except (ValueError, FileNotFoundError) as e:    # a clear one-line reason for the parent, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
