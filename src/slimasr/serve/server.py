"""The streaming websocket server: one :class:`~slimasr.runtime.Stream` per connection, decoded on worker threads.

Torch-free: it serves an ONNX export with :mod:`slimasr.runtime`. Without a model directory the embedded
default model is exported once (in a separate ``python -m slimasr.cli export onnx`` process, so this process
never imports torch) into the export cache (:mod:`slimasr.export.cache`, ``$SLIMASR_CACHE/exports``), and
later starts reuse it (:func:`ensure_default_export`).

**Structure.** The asyncio event loop (the ``websockets`` library) only moves messages: each connection has a
:class:`~slimasr.serve.protocol.ProtocolHandler` (the sherpa-onnx or WeNet protocol, told apart by the first
message), a receive loop that turns messages into buffered audio, and a decode loop that hands the buffered
audio to the :class:`DecodeScheduler` and sends the results back. Feature extraction, the ONNX chunk calls,
greedy decoding and endpointing (:mod:`slimasr.serve.endpoint`) all run on the scheduler's worker threads; a
connection has at most one job in flight, so its results come in order.

**Batching.** A connection hands its buffered audio to the :class:`DecodeScheduler` as a job only once it
completes the stream's next chunk (``Stream.samples_until_ready``; a resampled stream, whose count is unknown,
at every message) or the client ends the audio: a result can only change when a chunk runs, so a job per
message would only add hand-overs (and rounds without work), 6.4 of them per chunk with 100 ms messages and
640 ms chunks. A job holds at most ``PIECES_PER_JOB`` hops of audio (clients sending faster than real time), and
each connection has at most one in flight. ``workers`` threads each take up to ``batch_size`` queued jobs
(sherpa-onnx's ``--max-batch-size``) and decode them in rounds, round-robin, with ``threads`` onnxruntime
intra-op threads per call: each round feeds every job's stream up to its next ready chunk (the messages that
complete it in one ``accept_waveform`` call: one features computation per chunk, not per message); a job goes
back to its connection as soon as its own audio is decoded (its results are sent and its next job queued while
the worker goes on), not when the whole batch is, and the jobs a round finishes wake the event loop once
(:class:`_Handoff`). A connection's decode loop is woken only when its buffered audio can complete a chunk, and
the idle timeout is one timer per ``idle_timeout``, not one per message. When the export has a batched streaming
graph (``slimasr export onnx --streaming --batched``, :mod:`slimasr.export.batched`) and ``batched`` is on, a
round's ready chunks run in *one* graph call of up to ``batch_size`` chunks (``OnlineRecognizer.decode_streams``, the same results as one
stream at a time); while fewer than ``batch_size`` are ready the worker takes in jobs queued since, for at most
``max_batch_wait`` seconds before the call (the wait adds at most that to a result's latency). The defaults
there, 32 chunks per call and 25 ms (``BATCHED_BATCH_SIZE``, ``MAX_BATCH_WAIT``), make calls fuller where the
server is near its capacity (17-21 chunks per call against 11 with 16 and 10 ms, 7 with 8 and 10 ms), which cut
its CPU per stream-second by 2-5 % (``benchmarks/batched_streams.py --fixed-streams``): a call of the default
model's batched graph costs about 3 ms of CPU however many chunks it holds, plus 3.5 ms per chunk
(``benchmarks/batched_chunk_cost.py``). Otherwise the
streaming graph's batch-1 caches (sherpa-onnx's WeNet CTC interface) make the streams' chunks run one after
another. onnxruntime releases the GIL; about 80 % of a stream's decoding time is
spent inside it (12-layer default model, chunk 16), the rest in Python (features, greedy search, text).
Websocket compression (permessage-deflate) is off: audio samples do not compress (a 100 ms float32 message
deflates to 93 %), and deflating every message cost the clients and the server CPU time per stream.

Measured on a 2-core machine shared with other jobs, where this process got about half a core (``process_time``
/ wall = 0.5 in every configuration): 8 streams of 4 s fed in 100 ms messages as fast as possible through
:class:`DecodeScheduler` in-process, medians of interleaved runs in x real time — 1 worker 13.2 and 14.6,
1 worker taking 8 streams per call 15.9, 2 workers 14.0 and 14.2 (with 8 per call: 14.2 and 14.3), 1 worker
with 2 intra-op threads 6.5 and 6.8. Collecting streams per call (option b) and adding workers (option a) were
within the run-to-run noise (about 10 %) — with half a core no parallelism can show — while intra-op threads
beyond the free cores *halved* throughput. Through the network (``slimasr bench-server --find-max``, real-time
clients, 6 s each), 1 and 2 workers both sustained 8 streams in real time under that load (both 16 at a
quieter moment); at 8 streams 2 workers kept the partial-result latency p50 at 96 ms where 1 worker, near
saturation, was at 500 ms. Hence the defaults: ``threads=1``, ``batch_size=8`` (``BATCH_SIZE``) without the
batched graph, and ``workers`` = the cores
available (``slimasr serve``): on dedicated cores, workers are what can use them (not measured here: with 20 %
of each worker's time under the GIL, about five workers fit before the GIL becomes the limit).

**Offline models.** An offline export (a model that cannot stream: ESPnet's legacy relative positions, or a
front-end that normalises each utterance, as NeMo's and ESPnet's ``utterance_mvn`` do) is served too, the only
faithful way: each connection's audio is collected and decoded as one utterance when the client ends it, so the
client gets a single final result (no partial results, no endpointing; ``max_duration`` bounds the audio held).
The offline graph itself is the :class:`~slimasr.runtime.OfflineRecognizer`'s.

**Endpointing** ends segments on trailing silence and on length (sherpa-onnx's rules 1/2/3), so one connection
can stream for hours: each segment's result is sent as final and the stream is reset, keeping its caches.

**Limits** (:class:`ServerConfig`), each closing only the connection concerned, with the close codes of
:class:`~slimasr.serve.protocol.CloseCode`: ``max_streams`` (new connections are closed with 1013 while the
current ones continue), ``max_message_bytes`` (1009, from the websocket layer), ``idle_timeout`` and
``max_duration`` (the stream is finished, its final result sent, then closed with 1008). Malformed input
closes with 1003/1007/1008 (WeNet clients also get ``{"status": "failed", "message": ...}``); a client that
vanishes just drops its stream.

**Bad audio** never silences a stream: the protocol layer refuses NaN/inf and float samples far outside [-1, 1]
(1007, naming the problem); audio the runtime refuses (``accept_waveform`` raising ``ValueError``) closes with
1007 and its message; any other decoding failure - a stream whose log-probabilities or caches became non-finite -
closes that connection with 1011 naming it, never with empty results.

**Access** (:mod:`slimasr.serve.access`): with ``certfile`` the same port speaks TLS (``wss://``, ``https://``);
with tokens a websocket handshake without a valid bearer token (``Authorization`` header or ``?token=``) is
answered 401 before any audio is read, and with ``allow_origins`` browser pages from other origins 403 (both
counted in ``slimasr_rejected_connections_total``). Tokens never reach a log line; SIGHUP re-reads the tokens
file, so tokens can be rotated without dropping streams.

**HTTP** on the same port: ``GET /`` the browser page (:class:`BrowserPage`, files in ``static/``),
``GET /healthz`` (200 ``ok``, 503 ``draining`` during shutdown) and ``GET /metrics``
(Prometheus: ``slimasr_active_streams``; ``slimasr_chunk_latency_seconds``, audio received -> its chunk's result
sent; ``slimasr_final_latency_seconds``, end of input -> final result sent; ``slimasr_decode_seconds``;
``slimasr_real_time_factor``, compute / audio since the start, or per interval
``rate(slimasr_compute_seconds_total[1m]) / rate(slimasr_audio_seconds_total[1m])``;
``slimasr_stream_real_time_factor``; ``slimasr_batched_calls`` and ``slimasr_batched_chunks``, calls of the
batched graph and the chunks they ran; connection, result and rejection counters).

**Shutdown.** SIGTERM (or SIGINT) stops accepting connections, finishes every stream in flight as if its
client had ended the audio (final result; WeNet also ``speech_end``), closes them with 1001 and exits; streams
still open after ``shutdown_timeout`` are aborted.

**Scale-out is horizontal.** Connections share nothing but the read-only model, so capacity grows by running
more server processes (one per few cores, or per GPU) behind any TCP/websocket load balancer (nginx, HAProxy,
a Kubernetes Service) that routes each connection to one process; ``/healthz`` is the readiness probe
(it turns 503 while draining) and ``max_streams`` the per-process admission limit, so a refused client
(1013) retries and lands on another replica. There is no cluster layer: no shared state, no sticky sessions
beyond the single connection.

Example::

    from slimasr.runtime import Recognizer
    from slimasr.serve import ServerConfig, run_server
    run_server(Recognizer.from_onnx("exp/onnx-streaming", num_threads=1), ServerConfig(port=6006, workers=2))
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .access import AccessPolicy, RedactingLogger, read_tokens_file, server_ssl_context
from .endpoint import EndpointConfig, Endpointer
from .protocol import PROTOCOLS, Audio, Close, CloseCode, Finish, Phase, ProtocolHandler, Send, Transcript

__all__ = ["AsrServer", "DecodeScheduler", "ServerConfig", "ServerMetrics", "ensure_default_export", "run_server"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE, DEFAULT_LEFT_CHUNKS = 16, 4    # how the embedded default model is exported for serving
OFFLINE_PIECE_SECONDS = 0.5  # offline models: audio per piece (nothing is decoded until the utterance ends)
PIECES_PER_JOB = 4            # hops of audio one job decodes before other streams get their turn
BATCH_SIZE = 8                # jobs a worker takes at once without the batched graph (decoded one after another)
BATCHED_BATCH_SIZE = 32       # with it: chunks per graph call (see the module docstring on batching)
MAX_BATCH_WAIT = 0.025        # with it: seconds a worker waits for more ready chunks before a call
MAX_PENDING_SECONDS = 30.0    # buffered audio per connection before the server stops reading it (back-pressure)


@dataclass(frozen=True)
class ServerConfig:
    """How :class:`AsrServer` listens, schedules and limits (times in seconds)."""

    host: str = "127.0.0.1"
    port: int = 6006                       # 0 = any free port (see AsrServer.port)
    protocol: str = "auto"                 # auto | sherpa | wenet
    sample_rate: int = 16000               # sample rate of the clients' audio (resampled to the model's)
    max_streams: int = 64                  # concurrent connections; more are closed with 1013
    max_message_bytes: int = 1 << 20       # larger messages close the connection with 1009
    idle_timeout: float = 30.0             # no message for this long: finish the stream, close with 1008
    max_duration: float = 3600.0           # seconds of audio per connection: finish, close with 1008
    workers: int = 2                       # decode threads (about the number of cores)
    batch_size: int | None = None          # ready streams one worker takes per call (None: BATCHED_BATCH_SIZE
                                           # with the batched graph, else BATCH_SIZE)
    batched: bool = True                   # their chunks in one call of the export's batched graph, if it has one
    max_batch_wait: float = MAX_BATCH_WAIT  # batched: seconds a worker waits for more ready chunks per call
    shutdown_timeout: float = 30.0         # after SIGTERM, abort streams not finished by then
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    access: AccessPolicy = field(default_factory=AccessPolicy)   # tokens (401) and browser origins (403)
    tokens_file: str | None = None         # more tokens, one per line; re-read on SIGHUP (token rotation)
    certfile: str | None = None            # PEM certificate chain: serve wss:// and https://
    keyfile: str | None = None             # its private key (PEM), unless it is in certfile

    def __post_init__(self) -> None:
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("a keyfile needs its certfile")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        for name in ("max_streams", "max_message_bytes", "workers", "batch_size", "sample_rate"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_batch_wait <= 1:
            raise ValueError(f"max_batch_wait must be 0..1 seconds, got {self.max_batch_wait}")
        for name in ("idle_timeout", "max_duration", "shutdown_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive seconds, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")


# ---------------------------------------------------------------------------------------------- metrics
class ServerMetrics:
    """The Prometheus metrics of one server (its own registry: no global state)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.active_streams = Gauge("slimasr_active_streams", "Open recognition connections.", registry=r)
        self.connections = Counter("slimasr_connections", "Accepted connections, by protocol once known.",
                                   ["protocol"], registry=r)
        self.rejected = Counter("slimasr_rejected_connections", "Connections refused at once (max_streams, "
                                "shutdown, unauthorized, origin).", ["reason"], registry=r)
        self.closes = Counter("slimasr_closed_connections", "Connections closed by the server, by close code.",
                              ["code"], registry=r)
        self.results = Counter("slimasr_results", "Result messages sent.", ["kind"], registry=r)
        self.result_count = {k: self.results.labels(k) for k in ("partial", "endpoint", "final")}
        self.final_latency = Histogram(
            "slimasr_final_latency_seconds", "From the end of a stream's input to sending its final result.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4), registry=r)
        self.chunk_latency = Histogram(
            "slimasr_chunk_latency_seconds", "From receiving the audio that completed a chunk to sending its result.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4), registry=r)
        self.decode_seconds = Histogram(
            "slimasr_decode_seconds", "Compute time of one stream's job (features, ONNX chunks, decoding).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=r)
        self.batch_streams = Histogram("slimasr_batch_streams", "Streams a worker decoded in one call.",
                                       buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.audio_seconds = Counter("slimasr_audio_seconds", "Audio decoded.", registry=r)
        self.compute_seconds = Counter("slimasr_compute_seconds", "Worker time spent decoding.", registry=r)
        self.stream_rtf = Histogram("slimasr_stream_real_time_factor", "Compute / audio of each finished stream.",
                                    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0), registry=r)
        self._audio = 0.0
        self._compute = 0.0
        self._lock = threading.Lock()
        self.batched_stats = lambda: (0, 0)         # (calls, chunks) of the batched graph (set by the server)
        Gauge("slimasr_batched_calls", "Calls of the batched streaming graph.",
              registry=r).set_function(lambda: self.batched_stats()[0])
        Gauge("slimasr_batched_chunks", "Chunks run by batched calls (/ calls: mean streams per call).",
              registry=r).set_function(lambda: self.batched_stats()[1])
        Gauge("slimasr_real_time_factor", "Compute seconds per audio second since the server started.",
              registry=r).set_function(self.real_time_factor)

    def add_work(self, audio: float, compute: float) -> None:
        with self._lock:
            self._audio += audio
            self._compute += compute
        self.audio_seconds.inc(audio)
        self.compute_seconds.inc(compute)

    def real_time_factor(self) -> float:
        with self._lock:
            return self._compute / self._audio if self._audio > 0 else 0.0

    def exposition(self) -> tuple[str, str]:
        """(body, content type) of the ``/metrics`` page."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry).decode("utf-8"), CONTENT_TYPE_LATEST


# ---------------------------------------------------------------------------------------------- scheduler
@dataclass(eq=False)
class _Job:
    """One connection's audio to decode (and whether to finish the stream), run on a worker thread."""

    conn: "_Connection"
    pieces: list[tuple[np.ndarray, float]]     # (samples, monotonic time they arrived), each at most one hop
    finish: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    events: list[tuple[str, Transcript, float]] = field(default_factory=list)   # (kind, result, audio arrival)
    compute: float = 0.0
    audio: float = 0.0
    error: BaseException | None = None
    fed: int = 0                               # pieces given to the stream so far
    finished: bool = False                     # the stream's input was finished (the final round ran)

    @property
    def done(self) -> bool:
        return self.error is not None or (self.fed >= len(self.pieces) and (self.finished or not self.finish))


class DecodeScheduler:
    """Worker threads that decode connections' jobs; each takes up to ``batch_size`` queued jobs at once and
    runs them in rounds, round-robin (see the module docstring on batching). A job is handed back as soon as
    its own audio is decoded, so its connection can send the results and queue its next audio while the
    worker goes on with the others.

    ``batched``: run the chunks that each round makes ready in one call of the recognizer's batched graph
    (only when ``recognizer.supports_batch``, up to ``batch_size`` chunks per call); while fewer are ready the
    worker takes in jobs queued since, for at most ``max_batch_wait`` seconds (:meth:`_gather`)."""

    def __init__(self, recognizer, workers: int = 1, batch_size: int | None = None, sample_rate: int = 16000,
                 metrics: ServerMetrics | None = None, batched: bool = False, max_batch_wait: float = 0.0) -> None:
        self.recognizer = recognizer
        self.batched = bool(batched and recognizer.is_streaming and getattr(recognizer, "supports_batch", False))
        self.batch_size = batch_size or (BATCHED_BATCH_SIZE if self.batched else BATCH_SIZE)
        self.max_batch_wait = max_batch_wait if self.batched else 0.0
        if self.batched and metrics is not None:
            metrics.batched_stats = lambda: recognizer.batched_stats
        self.sample_rate = sample_rate
        self.metrics = metrics
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._handoffs: dict[asyncio.AbstractEventLoop, _Handoff] = {}
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"slimasr-decode-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, job: _Job) -> None:
        with self._cond:
            self._queue.append(job)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=10)

    def _take(self, most: int) -> list[_Job]:
        """Up to ``most`` queued jobs (the caller holds ``_cond``)."""
        return [self._queue.popleft() for _ in range(min(most, len(self._queue)))]

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._take(self.batch_size)
            try:
                self._run(batch)
            except Exception as e:  # never lose a worker: fail the batch's connections instead
                log.exception("decode worker failed")
                for job in batch:
                    job.error = job.error or e
                self._hand_back(batch)

    def _hand_back(self, jobs: list[_Job]) -> None:
        """Give finished jobs back to their connections' event loops: one wake-up of a loop for all of them,
        and none while an earlier wake-up of that loop is still pending (:class:`_Handoff`)."""
        woken: dict[int, _Handoff] = {}
        for job in jobs:
            if self.metrics is not None:
                self.metrics.decode_seconds.observe(job.compute)
                self.metrics.add_work(job.audio, job.compute)
            h = self._handoff(job.loop)
            h.post(job)
            woken[id(h)] = h
        for h in woken.values():
            h.wake()

    def _handoff(self, loop: asyncio.AbstractEventLoop) -> "_Handoff":
        h = self._handoffs.get(loop)
        if h is None:
            with self._cond:
                h = self._handoffs.setdefault(loop, _Handoff(loop))
        return h

    def _run(self, batch: list[_Job]) -> None:
        """Decode ``batch`` in rounds until every job is done, handing each back as soon as it is; a batching
        worker may add jobs to it (:meth:`_gather`)."""
        if self.metrics is not None:
            self.metrics.batch_streams.observe(len(batch))
        while batch:
            self._round(batch)
            done = [j for j in batch if j.done]
            for job in done:
                batch.remove(job)
            self._hand_back(done)

    def _round(self, batch: list[_Job]) -> None:
        """Feed each job's stream up to its next ready chunk (or finish its input), decode them - in one batched
        call or one after another - and record results and endpoints."""
        fed = self._feed_round(batch)
        if self.batched:
            self._gather(fed, batch)
        if not fed:
            return
        rec = self.recognizer
        if self.batched:
            t0 = time.perf_counter()
            try:
                results = rec.decode_streams([job.conn.stream for job, *_ in fed], return_exceptions=True)
            except Exception as e:  # a failure of the call itself (not of one stream): every stream in it
                results = [e] * len(fed)
            share = (time.perf_counter() - t0) / len(fed)
            for (job, samples, arrived, before), result in zip(fed, results):
                t0 = time.perf_counter()
                self._record(job, samples, arrived, before, result)
                job.compute += share + time.perf_counter() - t0
            return
        for job, samples, arrived, before in fed:
            if samples is not None and not rec.is_streaming:
                continue                           # offline: decoded as a whole when the input ends
            t0 = time.perf_counter()
            try:
                stream = job.conn.stream
                result = rec.decode(stream) if rec.is_streaming else _offline_final(rec, stream, job.conn.samples_fed)
            except Exception as e:  # recorded below: this connection only
                result = e
            self._record(job, samples, arrived, before, result)
            job.compute += time.perf_counter() - t0

    def _feed_round(self, jobs: list[_Job]) -> list[tuple]:
        """One round's input: each job's stream gets its pieces until a chunk is ready (a streaming model) or
        one piece (an offline one), or, with no pieces left, its input finished. Returns (job, last samples
        fed or None for the end of input, when they arrived, the stream's result before) per job fed."""
        fed = []
        for job in jobs:
            if job.error is not None or job.done:
                continue
            t0 = time.perf_counter()
            if job.fed < len(job.pieces):
                before = job.conn.stream.result
                while job.fed < len(job.pieces):
                    samples, arrived = self._next_samples(job)
                    self._feed(job, samples)
                    if job.error is not None or self._chunk_ready(job):
                        break
            else:
                samples, arrived, before = None, time.monotonic(), self._feed(job, None)
                job.finished = True
            job.compute += time.perf_counter() - t0
            if job.error is None:
                fed.append((job, samples, arrived, before))
        return fed

    def _next_samples(self, job: _Job) -> tuple[np.ndarray, float]:
        """The job's next pieces as one array, up to the piece that completes the stream's next chunk (all the
        pieces that one ``accept_waveform`` call may take without skipping a chunk's result), and when that last
        piece arrived. One call per chunk instead of one per message: the features of a whole chunk are computed
        at once (a tenth of the numpy calls with 100 ms messages and 640 ms chunks). Where the count is unknown
        (offline models, resampled streams: ``samples_until_ready`` is 0) one piece."""
        need = job.conn.stream.samples_until_ready() if self.recognizer.is_streaming else 0
        first = job.fed
        taken = 0
        while job.fed < len(job.pieces):
            samples, arrived = job.pieces[job.fed]
            job.fed += 1
            taken += samples.size
            if taken >= need:
                break
        if job.fed - first == 1:
            return samples, arrived
        return np.concatenate([p for p, _ in job.pieces[first: job.fed]]), arrived

    def _chunk_ready(self, job: _Job) -> bool:
        return not self.recognizer.is_streaming or job.conn.stream.is_ready()

    def _gather(self, fed: list[tuple], batch: list[_Job]) -> None:
        """Batching: while fewer than ``batch_size`` of the fed streams have a chunk ready, take newly queued jobs
        into ``batch`` and feed them into ``fed``, for at most ``max_batch_wait`` seconds. Rounds without a
        ready chunk do not wait."""
        ready = sum(job.conn.stream.is_ready() for job, *_ in fed)
        if not ready or ready >= self.batch_size or self.max_batch_wait <= 0:
            return
        deadline = time.monotonic() + self.max_batch_wait
        while ready < self.batch_size and time.monotonic() < deadline:
            with self._cond:
                while not self._queue and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._cond.wait(left)
                new = self._take(self.batch_size - ready)
            if not new:
                return
            batch.extend(new)
            more = self._feed_round(new)
            fed.extend(more)
            ready += sum(job.conn.stream.is_ready() for job, *_ in more)

    def _feed(self, job: _Job, samples: np.ndarray | None):
        """Give a piece of audio to the job's stream (None: finish its input); returns its result before
        decoding. A refused piece sets ``job.error``."""
        conn = job.conn
        stream = conn.stream
        try:
            if samples is None:
                if self.recognizer.is_streaming:
                    stream.input_finished()
                return None
            try:
                stream.accept_waveform(self.sample_rate, samples)
            except ValueError as e:        # the runtime refuses this audio: the client's data is invalid
                job.error = _ClientDataError(str(e))
                return None
            conn.samples_fed += samples.size
            job.audio += samples.size / self.sample_rate
            return stream.result
        except Exception as e:  # any other failure ends this connection only
            log.error("decoding failed for connection %s: %s", conn.name, e, exc_info=True)
            job.error = e
            return None

    def _record(self, job: _Job, samples: np.ndarray | None, arrived: float, before, result) -> None:
        """Turn a decoding result (or the exception it raised) into the job's events: the final result, an
        endpoint or a partial result when at least one chunk ran."""
        conn = job.conn
        try:
            if isinstance(result, BaseException):
                raise result
            if samples is None:
                job.events.append(("final", conn.transcript(result), arrived))
            elif result is not before:               # at least one chunk ran
                if conn.endpointer.check(conn.stream) is not None:
                    job.events.append(("endpoint", conn.transcript(result), arrived))
                    conn.endpointer.reset(conn.stream)
                else:
                    job.events.append(("partial", conn.transcript(result), arrived))
        except Exception as e:  # any other failure (e.g. a stream whose state became non-finite) ends this
            log.error("decoding failed for connection %s: %s", conn.name, e, exc_info=True)    # connection only
            job.error = e


def _offline_final(rec, stream, samples: int):
    """The final result of an offline model's stream: its whole audio decoded as one utterance; empty (as a
    stream's would be) when there is no audio or less than the model's shortest input."""
    from ..chunking import min_frames
    from ..features import num_frames
    from ..runtime import RecognitionResult

    if samples == 0 or num_frames(stream.waveform().size, rec.frontend) < min_frames(rec.info.right_context):
        return RecognitionResult(is_final=True)
    return rec.decode(stream)


class _ClientDataError(ValueError):
    """Audio of a connection that the runtime refused (``accept_waveform`` raised ``ValueError``)."""


def _error_close(e: BaseException) -> tuple[int, str]:
    """(close code, reason) for a job's failure: audio the runtime refused is the client's invalid data (1007,
    the runtime's message); anything else, such as a stream whose log-probabilities or caches became
    non-finite, is a failure of the server, reported as 1011 with its message - never a silently empty
    result."""
    from ..fileutil import exception_line

    message = exception_line(e)
    if isinstance(e, _ClientDataError):
        return CloseCode.INVALID_DATA, message
    return CloseCode.INTERNAL_ERROR, f"decoding failed: {message}"


class _Handoff:
    """Finished jobs on their way from worker threads to one event loop.

    :meth:`post` queues a job; :meth:`wake` schedules one callback on the loop (``call_soon_threadsafe``, a write
    to the loop's wake-up socket) that resolves every job queued by then - unless such a callback is already
    pending, which will take the new jobs too. A worker hands back the jobs a round finished with one wake-up,
    and two workers finishing rounds at about the same time share one: at saturation a batched call of k chunks
    costs one wake-up instead of k."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._jobs: list[_Job] = []
        self._pending = False           # a _drain callback is scheduled and has not taken the jobs yet

    def post(self, job: _Job) -> None:
        with self._lock:
            self._jobs.append(job)

    def wake(self) -> None:
        with self._lock:
            if self._pending or not self._jobs:
                return
            self._pending = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:            # the event loop is gone (shutdown): nobody waits
            with self._lock:
                self._pending = False
                self._jobs.clear()

    def _drain(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, []
            self._pending = False
        for job in jobs:
            if not job.future.done():
                job.future.set_result(None)


# ---------------------------------------------------------------------------------------------- connection
class _Connection:
    """One websocket connection: its protocol handler, stream, buffered audio and two loops."""

    def __init__(self, server: "AsrServer", ws) -> None:
        cfg = server.config
        self.server = server
        self.ws = ws
        self.name = _peer(ws)
        self.handler = ProtocolHandler(cfg.protocol)
        self.stream = server.recognizer.create_stream()
        self.endpointer = Endpointer(cfg.endpoint, server.recognizer.frame_seconds)
        self.sample_rate = cfg.sample_rate
        if server.recognizer.is_streaming:
            plan, fb = server.recognizer.plan, server.recognizer.frontend
            self.piece = max(1, int(plan.chunking.hop_shift * fb.frame_shift * cfg.sample_rate / fb.sample_rate))
        else:
            self.piece = max(1, int(OFFLINE_PIECE_SECONDS * cfg.sample_rate))
        self.max_samples = int(cfg.max_duration * cfg.sample_rate)
        self.max_pending = int(MAX_PENDING_SECONDS * cfg.sample_rate)
        self.pending: collections.deque[tuple[np.ndarray, float]] = collections.deque()
        self.pending_samples = 0
        self.samples_received = 0
        self.samples_fed = 0                       # written by the worker running this connection's job
        self.needs = 0                             # samples the stream needs before its next chunk can run
        self.compute_seconds = 0.0
        self.finish_requested = False
        self.finish_time = 0.0
        self.end_code: int = CloseCode.NORMAL
        self.end_reason = ""
        self.closed = False
        self.vanished = False
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._interruptible = False                # the receive loop is waiting where it may be cancelled
        self._recv_task: asyncio.Task | None = None
        self._recv_since: float | None = None      # loop time the receive loop began waiting for a message
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_expired = False
        self._counted_protocol = False

    # ------------------------------------------------------------------ loops
    async def run(self) -> None:
        self._recv_task = asyncio.create_task(self._receive_loop())
        decode_task = asyncio.create_task(self._decode_loop())
        try:
            await asyncio.wait({self._recv_task})
            await self._fail_on_error(self._recv_task)
            if self.vanished or self.closed or not self.finish_requested:
                decode_task.cancel()
            await asyncio.wait({decode_task})
            await self._fail_on_error(decode_task)
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            tasks = (self._recv_task, decode_task)
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)     # no task ends with an unread exception
            if not self.closed and not self.vanished:
                await self._close(CloseCode.NORMAL, "")
            if self.samples_fed:
                self.server.metrics.stream_rtf.observe(self.compute_seconds * self.sample_rate / self.samples_fed)

    async def _fail_on_error(self, task: asyncio.Task) -> None:
        """A loop that died of an unexpected exception closes the connection with 1011 (logged)."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("connection %s failed", self.name, exc_info=task.exception())
        if not self.closed and not self.vanished:
            await self._apply(self.handler.on_error(CloseCode.INTERNAL_ERROR, "internal error"))

    async def _receive_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        idle = self.server.config.idle_timeout
        while not self.closed and not self.finish_requested:
            try:
                self._interruptible = True
                self._recv_since = loop.time()     # the idle clock runs while waiting here (_check_idle)
                if self._idle_timer is None:
                    self._idle_timer = loop.call_at(self._recv_since + idle, self._check_idle)
                message = await self.ws.recv()
            except ConnectionClosed:
                self.vanished = not self.closed
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and self._idle_expired and not self.finish_requested and not self.closed:
                    task.uncancel()                # the idle timeout (_check_idle)
                    self._interruptible = False
                    await self.end_stream(CloseCode.POLICY_VIOLATION, f"idle timeout: no message for {idle:g} s")
                    return
                if task is None or not self.finish_requested and not self.closed:
                    raise
                task.uncancel()                    # our own interruption (end_stream from outside)
                return
            finally:
                self._interruptible = False
                self._recv_since = None
            await self._apply(self.handler.on_message(message))
            self._count_protocol()
            while self.pending_samples > self.max_pending and not self.closed and not self.finish_requested:
                self._progress.clear()
                try:
                    self._interruptible = True
                    await self._progress.wait()
                finally:
                    self._interruptible = False

    def _check_idle(self) -> None:
        """The idle timeout: one timer per ``idle_timeout`` rather than one per message. When it fires it looks at
        how long the receive loop has been waiting for the current message; past the timeout it interrupts the
        wait (the loop then finishes the stream), otherwise it sets itself for that wait's deadline. No timer runs
        while the loop is not waiting for a message (back-pressure); the next wait starts one."""
        self._idle_timer = None
        since = self._recv_since
        if since is None or self.closed or self.finish_requested:
            return
        idle = self.server.config.idle_timeout
        loop = asyncio.get_running_loop()
        if loop.time() - since >= idle:
            self._idle_expired = True
            if self._recv_task is not None and not self._recv_task.done():
                self._recv_task.cancel()
        else:
            self._idle_timer = loop.call_at(since + idle, self._check_idle)

    async def _decode_loop(self) -> None:
        scheduler = self.server.scheduler
        loop = asyncio.get_running_loop()
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            while not self.closed:
                finish = self.finish_requested
                if not finish and self.pending_samples < self.needs:
                    break                          # no chunk would complete: wait for more audio
                pieces = self._take_pieces()
                finish = finish and not self.pending
                if not pieces and not finish:
                    break
                job = _Job(self, pieces, finish, loop, loop.create_future())
                scheduler.submit(job)
                await job.future
                self.needs = self.stream_needs()
                self.compute_seconds += job.compute
                if job.error is not None:
                    await self._apply(self.handler.on_error(*_error_close(job.error)))
                    self._interrupt_receiver()
                    return
                for kind, transcript, arrived in job.events:
                    await self._send_result(kind, transcript, arrived)
                    if self.closed:
                        self._interrupt_receiver()
                        return

    async def _send_result(self, kind: str, t: Transcript, arrived: float) -> None:
        h = self.handler
        m = self.server.metrics
        if kind == "final":
            actions = h.on_final(t, self.end_code, self.end_reason)
            m.final_latency.observe(time.monotonic() - self.finish_time)
        else:
            actions = h.on_partial(t) if kind == "partial" else h.on_endpoint(t)
            m.chunk_latency.observe(time.monotonic() - arrived)
        if any(isinstance(a, Send) for a in actions):
            m.result_count[kind].inc()
        await self._apply(actions)

    def stream_needs(self) -> int:
        """Samples the stream still needs before its next chunk can run (0: decode whatever comes; offline
        models and resampled streams). Read between jobs only, when no worker holds the stream."""
        return self.stream.samples_until_ready() if self.server.recognizer.is_streaming else 0

    def _take_pieces(self) -> list[tuple[np.ndarray, float]]:
        """Pieces of at most one hop each from the buffered audio, up to PIECES_PER_JOB hops in all."""
        out: list[tuple[np.ndarray, float]] = []
        taken = 0
        while self.pending and taken < PIECES_PER_JOB * self.piece:
            x, t = self.pending.popleft()
            if x.size > self.piece:
                self.pending.appendleft((x[self.piece:], t))
                x = x[: self.piece]
            self.pending_samples -= x.size
            taken += x.size
            out.append((x, t))
        self._progress.set()
        return out

    # ------------------------------------------------------------------ actions
    async def _apply(self, actions) -> None:
        for a in actions:
            if self.closed:
                return
            if isinstance(a, Audio):
                self._add_audio(a.samples)
            elif isinstance(a, Finish):
                if not self.finish_requested:
                    self.finish_requested = True
                    self.finish_time = time.monotonic()
                self._wake.set()
            elif isinstance(a, Send):
                await self._send(a.text)
            elif isinstance(a, Close):
                await self._close(a.code, a.reason)
        if self.samples_received >= self.max_samples and not self.finish_requested and not self.closed:
            await self.end_stream(CloseCode.POLICY_VIOLATION,
                                  f"maximum stream duration of {self.server.config.max_duration:g} s reached")

    def _add_audio(self, x: np.ndarray) -> None:
        room = self.max_samples - self.samples_received
        if room <= 0:
            return
        if x.size > room:
            x = x[:room]
        self.samples_received += x.size
        self.pending.append((x, time.monotonic()))
        self.pending_samples += x.size
        if self.pending_samples >= self.needs:      # a chunk can complete: only then wake the decode loop
            self._wake.set()

    async def _send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(text)
        except ConnectionClosed:
            self.vanished = True
            self.closed = True
            self._interrupt_receiver()

    async def _close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.metrics.closes.labels(str(int(code))).inc()
        if code not in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
            log.info("closing %s with %d: %s", self.name, code, reason)
        try:
            await self.ws.close(int(code), reason)
        except Exception:  # the peer is gone; nothing more to do
            pass

    def _count_protocol(self) -> None:
        if not self._counted_protocol and self.handler.protocol != "auto":
            self._counted_protocol = True
            self.server.metrics.connections.labels(self.handler.protocol).inc()

    def _interrupt_receiver(self) -> None:
        t = self._recv_task
        if t is not None and self._interruptible and not t.done() and t is not asyncio.current_task():
            t.cancel()

    async def end_stream(self, code: int, reason: str) -> None:
        """The server ends this connection's input (shutdown, idle timeout, maximum duration): the stream is
        finished and its final result sent before closing with ``code``; a connection without a stream in
        progress is closed at once."""
        if self.closed or self.finish_requested:
            return
        actions = self.handler.end_input()
        if actions:
            self.end_code, self.end_reason = code, reason
            await self._apply(actions)
        else:
            await self._apply(self.handler.on_error(code, reason) if self.handler.phase is not Phase.WAITING
                              or self.handler.protocol == "wenet" else [Close(code, reason)])
        self._interrupt_receiver()

    def transcript(self, r) -> Transcript:
        """A runtime ``RecognitionResult`` in the protocols' terms (called on worker threads)."""
        pieces = self.server.token_pieces
        return Transcript(text=r.text, tokens=tuple(map(pieces.__getitem__, r.tokens)),
                          timestamps=r.timestamps, words=r.words, segment=r.segment, start_time=r.start_time,
                          audio_seconds=self.samples_fed / self.sample_rate)


def _peer(ws) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except Exception:  # a socket without an address (tests, closed transports)
        return "?"


# ---------------------------------------------------------------------------------------------- server
class AsrServer:
    """The websocket server around one :class:`~slimasr.runtime.Recognizer`: streaming, or offline (each
    utterance decoded when it ends; see the module docstring).

    Use :func:`run_server` from a script; in asyncio code::

        server = AsrServer(rec, ServerConfig(port=0))
        await server.start()            # server.port is the bound port
        ...
        await server.shutdown()         # finish streams in flight, stop
    """

    def __init__(self, recognizer, config: ServerConfig = ServerConfig()) -> None:
        self.recognizer = recognizer
        self.config = config
        # each token as sherpa-onnx shows it (the word-start mark as a space)
        self.token_pieces = tuple(s.replace("\u2581", " ") for s in recognizer.vocab.symbols)
        self.access = self._access_policy()            # replaced by reload_tokens()
        self.metrics = ServerMetrics()
        self.scheduler: DecodeScheduler | None = None
        self.connections: set[_Connection] = set()
        self.draining = False
        self._ws_server = None
        self._stopped: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return self._ws_server.sockets[0].getsockname()[1] if self._ws_server else self.config.port

    @property
    def tls(self) -> bool:
        return self.config.certfile is not None

    def _access_policy(self) -> AccessPolicy:
        """The configured policy plus the tokens of ``tokens_file`` (ValueError when it is unusable)."""
        cfg = self.config
        if cfg.tokens_file is None:
            return cfg.access
        return AccessPolicy(tokens=cfg.access.tokens + read_tokens_file(cfg.tokens_file),
                            allow_origins=cfg.access.allow_origins)

    def reload_tokens(self) -> bool:
        """Re-read ``tokens_file`` (SIGHUP): new handshakes are checked against its tokens, open connections go
        on. An unusable file is logged and the current tokens are kept. Returns whether the tokens changed."""
        try:
            access = self._access_policy()
        except ValueError as e:
            log.error("keeping the current tokens: %s", e)
            return False
        changed = access != self.access
        self.access = access
        log.warning("tokens reloaded from %s: %d accepted", self.config.tokens_file, len(access.tokens))
        return changed

    def warm_up(self) -> None:
        """Decode one second of silence, so the first client does not pay for onnxruntime's lazy setup."""
        sr = self.recognizer.frontend.sample_rate
        s = self.recognizer.create_stream()
        s.accept_waveform(sr, np.zeros(sr, np.float32))
        if self.recognizer.is_streaming:
            s.input_finished()
        self.recognizer.decode(s)

    async def start(self) -> None:
        from websockets.asyncio.server import serve

        cfg = self.config
        ssl_context = server_ssl_context(cfg.certfile, cfg.keyfile) if cfg.certfile else None
        self._page = BrowserPage(self)
        self._stopped = asyncio.Event()
        self.scheduler = DecodeScheduler(self.recognizer, cfg.workers, cfg.batch_size, cfg.sample_rate,
                                         self.metrics, batched=cfg.batched, max_batch_wait=cfg.max_batch_wait)
        self._ws_server = await serve(self._handle, cfg.host, cfg.port, process_request=self._http,
                                      max_size=cfg.max_message_bytes, max_queue=64, ping_interval=20,
                                      ping_timeout=20, close_timeout=5, ssl=ssl_context, compression=None,
                                      logger=RedactingLogger(logging.getLogger("websockets.server")))

    async def _http(self, connection, request):
        """``process_request``: plain HTTP (/healthz, /metrics, the browser page) and the handshake's access
        checks (401 without a valid token, 403 from an origin not allowed); None lets the handshake go on."""
        path = request.path.split("?", 1)[0]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            refusal = self.access.check(request.headers, request.path)
            if refusal is None:
                return None
            status, reason, message = refusal
            self.metrics.rejected.labels(reason).inc()
            response = connection.respond(status, message)
            if status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="slimasr"'
            return response
        if path == "/healthz":
            return connection.respond(503 if self.draining else 200, "draining\n" if self.draining else "ok\n")
        if path == "/metrics":
            body, ctype = self.metrics.exposition()
            return _with_type(connection.respond(200, body), ctype)
        return self._page.respond(connection, path)

    async def _handle(self, ws) -> None:
        cfg = self.config
        if self.draining:
            self.metrics.rejected.labels("shutdown").inc()
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        if len(self.connections) >= cfg.max_streams:
            self.metrics.rejected.labels("max_streams").inc()
            await ws.close(CloseCode.TRY_AGAIN_LATER,
                           f"server busy: all {cfg.max_streams} streams in use; try again later")
            return
        conn = _Connection(self, ws)
        self.connections.add(conn)
        self.metrics.active_streams.inc()
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            self.metrics.active_streams.dec()

    async def shutdown(self) -> None:
        """Stop accepting, finish the streams in flight (final results), close them with 1001, stop workers."""
        if self._ws_server is None or self.draining:
            return
        self.draining = True
        log.info("shutting down: finishing %d stream(s)", len(self.connections))
        self._ws_server.close(close_connections=False)       # stop listening; open connections go on
        await asyncio.gather(*(c.end_stream(CloseCode.GOING_AWAY, "server shutting down")
                               for c in list(self.connections)))
        try:
            await asyncio.wait_for(self._ws_server.wait_closed(), self.config.shutdown_timeout)
        except TimeoutError:
            log.warning("%d stream(s) not finished after %g s; closing them", len(self.connections),
                        self.config.shutdown_timeout)
            for c in list(self.connections):
                c.ws.transport.abort()
            await self._ws_server.wait_closed()
        self.scheduler.close()
        if self._stopped is not None:
            self._stopped.set()

    async def serve_until_signalled(self, ready=None) -> None:
        """Start, call ``ready(self)``, serve until SIGTERM/SIGINT, then :meth:`shutdown`; SIGHUP re-reads the
        tokens file (:meth:`reload_tokens`)."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.config.tokens_file is not None:
            loop.add_signal_handler(signal.SIGHUP, self.reload_tokens)
        if ready is not None:
            ready(self)
        await stop.wait()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await self.shutdown()


# ---------------------------------------------------------------------------------------------- browser page
def _with_type(response, content_type: str, **headers: str):
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    for k, v in headers.items():
        response.headers[k.replace("_", "-")] = v
    return response


class BrowserPage:
    """The page at ``GET /`` (``static/``, package data: no CDN): it captures the microphone or reads a
    dropped file, converts it to the server's sample rate, mono, in the page and streams it over the
    websocket at the same URL, showing partial and final results. ``GET /config.json`` tells it the sample
    rate and protocol. Files are read once; other paths get 404."""

    FILES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js",
             "/capture-worklet.js": "capture-worklet.js", "/style.css": "style.css"}
    TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8"}
    # 'self' covers the same host's ws:// and wss:// (CSP level 3); nothing is loaded from elsewhere
    CSP = ("default-src 'self'; connect-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

    def __init__(self, server: "AsrServer") -> None:
        from importlib.resources import files

        root = files("slimasr.serve") / "static"
        self._files = {name: (root / name).read_text(encoding="utf-8") for name in set(self.FILES.values())}
        self._server = server

    def respond(self, connection, path: str):
        if path == "/config.json":
            cfg = self._server.config
            body = json.dumps({"sample_rate": cfg.sample_rate,
                               "protocol": "sherpa" if cfg.protocol == "auto" else cfg.protocol,
                               "token_required": bool(self._server.access.tokens)})
            return _with_type(connection.respond(200, body), "application/json", Cache_Control="no-cache")
        name = self.FILES.get(path)
        if name is None:
            return connection.respond(404, f"not found: {path[:100]}\n")
        return _with_type(connection.respond(200, self._files[name]), self.TYPES[Path(name).suffix], Cache_Control="no-cache",
                          Content_Security_Policy=self.CSP, X_Content_Type_Options="nosniff",
                          Referrer_Policy="no-referrer")


def run_server(recognizer, config: ServerConfig = ServerConfig(), ready=None) -> None:
    """Serve ``recognizer`` until SIGTERM/SIGINT (blocking). ``ready(server)`` is called once listening."""
    server = AsrServer(recognizer, config)
    server.warm_up()
    asyncio.run(server.serve_until_signalled(ready))


# ---------------------------------------------------------------------------------------------- default model
def ensure_default_export(cache_dir: str | os.PathLike | None = None, *, model_file: str | os.PathLike | None = None,
                          chunk_size: int = DEFAULT_CHUNK_SIZE, left_chunks: int = DEFAULT_LEFT_CHUNKS,
                          command: list[str] | None = None) -> Path:
    """The streaming ONNX export (with int8) of the embedded default model, from the export cache
    (:func:`slimasr.export.cache.cached_onnx_export`; the same entry ``slimasr decode`` uses for this chunking).

    A missing export is written by a separate process (``python -m slimasr.cli export onnx``, the only step that
    needs torch), so this process never imports torch.

    Args:
        cache_dir: where exports live (default :func:`slimasr.export.cache.exports_dir`).
        model_file: the model to export (default: the embedded one).
        command: the export command to run, with ``{out}`` for the output directory (tests).
    Raises:
        FileNotFoundError: no model file.
        RuntimeError / ValueError: the export process failed (its error output is in the message) or wrote no
            usable export.
    """
    from ..export.cache import ExportKind, cached_onnx_export

    kind = ExportKind(streaming=True, chunk_size=chunk_size, left_chunks=left_chunks, int8=True,
                      batched=True)
    return cached_onnx_export(model_file, kind, root=cache_dir, separate_process=True, command=command)
