"""FLOPs of the encoder from its config, and the physical floor: those FLOPs at this machine's GEMM rate.

Every operation of inference is written as the matrix product it is (``Gemm``: an ``(m, k) x (k, n)`` product,
``batch`` times, ``count`` times per utterance or per chunk), counting 2 FLOPs per multiply-add:

* subsampling: each convolution of the configured front-end (``ModelConfig.subsampling``) as an im2col product
  (for ``conv2d4``: ``(T1 * F1, 9) x (9, C)`` and ``(T2 * F2, 9 C) x (9 C, C)``; ``dw_striding4`` replaces the
  second by a depthwise ``(T2 * F2 * C, 9) x (9, 1)`` and a pointwise ``(T2 * F2, C) x (C, C)``) and the linear
  layer ``(T', C * F2) x (C * F2, D)``;
* per Conformer layer: two feed-forward modules (``D -> ffn -> D``), the q, k, v and output projections, the
  relative-position projection of the ``K + Tq - 1`` distances the chunk spans, the content scores
  ``(q + u) k^T``, the position scores ``(q + v) p^T`` (over ``K + Tq - 1`` columns before the relative shift),
  attention times values, the two pointwise convolutions and the depthwise convolution (``k`` taps per channel);
* the CTC head ``(T', D) x (D, V)``.

Element-wise work (softmax, LayerNorm, Swish, GLU, residuals) and feature extraction are not counted: the floor
is the time of the matrix products alone.

Offline decoding runs full context over the whole utterance (``K = Tq = T'``); chunked decoding runs one chunk of
``C`` frames against the fixed cache of the streaming graph (``K = C * (L + 1)``, masked while it fills) and
recomputes the front-end over the chunk's feature window (``slimasr.chunking.Chunking.window``: ``(C - 1) * 4 + 7``
frames for the 4x front-ends).

The **GEMM rate** is measured on this machine with the model's own shapes: each distinct product is timed with
torch and with numpy (the faster counts) at the benchmark's thread count. The **floor RTF** is the measured time
of all products per second of audio. It is what an implementation that spent no time outside matrix products
would reach; every backend's RTF is reported as a multiple of it.

Example::

    import torch
    from slimasr import load_model
    from slimasr.bench.flops import measure_floor, offline_gemms, total_flops
    cfg = load_model().config
    print(total_flops(offline_gemms(cfg, num_frames=500)) / 5.0, "FLOPs per second of audio")
    torch.set_num_threads(2)            # a script's own threads: the measurement changes none
    print(measure_floor(cfg, "chunked", threads=2)["floor_rtf"])
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from ..chunking import Chunking, min_frames

__all__ = ["Gemm", "chunk_gemms", "flops_by_component", "flops_per_audio_second", "measure_floor",
           "offline_gemms", "time_gemms", "total_flops"]

FRAMES_PER_SECOND = 100        # 10 ms fbank frames


@dataclass(frozen=True)
class Gemm:
    """``count`` x ``batch`` products of an (m, k) matrix by a (k, n) matrix."""

    name: str          # e.g. "layer.ffn.w1"
    component: str     # subsampling | ffn | attention | attention_pos | conv | ctc
    m: int
    k: int
    n: int
    batch: int = 1
    count: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.batch * self.count

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.m, self.k, self.n)


def _frontend_gemms(cfg, num_frames: int) -> tuple[list[Gemm], int]:
    """Products of the subsampling front-end (``cfg.subsampling``'s stages) over ``num_frames`` feature frames, and
    the output frames T'.

    A full k x k convolution from ``c_in`` to ``C`` channels is the im2col product ``(T_i * F_i, k^2 c_in) x
    (k^2 c_in, C)``; a depthwise-separable stage (``dw_striding*`` after the first) is a depthwise product
    ``(T_i * F_i * C, k^2) x (k^2, 1)`` and a pointwise ``(T_i * F_i, C) x (C, C)``; then the linear layer
    ``(T', C * F') x (C * F', D)``.
    """
    c, t, f, c_in = cfg.subsampling_channels, num_frames, cfg.num_mel_bins, 1
    depthwise = cfg.subsampling.startswith("dw_striding")
    gemms: list[Gemm] = []
    for i, (k, s, p) in enumerate(cfg.subsampling_stages):
        t, f = (t + 2 * p - k) // s + 1, (f + 2 * p - k) // s + 1
        if t < 1:
            raise ValueError(f"{num_frames} feature frames give no encoder frame (need at least "
                             f"{min_frames(cfg.right_context)})")
        if depthwise and i > 0:
            gemms += [Gemm(f"subsampling.conv{i + 1}.depthwise", "subsampling", t * f * c, k * k, 1),
                      Gemm(f"subsampling.conv{i + 1}.pointwise", "subsampling", t * f, c, c)]
        else:
            gemms.append(Gemm(f"subsampling.conv{i + 1}", "subsampling", t * f, k * k * c_in, c))
        c_in = c
    gemms.append(Gemm("subsampling.linear", "subsampling", t, c * f, cfg.d_model))
    return gemms, t


def _layer_gemms(cfg, tq: int, keys: int, layers: int) -> list[Gemm]:
    """One Conformer layer's products for ``tq`` query frames against ``keys`` key frames, ``layers`` times."""
    d, h, dk, ffn = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.ffn_dim
    pos = keys + tq - 1                      # distances keys-1 .. -(tq-1)
    return [
        Gemm("layer.ffn.w1", "ffn", tq, d, ffn, count=2 * layers),          # macaron + final FFN
        Gemm("layer.ffn.w2", "ffn", tq, ffn, d, count=2 * layers),
        Gemm("layer.attn.qkv_out", "attention", tq, d, d, count=4 * layers),
        Gemm("layer.attn.linear_pos", "attention_pos", pos, d, d, count=layers),
        Gemm("layer.attn.scores_pos", "attention_pos", tq, dk, pos, batch=h, count=layers),
        Gemm("layer.attn.scores_content", "attention", tq, dk, keys, batch=h, count=layers),
        Gemm("layer.attn.weighted_values", "attention", tq, keys, dk, batch=h, count=layers),
        Gemm("layer.conv.pointwise1", "conv", tq, d, 2 * d, count=layers),
        Gemm("layer.conv.depthwise", "conv", tq * d, cfg.kernel_size, 1, count=layers),
        Gemm("layer.conv.pointwise2", "conv", tq, d, d, count=layers),
    ]


def _layers(cfg, num_layers: int | None) -> int:
    n = cfg.num_layers if num_layers is None else num_layers
    if n < 1:
        raise ValueError(f"num_layers must be >= 1, got {n}")
    return n


def offline_gemms(cfg, num_frames: int, num_layers: int | None = None) -> list[Gemm]:
    """All products of one full-context utterance of ``num_frames`` feature frames (batch 1).

    Args:
        cfg: a :class:`slimasr.model.ModelConfig` (a pruned model's config has its own ``num_layers``).
        num_layers: override ``cfg.num_layers``.
    """
    gemms, t = _frontend_gemms(cfg, num_frames)
    gemms += _layer_gemms(cfg, t, t, _layers(cfg, num_layers))
    gemms.append(Gemm("ctc", "ctc", t, cfg.d_model, cfg.vocab_size))
    return gemms


def chunk_gemms(cfg, chunk_size: int, left_chunks: int, num_layers: int | None = None) -> list[Gemm]:
    """All products of one streaming chunk of ``chunk_size`` encoder frames with ``left_chunks`` cached chunks
    (the streaming graph's fixed cache: ``K = chunk_size * (left_chunks + 1)`` keys).

    Raises:
        ValueError: a bad chunk size or left-chunk count, or a front-end that pads its convolutions (NeMo's
            ``striding`` / ``dw_striding``), which does not stream chunk by chunk.
    """
    if chunk_size < 1 or left_chunks < 0:
        raise ValueError(f"need chunk_size >= 1 and left_chunks >= 0, got {chunk_size}, {left_chunks}")

    window = Chunking.for_model(cfg, chunk_size, left_chunks).window
    gemms, t = _frontend_gemms(cfg, window)
    if t != chunk_size:
        raise ValueError(f"the {cfg.subsampling!r} front-end turns a chunk's window of {window} feature frames into "
                         f"{t} encoder frames, not {chunk_size}: it pads its convolutions, so it does not stream "
                         "chunk by chunk (offline only)")
    gemms += _layer_gemms(cfg, chunk_size, chunk_size * (left_chunks + 1), _layers(cfg, num_layers))
    gemms.append(Gemm("ctc", "ctc", chunk_size, cfg.d_model, cfg.vocab_size))
    return gemms


def total_flops(gemms: Iterable[Gemm]) -> int:
    return sum(g.flops for g in gemms)


def flops_by_component(gemms: Iterable[Gemm]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for g in gemms:
        out[g.component] += g.flops
    return dict(out)


def flops_per_audio_second(cfg, mode: str, durations: Sequence[float] = (), chunk_size: int = 16,
                           left_chunks: int = 4, num_layers: int | None = None, hop: int | None = None) -> dict:
    """FLOPs per second of audio, in total and by component.

    Args:
        mode: ``offline`` (full context per utterance: needs the utterance ``durations`` in seconds, since
            attention grows with the square of the length) or ``chunked``.
        hop: chunked: encoder frames between chunk starts (None = ``chunk_size``); a hop below the chunk size
            runs ``chunk_size / hop`` times the chunks (overlapping chunks, :mod:`slimasr.chunking`).
    Returns:
        {"total", "by_component": {...}, "frontend_share"}.
    """
    if mode == "offline":
        if not durations:
            raise ValueError("offline FLOPs depend on the utterance lengths: pass durations")
        comp: dict[str, int] = defaultdict(int)
        for d in durations:
            for k, v in flops_by_component(offline_gemms(cfg, max(min_frames(cfg.right_context),
                                                                  round(d * FRAMES_PER_SECOND)),
                                                         num_layers)).items():
                comp[k] += v
        secs = float(sum(durations))
        per_s = {k: v / secs for k, v in comp.items()}
    elif mode == "chunked":
        chunks_per_s = FRAMES_PER_SECOND / Chunking.for_model(cfg, chunk_size, left_chunks, hop).hop_shift
        per_s = {k: v * chunks_per_s for k, v in
                 flops_by_component(chunk_gemms(cfg, chunk_size, left_chunks, num_layers)).items()}
    else:
        raise ValueError(f"mode must be 'offline' or 'chunked', got {mode!r}")
    total = sum(per_s.values())
    return {"total": total, "by_component": per_s, "frontend_share": per_s.get("subsampling", 0.0) / total}


# ---------------------------------------------------------------------------------------------- measurement
def _time_call(fn, min_time: float, repeats: int = 7) -> float:
    """Seconds per call of ``fn``: the best of ``repeats`` loops lasting about ``min_time`` each (the minimum
    filters out the time other processes took the cores)."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, int(min_time / one))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def time_gemms(gemms: Sequence[Gemm], threads: int, min_time: float = 0.01,
               cache: dict | None = None) -> dict[tuple, dict]:
    """Time each distinct (batch, m, k, n) product with torch and numpy at ``threads`` threads.

    The thread counts are the process's, set by its entry point (the benchmark's child process: ``torch.
    set_num_threads`` and, before numpy's BLAS is first loaded, ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS``); this function checks torch's and changes neither. Returns {shape: {"torch": s,
    "numpy": s, "best": s}} (seconds per product); shapes found in ``cache`` (a dict shared between calls) are not
    timed again.

    Raises:
        ValueError: torch runs a different number of threads than ``threads``.
    """
    import torch

    if torch.get_num_threads() != threads:
        raise ValueError(f"the GEMM floor is measured at {threads} thread(s) but torch runs "
                         f"{torch.get_num_threads()}: call torch.set_num_threads({threads}) in the process first "
                         "(slimasr bench measures it in a child process that does)")
    return _time_gemms(gemms, min_time, {} if cache is None else cache)


def _time_gemms(gemms: Sequence[Gemm], min_time: float, out: dict) -> dict[tuple, dict]:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    for g in gemms:
        if g.shape in out:
            continue
        a = rng.standard_normal((g.batch, g.m, g.k), dtype=np.float32)
        b = rng.standard_normal((g.batch, g.k, g.n), dtype=np.float32)
        if g.batch == 1:
            a, b = a[0], b[0]
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        ot = torch.empty(torch.matmul(ta, tb).shape)
        on = np.empty(np.matmul(a, b).shape, dtype=np.float32)
        with torch.inference_mode():
            t_torch = _time_call(lambda: torch.matmul(ta, tb, out=ot), min_time)
        t_np = _time_call(lambda: np.matmul(a, b, out=on), min_time)
        out[g.shape] = {"torch": t_torch, "numpy": t_np, "best": min(t_torch, t_np)}
    return out


def measure_floor(cfg, mode: str, threads: int, durations: Sequence[float] = (), chunk_size: int = 16,
                  left_chunks: int = 4, min_time: float = 0.01, cache: dict | None = None,
                  hop: int | None = None) -> dict:
    """The physical floor of ``cfg`` on this machine (see the module docstring).

    Offline, the products are timed for an utterance of the mean duration and the resulting GEMM rate is applied
    to the FLOPs of the actual ``durations``.

    Returns:
        {"flops_per_audio_s", "flops_by_component", "frontend_flops_share", "gemm_gflops" (measured rate),
        "floor_rtf", "frontend_floor_share" (share of the floor time spent in the subsampling), "threads",
        "shapes": [{name, batch, m, k, n, count, seconds}, ...]}.
    Raises:
        ValueError: torch runs a different number of threads than ``threads`` (see :func:`time_gemms`).
    """
    fl = flops_per_audio_second(cfg, mode, durations, chunk_size, left_chunks, hop=hop)
    if mode == "offline":
        mean = sum(durations) / len(durations)
        gemms = offline_gemms(cfg, max(min_frames(cfg.right_context), round(mean * FRAMES_PER_SECOND)))
    else:
        gemms = chunk_gemms(cfg, chunk_size, left_chunks)
    times = time_gemms(gemms, threads, min_time, cache)
    secs = {g.name: times[g.shape]["best"] * g.count for g in gemms}
    total_s = sum(secs.values())
    rate = total_flops(gemms) / total_s
    front_s = sum(secs[g.name] for g in gemms if g.component == "subsampling")
    return {
        "flops_per_audio_s": fl["total"],
        "flops_by_component": fl["by_component"],
        "frontend_flops_share": fl["frontend_share"],
        "gemm_gflops": rate / 1e9,
        "floor_rtf": fl["total"] / rate,
        "frontend_floor_share": front_s / total_s,
        "threads": threads,
        "shapes": [{**asdict(g), "seconds": times[g.shape]["best"],
                    "torch_seconds": times[g.shape]["torch"], "numpy_seconds": times[g.shape]["numpy"]}
                   for g in gemms],
    }
