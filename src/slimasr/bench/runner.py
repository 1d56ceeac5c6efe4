"""Benchmark runs: one (model, backend, mode, decoder) at a time, each measured in its own process.

A run decodes every utterance of a manifest and reports accuracy (WER, CER with jiwer), speed and memory. Each run
is a fresh ``python -m slimasr.bench.runner`` process, so its peak RSS (``VmHWM``, see :func:`_peak_rss_mb`) is
its own: the libraries it imports, the model, the audio and the decoding. The torch backend's peak therefore includes PyTorch itself.
Before timing, ``warmup`` utterances are decoded once (not counted).

**Backends**: ``torch`` (eager PyTorch: ``ASRModel.ctc_log_probs`` / ``stream_step``), ``onnx`` and
``onnx-int8`` (the torch-free :class:`slimasr.runtime.Recognizer` on ``model.onnx`` / ``model.int8.onnx``),
``sherpa-onnx`` and ``sherpa-onnx-int8`` (sherpa-onnx's C++ runtime on the same files, greedy only) and
``tensorrt`` (the runtime on a TensorRT engine; needs a CUDA GPU, skipped with the reason otherwise).

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

from ..fileutil import file_sha256

__all__ = ["BACKENDS", "DECODERS", "MODES", "ModelSpec", "RunSpec", "aggregate", "execute", "load_rows",
           "machine_info", "plan_runs", "run_benchmark", "run_subprocess"]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8", "sherpa-onnx", "sherpa-onnx-int8", "tensorrt")
MODES = ("offline", "chunked")
DECODERS = ("greedy", "beam")
SAMPLE_RATE = 16000
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
    threads: int = 2
    spin_threads: bool = False          # onnx backends: onnxruntime's worker threads busy-wait between operators
                                        # (onnxruntime's default, and what sherpa-onnx runs with); the runtime's
                                        # default is off (see RecognizerConfig.spin_threads)
    lm: str | None = None               # KenLM model for beam search
    beam_size: int = 100
    lm_weight: float = 0.6
    chunk_size: int = 16                # encoder frames per chunk (chunked mode)
    left_chunks: int = 4
    hop: int | None = None              # encoder frames between chunk starts (onnx backends); None = chunk_size
    feed_ms: int = 100                  # audio piece size in chunked mode
    warmup: int = 2                     # utterances decoded before timing
    export_dir: str | None = None       # the ONNX export (offline or streaming, as the mode needs)
    engine_dir: str | None = None       # the TensorRT engine directory (tensorrt backend)
    device: str = "cpu"                 # torch backend: cpu | cuda
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
def load_rows(manifest: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The manifest's rows sorted by ``audio_filepath`` (a fixed order), the first ``limit`` of them."""
    from ..data.manifest import read_manifest

    rows = sorted(read_manifest(manifest), key=lambda r: r["audio_filepath"])
    if not rows:
        raise ValueError(f"manifest {manifest} has no utterances")
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


def _gpu_memory_mb(pid: int) -> float | None:
    """Memory this process holds on the GPU now (nvidia-smi), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return None


def _decoding_config(spec: RunSpec):
    from ..runtime.decoders import DecodingConfig

    if spec.decoder == "greedy":
        return DecodingConfig()
    return DecodingConfig(method="beam", beam_size=spec.beam_size, lm=spec.lm, lm_weight=spec.lm_weight)


# ---------------------------------------------------------------------------------------------- backends
class _Stream:
    """A backend's per-utterance streaming state (opaque to the measuring loop)."""


class _Backend:
    """What the measuring loop needs from a backend; ``offline`` and ``stream_*`` return seconds spent."""

    model_file: Path

    def offline(self, wave) -> tuple[str, dict]:
        """Decode one whole utterance: (text, {"compute", "features", "encoder", "search"} seconds)."""
        raise NotImplementedError

    def stream_start(self) -> _Stream:
        raise NotImplementedError

    def stream_feed(self, st: _Stream, piece) -> tuple[int, bool]:
        """Feed a piece of audio and decode what is ready: (chunks run, partial result non-empty)."""
        raise NotImplementedError

    def stream_finish(self, st: _Stream) -> tuple[str, float]:
        """End of audio: decode the rest (and search); (final text, seconds of search within this call)."""
        raise NotImplementedError

    def gpu_memory(self) -> float | None:
        return None


