"""Batched streaming decoding: the ready chunks of many streams in one call of an export's batched graph
(``model.batched.onnx``, :mod:`slimasr.export.batched`), with results identical to decoding each stream alone.

Torch-free. :class:`BatchedChunkRunner` holds the batched graph's session; :func:`decode_streams_batched` is
``OnlineRecognizer.decode_streams`` when the recognizer has one. It runs in rounds: each ready stream gives its
next chunk (:meth:`slimasr.runtime.Stream.next_chunk`), the chunks are stacked on the graph's stream axis and
run together, and each stream takes its row back (:meth:`~slimasr.runtime.Stream.chunk_decoded`); rounds repeat
until no stream has a chunk ready. A stream's chunks still run in order, one per round, so every stream sees
exactly the inputs it sees alone.

Chunks of one call must have the same window: full chunks always do; a stream's short last chunk runs with
other chunks of its length, and a chunk that has no partner runs through the batch-1 graph. At most
``max_batch`` chunks go into one call (``RecognizerConfig.batch_size``).

A stream that fails (non-finite outputs, :class:`~slimasr.runtime.NonFiniteStateError`) does not stop the
others: with ``return_exceptions=True`` its exception takes its place in the results, as in
``asyncio.gather``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .session import EXPORT_CONFIG_FILE, SessionConfig, create_session
from .stream import stream_failed

__all__ = ["BatchedChunkRunner", "batched_model_file", "decode_streams_batched"]

log = logging.getLogger(__name__)

# metadata that must agree between the batch-1 graph and the batched one
_SAME_KEYS = ("slimasr_num_layers", "head", "slimasr_head_dim", "slimasr_d_model", "slimasr_conv_cache_frames",
              "vocab_size", "subsampling_factor", "right_context", "slimasr_frontend", "slimasr_model_config")


def batched_model_file(model_file: Path, int8: bool) -> Path | None:
    """The batched graph listed in the export's ``slimasr_export.json`` beside ``model_file`` (the int8 one for
    ``int8``), or None when the export has none."""
    cfg = model_file.parent / EXPORT_CONFIG_FILE
    if model_file.suffix != ".onnx" or not cfg.is_file():
        return None
    files = json.loads(cfg.read_text(encoding="utf-8")).get("files") or {}
    name = files.get("model_batched_int8" if int8 else "model_batched")
    if not name or not (model_file.parent / name).is_file():
        return None
    return model_file.parent / name


class BatchedChunkRunner:
    """The batched graph's onnxruntime session: runs :class:`~slimasr.runtime.stream.ChunkInputs` of several
    streams in as few calls as their window lengths allow.

    Args:
        model_file: the batched graph (``model.batched.onnx``).
        session_config: how to create its session (the recognizer's).
        meta: the batch-1 graph's metadata; the batched graph's must agree on the model's shape.
        max_batch: chunks per call (>= 2).
    Raises:
        ValueError: an unloadable file, or a graph of another model.
    """

    def __init__(self, model_file: Path, session_config: SessionConfig, meta: dict[str, str], max_batch: int):
        if max_batch < 2:
            raise ValueError(f"max_batch must be >= 2 (1 is the batch-1 graph), got {max_batch}")
        self.model_file = model_file
        self.max_batch = max_batch
        self._session = create_session(model_file, session_config, None)
        mine = dict(self._session.get_modelmeta().custom_metadata_map)
        if mine.get("slimasr_batched") != "1":
            raise ValueError(f"{model_file} is not a batched streaming graph (no slimasr_batched metadata)")
        bad = [k for k in _SAME_KEYS if mine.get(k) != meta.get(k)]
        if bad:
            raise ValueError(f"{model_file} was exported from another model than the streaming graph beside it "
                             f"(metadata {', '.join(bad)} differ); re-export with --batched")
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._lock = threading.Lock()
        self._calls = self._chunks = 0

    @property
    def stats(self) -> tuple[int, int]:
        """(batched calls, chunks they ran) since the runner was created (chunks that ran alone through the
        batch-1 graph are not counted)."""
        with self._lock:
            return self._calls, self._chunks

    def run(self, chunks: Sequence, run_one: Callable) -> list[list[np.ndarray]]:
        """The graph's (log_probs (1, C', V), next_attn_cache, next_conv_cache) for each chunk, in the
        batch-1 graph's shapes. Chunks with the same window share calls of up to ``max_batch``; a chunk alone
        in its group goes to ``run_one`` (the batch-1 graph)."""
        out: list[list[np.ndarray] | None] = [None] * len(chunks)
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(chunks):
            groups.setdefault(c.x.shape[1], []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), self.max_batch):
                part = idx[s: s + self.max_batch]
                if len(part) == 1:
                    out[part[0]] = list(run_one(chunks[part[0]]))
                    continue
                for i, rows in zip(part, self._run_stacked([chunks[i] for i in part])):
                    out[i] = rows
        return out  # type: ignore[return-value]

    def _run_stacked(self, chunks: Sequence) -> list[list[np.ndarray]]:
        cs = list(chunks)
        feeds = (np.concatenate([c.x for c in cs]),                         # (N, W, F)
                 np.concatenate([c.offset for c in cs]),                    # (N,)
                 cs[0].required_cache_size,                                 # (1,)
                 np.stack([c.attn_cache for c in cs]),                      # (N, layers, H, Tc, 2 d_k)
                 np.stack([c.conv_cache[:, 0] for c in cs]),                # (N, layers, D, P)
                 np.concatenate([c.attn_mask for c in cs]))                 # (N, 1, Tc + C)
        lp, attn, conv = self._session.run(None, dict(zip(self._inputs, feeds)))[:3]
        with self._lock:
            self._calls += 1
            self._chunks += len(cs)
        return [[lp[n: n + 1], attn[n], conv[n][:, None]] for n in range(len(cs))]


def decode_streams_batched(runner: BatchedChunkRunner, run_one: Callable, streams: Sequence,
                           return_exceptions: bool = False) -> list:
    """``OnlineRecognizer.decode_streams`` through the batched graph (see the module docstring).

    Args:
        runner: the batched graph.
        run_one: runs one chunk through the batch-1 graph.
        streams: :class:`~slimasr.runtime.Stream` objects (each at most once).
        return_exceptions: put a failing stream's exception in its result slot instead of raising it.
    Returns:
        each stream's ``publish`` result (partial or final), in order.
    Raises:
        the first failing stream's exception (after the others were decoded), unless ``return_exceptions``.
    """
    streams = list(streams)
    if len({id(s) for s in streams}) != len(streams):
        raise ValueError("a stream appears twice in decode_streams")
    errors: dict[int, BaseException] = {}
    ran = [False] * len(streams)
    with contextlib.ExitStack() as held:
        # one lock order for every caller: two threads decoding overlapping sets cannot deadlock
        for s in sorted(streams, key=id):
            held.enter_context(s.lock)
        while True:
            todo = []
            for k, s in enumerate(streams):
                if k in errors:
                    continue
                try:
                    chunk = s.next_chunk()
                except Exception as e:  # the stream failed earlier: NonFiniteStateError
                    errors[k] = e
                    continue
                if chunk is not None:
                    todo.append((k, chunk))
            if not todo:
                break
            outputs = runner.run([c for _, c in todo], run_one)
            for (k, chunk), out in zip(todo, outputs):
                try:
                    streams[k].chunk_decoded(chunk, *out)
                    ran[k] = True
                except Exception as e:  # non-finite outputs: this stream only
                    errors[k] = e
        results: list = []
        for k, s in enumerate(streams):
            if k not in errors:
                try:
                    results.append(s.publish(ran[k]))
                    continue
                except Exception as e:  # a beam-search decoder's or the stream's own error
                    errors[k] = e
            results.append(errors[k])
    if errors:                                      # every stream was decoded: now the first error, unless returned
        stream_failed(errors[min(errors)], return_exceptions)
    return results