class _TorchBackend(_Backend):
    def __init__(self, spec: RunSpec) -> None:
        import torch

        from ..model import load_model
        from ..model.asr import default_model_path
        from ..runtime.decoders import Vocabulary, make_decoder
        from ..tokenizer import Tokenizer

        torch.set_num_threads(spec.threads)
        self.torch = torch
        self.spec = spec
        self.device = torch.device(spec.device)
        self.model = load_model(spec.model_path, device=self.device)
        if not self.model.tokenizer_bytes:
            raise ValueError(f"model {spec.model_path or '(default)'} has no tokenizer; cannot produce text")
        self.model_file = Path(spec.model_path) if spec.model_path else default_model_path()
        self.vocab = Vocabulary.from_tokenizer(Tokenizer.from_bytes(self.model.tokenizer_bytes))
        self.decoder = make_decoder(self.vocab, _decoding_config(spec))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _text(self, log_probs) -> tuple[str, float]:
        t0 = time.perf_counter()
        text = self.decoder.decode(log_probs).text
        return text, time.perf_counter() - t0

    def offline(self, wave):
        from ..features import compute_features

        torch = self.torch
        t0 = time.perf_counter()
        feats = torch.from_numpy(compute_features(wave, self.model.frontend))
        t1 = time.perf_counter()
        with torch.inference_mode():
            lp, _ = self.model.ctc_log_probs(feats[None].to(self.device))
            lp = lp[0].float().cpu().numpy()
        self._sync()
        text, search = self._text(lp)
        t3 = time.perf_counter()
        if self.spec.decoder == "greedy":
            search = 0.0
        return text, {"compute": t3 - t0, "features": t1 - t0, "encoder": t3 - t1 - search, "search": search}

    def stream_start(self):
        from ..features import OnlineFeatureExtractor

        st = _Stream()
        st.fbank = OnlineFeatureExtractor(self.model.frontend)
        st.used = 0
        st.state = self.model.init_state(1, self.device)
        st.prev, st.tokens, st.lps = -1, 0, []
        return st

    def _step(self, st, final: bool) -> int:
        import numpy as np

        from ..runtime.decoders import ctc_greedy

        n = st.fbank.num_frames_ready
        feats = self.torch.from_numpy(st.fbank.get_frames(st.used, n - st.used)).to(self.device)
        st.used = n
        with self.torch.inference_mode():
            lp, st.state = self.model.stream_step(feats[None], st.state, self.spec.chunk_size,
                                                  self.spec.left_chunks, final=final)
        lp = lp[0].float().cpu().numpy()
        self._sync()
        if lp.shape[0]:
            toks, _, st.prev = ctc_greedy(lp, prev=st.prev)
            st.tokens += len([t for t in toks if t != len(self.vocab) - 1])
            st.lps.append(lp)
        return int(np.ceil(lp.shape[0] / self.spec.chunk_size))

    def stream_feed(self, st, piece):
        st.fbank.accept_waveform(piece)
        chunks = self._step(st, final=False)
        return chunks, st.tokens > 0

    def stream_finish(self, st):
        import numpy as np

        st.fbank.input_finished()
        self._step(st, final=True)
        lp = np.concatenate(st.lps) if st.lps else np.zeros((0, len(self.vocab)), np.float32)
        text, search = self._text(lp)
        return text, search if self.spec.decoder == "beam" else 0.0

    def gpu_memory(self):
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20


class _RuntimeBackend(_Backend):
    """slimasr's torch-free runtime (onnx, onnx-int8, tensorrt)."""

    def __init__(self, spec: RunSpec) -> None:
        from ..runtime import Recognizer
        from ..runtime.decoders import DecodingConfig, make_decoder

        self.spec = spec
        int8 = spec.backend == "onnx-int8"
        provider = "tensorrt" if spec.backend == "tensorrt" else "cpu"
        where = spec.engine_dir if spec.backend == "tensorrt" else spec.export_dir
        if not where:
            raise ValueError(f"backend {spec.backend} needs an export directory")
        dec = _decoding_config(spec)
        if spec.mode == "offline":
            self.rec = Recognizer.from_onnx(where, num_threads=spec.threads, provider=provider, int8=int8,
                                            spin_threads=spec.spin_threads, decoding=dec, batch_size=1)
            # beam search: the same export with greedy decoding times the encoder part (see the module docstring)
            self.greedy = (Recognizer.from_onnx(where, num_threads=spec.threads, provider=provider, int8=int8,
                                                spin_threads=spec.spin_threads, batch_size=1)
                           if spec.decoder == "beam" else None)
        else:
            # greedy partials, log-probabilities kept: beam search runs at the end, timed alone
            from ..runtime import StreamingConfig

            self.rec = Recognizer.from_onnx(where, num_threads=spec.threads, provider=provider, int8=int8,
                                            spin_threads=spec.spin_threads, decoding=DecodingConfig(),
                                            keep_log_probs=spec.decoder == "beam",
                                            streaming=StreamingConfig(hop=spec.hop))
            self.search = make_decoder(self.rec.vocab, dec, self.rec.frame_seconds) if spec.decoder == "beam" \
                else None
        self.model_file = Path(self.rec.model_file)

    def offline(self, wave):
        from ..features import compute_features

        t0 = time.perf_counter()
        text = self.rec.transcribe(wave, sample_rate=SAMPLE_RATE).text
        compute = time.perf_counter() - t0
        t0 = time.perf_counter()
        compute_features(wave, self.rec.frontend)
        features = time.perf_counter() - t0
        search = 0.0
        if self.greedy is not None:
            t0 = time.perf_counter()
            self.greedy.transcribe(wave, sample_rate=SAMPLE_RATE)
            search = max(0.0, compute - (time.perf_counter() - t0))
        return text, {"compute": compute, "features": features, "encoder": max(0.0, compute - features - search),
                      "search": search}

    def stream_start(self):
        st = _Stream()
        st.s = self.rec.create_stream()
        return st

    def stream_feed(self, st, piece):
        st.s.accept_waveform(SAMPLE_RATE, piece)
        before = st.s.frames_emitted
        r = self.rec.decode(st.s)
        return (st.s.frames_emitted - before) // self.rec.plan.hop, bool(r.text)

    def stream_finish(self, st):
        st.s.input_finished()
        text = self.rec.decode(st.s).text
        if self.search is None:
            return text, 0.0
        t0 = time.perf_counter()
        text = self.search.decode(st.s.log_probs).text
        return text, time.perf_counter() - t0

    def gpu_memory(self):
        return _gpu_memory_mb(os.getpid()) if self.spec.backend == "tensorrt" else None


class _SherpaBackend(_Backend):
    """sherpa-onnx's C++ runtime on the same export (WeNet CTC interface, greedy search)."""

    def __init__(self, spec: RunSpec) -> None:
        import sherpa_onnx

        if spec.decoder != "greedy":
            raise ValueError("the sherpa-onnx backend is benchmarked with greedy search only")
        d = Path(spec.export_dir or "")
        files = json.loads((d / "slimasr_export.json").read_text(encoding="utf-8"))["files"]
        name = files["model_int8"] if spec.backend.endswith("int8") else files["model"]
        if not name:
            raise ValueError(f"{d} has no int8 model (export with int8=True)")
        self.model_file = d / name
        self.spec = spec
        tokens = str(d / files["tokens"])
        if spec.mode == "offline":
            self.rec = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model=str(self.model_file), tokens=tokens,
                                                                    num_threads=spec.threads)
        else:
            self.rec = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
                tokens=tokens, model=str(self.model_file), chunk_size=spec.chunk_size,
                num_left_chunks=spec.left_chunks, num_threads=spec.threads)

    def offline(self, wave):
        t0 = time.perf_counter()
        s = self.rec.create_stream()
        s.accept_waveform(SAMPLE_RATE, wave)
        self.rec.decode_stream(s)
        text = s.result.text
        return text, {"compute": time.perf_counter() - t0, "features": None, "encoder": None, "search": 0.0}

    def stream_start(self):
        st = _Stream()
        st.s = self.rec.create_stream()
        return st

    def _run(self, st) -> int:
        n = 0
        while self.rec.is_ready(st.s):
            self.rec.decode_stream(st.s)
            n += 1
        return n

    def stream_feed(self, st, piece):
        st.s.accept_waveform(SAMPLE_RATE, piece)
        n = self._run(st)
        return n, bool(n and self.rec.get_result(st.s).strip())

    def stream_finish(self, st):
        import numpy as np

        from slimasr.chunking import SHERPA_ONNX_TAIL_SECONDS

        st.s.accept_waveform(SAMPLE_RATE, np.zeros(int(SHERPA_ONNX_TAIL_SECONDS * SAMPLE_RATE), np.float32))
        st.s.input_finished()
        self._run(st)
        return self.rec.get_result(st.s), 0.0


def _make_backend(spec: RunSpec) -> _Backend:
    if spec.backend == "torch":
        return _TorchBackend(spec)
    if spec.backend.startswith("sherpa-onnx"):
        return _SherpaBackend(spec)
    return _RuntimeBackend(spec)


# ---------------------------------------------------------------------------------------------- measuring
def _offline_utt(backend: _Backend, wave) -> tuple[str, dict]:
    return backend.offline(wave)


def _chunked_utt(backend: _Backend, wave, feed: int) -> tuple[str, dict]:
    """Stream one utterance in simulated real time (see the module docstring)."""
    st = backend.stream_start()
    clock = compute = 0.0
    first_partial = None
    chunk_times: list[float] = []
    for start in range(0, len(wave), feed):
        piece = wave[start:start + feed]
        arrival = (start + len(piece)) / SAMPLE_RATE
        t0 = time.perf_counter()
        chunks, nonempty = backend.stream_feed(st, piece)
        dt = time.perf_counter() - t0
        compute += dt
        clock = max(clock, arrival) + dt
        if chunks:
            chunk_times += [dt / chunks] * chunks
        if first_partial is None and nonempty:
            first_partial = clock
    duration = len(wave) / SAMPLE_RATE
    t0 = time.perf_counter()
    text, search = backend.stream_finish(st)
    dt = time.perf_counter() - t0
    compute += dt
    final = max(clock, duration) + dt - duration
    return text, {"compute": compute, "search": search, "chunk_times": chunk_times, "first_partial": first_partial,
                  "final_latency": final}


def execute(spec: RunSpec) -> dict:
    """Run ``spec`` in this process: per-utterance measurements of its shard and the process's peak RSS (see
    :func:`aggregate` for the totals, :func:`run_subprocess` for running it in a fresh process)."""
    if spec.kind == "floor":
        return _execute_floor(spec)
    from ..audio import load_audio
    from ..scoring import normalize_for_scoring

    rows = load_rows(spec.data, spec.limit)[spec.shard::spec.shards]
    waves = [load_audio(r["audio_filepath"]) for r in rows]
    rss_data = _peak_rss_mb()
    t_load = time.perf_counter()
    backend = _make_backend(spec)
    load_s = time.perf_counter() - t_load
    feed = max(1, int(spec.feed_ms * SAMPLE_RATE / 1000))
    measure = _offline_utt if spec.mode == "offline" else (lambda b, w: _chunked_utt(b, w, feed))
    for w in waves[: spec.warmup]:
        measure(backend, w)
    load_avg = os.getloadavg()
    utts = []
    for r, w in zip(rows, waves):
        text, m = measure(backend, w)
        utts.append({"audio_filepath": r["audio_filepath"], "audio_s": len(w) / SAMPLE_RATE,
                     "reference": normalize_for_scoring(r["text"]), "hypothesis": normalize_for_scoring(text), **m})
    return {"utts": utts, "peak_rss_mb": _peak_rss_mb(), "peak_rss_before_model_mb": rss_data,
            "model_load_s": load_s, "model_file": backend.model_file.name,
            "model_file_mb": backend.model_file.stat().st_size / 1e6, "gpu_memory_mb": backend.gpu_memory(),
            "load_average": [round(x, 2) for x in load_avg]}


def aggregate(spec: RunSpec, parts: Sequence[dict]) -> dict:
    """Totals of a run from its processes' results (one per round): WER/CER over all utterances (jiwer), RTF,
    percentiles, the largest peak RSS."""
    from ..scoring import error_rates

    utts = sorted((u for p in parts for u in p["utts"]), key=lambda u: u["audio_filepath"])
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
    }
    if spec.mode == "offline":
        out["latency_p50_ms"], out["latency_p95_ms"] = _percentiles([u["compute"] for u in utts])
        if all(u.get("features") is not None for u in utts):
            out["features_rtf"] = sum(u["features"] for u in utts) / audio_s
            out["encoder_rtf"] = sum(u["encoder"] for u in utts) / audio_s
    else:
        chunk_times = [t for u in utts for t in u["chunk_times"]]
        out["chunk_ms"] = spec.chunk_size * 40.0
        out["chunks"] = len(chunk_times)
        out["chunk_p50_ms"], out["chunk_p95_ms"] = _percentiles(chunk_times)
        fp = [u["first_partial"] for u in utts if u["first_partial"] is not None]
        out["first_partial_p50_ms"], out["first_partial_p95_ms"] = _percentiles(fp)
        out["final_latency_p50_ms"], out["final_latency_p95_ms"] = _percentiles([u["final_latency"] for u in utts])
    out["hypotheses"] = [{k: u[k] for k in ("audio_filepath", "reference", "hypothesis")} for u in utts]
    return out


def _execute_floor(spec: RunSpec) -> dict:
    """Floors of several models (``floor_configs``: label -> ModelConfig dict) in ``floor_modes``, each distinct
    matrix shape timed once, so models that share shapes are compared on the same timings."""
    from ..model.config import ModelConfig
    from .flops import measure_floor

    durations = [r["duration"] for r in load_rows(spec.data, spec.limit)]
    cache: dict = {}
    out: dict = {}
    for label, cfg in (spec.floor_configs or {}).items():
        cfg = ModelConfig.from_dict(cfg)
        out[label] = {mode: measure_floor(cfg, mode, spec.threads, durations if mode == "offline" else (),
                                          spec.chunk_size, spec.left_chunks, min_time=spec.floor_min_time,
                                          cache=cache, hop=spec.hop)
                      for mode in spec.floor_modes}
    return out


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
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"{spec.model} / {spec.backend} / {spec.mode} / {spec.decoder} failed "
                               f"(exit {proc.returncode}):\n{tail}")
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
            }
        return self._models[spec.model]

    def info(self, spec: RunSpec) -> dict:
        self._load(spec)
        return self._info[spec.model]

    def config(self, spec: RunSpec) -> dict:
        """The model's config as a dict; ``num_layers`` is the model's own layer count."""
        m = self._load(spec)
        return m.config.replace(num_layers=len(m.encoder.layers)).to_dict()

    def export(self, spec: RunSpec) -> Path:
        """The ONNX export ``spec`` needs (offline, or streaming with its chunking), with model.int8.onnx."""
        from ..export.onnx import export_onnx

        model = self._load(spec)
        streaming = spec.mode == "chunked"
        kind = f"streaming-c{spec.chunk_size}-l{spec.left_chunks}" if streaming else "offline"
        key = (spec.model, kind)
        if key in self._exports:
            return self._exports[key]
        out = self.work_dir / _safe(spec.model) / kind
        stamp = out.parent / f"{kind}.source"
        sha = self._info[spec.model]["model_sha256"]
        if not (stamp.is_file() and stamp.read_text().strip() == sha and (out / "model.int8.onnx").is_file()):
            import warnings

            log.info("exporting %s (%s) to %s", spec.model, kind, out)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(model, out, streaming=streaming, chunk_size=spec.chunk_size,
                            left_chunks=spec.left_chunks, int8=True, force=True)
            stamp.write_text(sha + "\n")
        self._exports[key] = out
        return out

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
    n_utts = len(load_rows(specs[0].data, specs[0].limit))
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
            why = _skip_reason(spec)
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
    result = execute(spec)
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
