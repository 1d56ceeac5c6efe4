"""Load test of a streaming server: N concurrent websocket clients stream real audio at real-time pace.

Works against ``slimasr serve`` and against any server speaking the sherpa-onnx or WeNet protocol (see
:mod:`slimasr.serve.protocol`). Each client takes audio from a manifest (``audio_filepath`` of its rows, one row
per client in turn, or ``duration`` seconds made of consecutive rows), sends it in ``message_seconds`` pieces —
at the pace of the audio with ``realtime`` (the default), as fast as the server reads otherwise — ends it,
and records when each reply arrives.

**Latencies** (seconds):

* *partial* / *endpoint*: from sending the audio a result covers to receiving the result. slimasr's replies
  carry ``audio_seconds``, the audio the server had received when it computed the result; the message that
  completed that audio is the one timed. For servers that do not send it, the last message sent before the
  reply is used (which under-states latency once the server falls behind).
* *first partial*: from the first audio message to the first partial result.
* *final*: from the end of the audio (``Done`` / the end signal) to the final result.

**Refusals** are not failures: a client the server turns away at its admission limit (close code 1013, "try
again later", or an HTTP 503/429 handshake answer) is counted in ``refused`` with the server's reason; every
other client that ends without its final result is counted in ``errors``.

**Real time.** A run stays real time when no client failed or was refused, the 95th percentiles of the partial
and final latencies are at most ``max_latency``, and the clients themselves kept pace (the most a message was
sent late, ``client_lag_max``, is under ``max_latency``; otherwise the load generator, not the server, is the
limit and the run counts as failed). :func:`find_max_streams` doubles N until a run fails, then bisects, and
says why it stopped: ``real_time`` (latency or errors), ``admission_limit`` (the server refused streams: its
``--max-streams``, not its speed, was reached) or ``limit`` (the largest N asked for passed).

Every task a client starts is awaited before the client returns, so no exception is left unretrieved.

Example::

    from slimasr.serve.loadtest import BenchConfig, load_audio_rows, run_bench
    audio = load_audio_rows("data/synth8/test_espeak.jsonl")
    print(run_bench("ws://127.0.0.1:6006", audio, BenchConfig(streams=8))["partial_latency"])
"""
from __future__ import annotations

import asyncio
import bisect
import json
import logging
import random
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BenchConfig", "StreamStats", "find_max_streams", "load_audio_rows", "percentiles", "run_bench",
           "sweep_summary"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class BenchConfig:
    """One load-test run."""

    streams: int = 1                 # concurrent clients
    protocol: str = "sherpa"         # sherpa | wenet
    realtime: bool = True            # pace messages at the audio's speed
    message_seconds: float = 0.1     # audio per message
    duration: float | None = None    # seconds per client (consecutive rows, looped); None = one row each
    ramp: float = 1.0                # clients start spread over this many seconds
    max_latency: float = 1.0         # p95 partial/final latency allowed for "real time"
    timeout: float = 60.0            # seconds to wait for a final result after the end of the audio
    seed: int = 0                    # start offsets and row order

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise ValueError(f"streams must be >= 1, got {self.streams}")
        if self.protocol not in ("sherpa", "wenet"):
            raise ValueError(f"protocol must be 'sherpa' or 'wenet', got {self.protocol!r}")
        if not self.message_seconds > 0:
            raise ValueError(f"message_seconds must be positive, got {self.message_seconds}")
        if self.duration is not None and not self.duration > 0:
            raise ValueError(f"duration must be positive seconds, got {self.duration}")


@dataclass
class StreamStats:
    """What one client saw."""

    audio_seconds: float = 0.0
    partial: list[float] = field(default_factory=list)      # latency of each partial result
    endpoint: list[float] = field(default_factory=list)     # latency of each endpoint (segment-final) result
    first_partial: float | None = None
    final: float | None = None
    client_lag_max: float = 0.0     # the most a message was sent after its time (realtime pacing)
    text: str = ""
    error: str | None = None
    refused: str | None = None      # the server's reason when it refused the stream (1013, HTTP 503/429)


def load_audio_rows(manifest: str) -> list[np.ndarray]:
    """The audio (16 kHz float32 mono) of every readable row of a manifest (the row's segment when it has one).

    A malformed line or a file that cannot be read (missing, empty, not audio) is logged as a warning naming it
    (``skipped ...: why``) and left out: one bad item does not stop a load test.

    Raises:
        ValueError: the manifest has no rows, or none of its files could be read.
    """
    from ..data.manifest import read_manifest_skipping
    from ..decoding import SkippedItem, read_waves

    rows = read_manifest_skipping(manifest)
    if not rows:
        raise ValueError(f"{manifest} has no rows")
    audio = []
    for w in read_waves(rows):
        if isinstance(w, SkippedItem):
            log.warning("skipped %s: %s", w.item, w.reason)
        else:
            audio.append(w)
    if not audio:
        raise ValueError(f"{manifest}: none of its {len(rows)} audio files could be read (see the warnings)")
    return audio


def percentiles(values: list[float]) -> dict:
    """count, p50, p95, p99, max (None when empty)."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"count": int(a.size), "p50": round(float(p50), 4), "p95": round(float(p95), 4),
            "p99": round(float(p99), 4), "max": round(float(a.max()), 4)}


def _client_audio(audio: list[np.ndarray], i: int, cfg: BenchConfig) -> np.ndarray:
    if cfg.duration is None:
        return audio[i % len(audio)]
    need = int(cfg.duration * SAMPLE_RATE)
    parts, n, k = [], 0, i
    while n < need:
        x = audio[k % len(audio)]
        parts.append(x[: need - n])
        n += parts[-1].size
        k += 1
    return np.concatenate(parts)


TRY_AGAIN_LATER = 1013                 # the close code of a server at its admission limit
REFUSAL_STATUSES = (429, 503)          # HTTP answers to the handshake that mean the same


def _refusal(e: BaseException) -> str | None:
    """The reason, when ``e`` is a server refusing a new stream (1013 close, 503/429 handshake); else None."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    if isinstance(e, ConnectionClosed) and e.rcvd is not None and e.rcvd.code == TRY_AGAIN_LATER:
        return f"{TRY_AGAIN_LATER} {e.rcvd.reason}".strip()
    if isinstance(e, InvalidStatus) and e.response.status_code in REFUSAL_STATUSES:
        return f"HTTP {e.response.status_code}"
    return None


def _describe(e: BaseException) -> str:
    reason = getattr(getattr(e, "rcvd", None), "reason", "") or ""
    return f"{type(e).__name__}: {e}" + (f" ({reason})" if reason and reason not in str(e) else "")


def _encode(x: np.ndarray, protocol: str) -> bytes:
    if protocol == "sherpa":
        return x.astype("<f4").tobytes()
    return (np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


async def _client(url: str, x: np.ndarray, cfg: BenchConfig, delay: float, connect_kwargs: dict) -> StreamStats:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    st = StreamStats(audio_seconds=x.size / SAMPLE_RATE)
    await asyncio.sleep(delay)
    step = max(1, int(cfg.message_seconds * SAMPLE_RATE))
    sent_t: list[float] = []             # send time of message k
    sent_cum: list[int] = []             # samples sent up to and including message k
    end_t: list[float] = []
    final_text: list[str] = []

    def latency(reply: dict, now: float) -> float | None:
        a = reply.get("audio_seconds")
        if isinstance(a, (int, float)) and sent_cum:
            k = bisect.bisect_left(sent_cum, a * SAMPLE_RATE - 0.5)
            if k < len(sent_t):
                return now - sent_t[k]
        return now - sent_t[-1] if sent_t else None

    async def receive(ws) -> None:
        try:
            await read(ws)
        except ConnectionClosed as e:       # recorded here, so the task never ends with an exception
            st.refused = _refusal(e)
            if st.refused is None and st.error is None and st.final is None:
                st.error = _describe(e)

    async def read(ws) -> None:
        async for message in ws:
            now = time.monotonic()
            if message == "Done!":
                break
            try:
                reply = json.loads(message)
            except ValueError:
                st.error = f"unparsable reply {message[:60]!r}"
                break
            if reply.get("status") == "failed":
                st.error = f"server error: {reply.get('message')}"
                break
            if cfg.protocol == "sherpa":
                kind = "final" if reply.get("is_eof") else "endpoint" if reply.get("is_final") else "partial"
                text = reply.get("text", "")
            else:
                typ = reply.get("type")
                if typ == "speech_end":
                    break
                if typ == "server_ready":
                    continue
                kind = "partial" if typ == "partial_result" else "final" if end_t else "endpoint"
                try:
                    text = json.loads(reply.get("nbest", "[]"))[0].get("sentence", "")
                except (ValueError, IndexError, AttributeError, TypeError):
                    text = ""
            if kind == "partial":
                if st.first_partial is None and sent_t:
                    st.first_partial = now - sent_t[0]
                lat = latency(reply, now)
                if lat is not None:
                    st.partial.append(lat)
            elif kind == "endpoint":
                final_text.append(text)
                lat = latency(reply, now)
                if lat is not None:
                    st.endpoint.append(lat)
            else:
                final_text.append(text)
                if end_t:
                    st.final = now - end_t[0]
                if cfg.protocol == "sherpa":
                    continue                  # "Done!" (or the close) follows

    rx: asyncio.Task | None = None
    try:
        async with connect(url, max_size=None, open_timeout=cfg.timeout, close_timeout=5, **connect_kwargs) as ws:
            if cfg.protocol == "wenet":
                await ws.send(json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": True}))
                ready = json.loads(await asyncio.wait_for(ws.recv(), cfg.timeout))
                if ready.get("type") != "server_ready":
                    raise RuntimeError(f"expected server_ready, got {ready}")
            rx = asyncio.create_task(receive(ws))
            t0 = time.monotonic()
            try:
                for k, start in enumerate(range(0, x.size, step)):
                    if cfg.realtime:
                        due = t0 + start / SAMPLE_RATE
                        now = time.monotonic()
                        if due > now:
                            await asyncio.sleep(due - now)
                        else:
                            st.client_lag_max = max(st.client_lag_max, now - due)
                    piece = x[start: start + step]
                    await ws.send(_encode(piece, cfg.protocol))
                    sent_t.append(time.monotonic())
                    sent_cum.append(start + piece.size)
                    if rx.done():
                        break
                if not rx.done():
                    await ws.send("Done" if cfg.protocol == "sherpa" else json.dumps({"signal": "end"}))
                    end_t.append(time.monotonic())
            except ConnectionClosed:
                pass                          # the receive task records why (refusal, error, early end)
            try:
                await asyncio.wait_for(asyncio.shield(rx), cfg.timeout)
            except TimeoutError:
                st.error = st.error or f"no final result within {cfg.timeout:g} s of the end of the audio"
            if st.refused is None and st.error is None and st.final is None:
                code = ws.close_code
                st.error = f"connection closed ({code} {ws.close_reason or ''}) before the final result".strip()
    except Exception as e:  # refused at the handshake, reset, closed with an error code: counted per client
        st.refused = st.refused or _refusal(e)
        if st.error is None and st.refused is None:
            st.error = _describe(e)
    finally:
        if rx is not None:                    # never leave the receive task running or its exception unread
            rx.cancel()
            await asyncio.gather(rx, return_exceptions=True)
    if st.refused is not None:
        st.error = None
    st.text = " ".join(t for t in final_text if t)
    return st


def _metrics_url(url: str) -> str:
    base = url.split("://", 1)[-1].split("/", 1)[0]
    scheme = "https" if url.startswith("wss://") else "http"
    return f"{scheme}://{base}/metrics"


def _scrape(url: str, cafile: str | None = None) -> dict[str, float]:
    """slimasr_audio_seconds_total and slimasr_compute_seconds_total from the server's /metrics, if any."""
    import ssl

    context = ssl.create_default_context(cafile=cafile) if url.startswith("wss://") else None
    try:
        with urllib.request.urlopen(_metrics_url(url), timeout=5, context=context) as r:
            text = r.read().decode("utf-8", "replace")
    except Exception:  # not a slimasr server, or no metrics: the run simply lacks server_rtf
        return {}
    out = {}
    for line in text.splitlines():
        for key in ("slimasr_audio_seconds_total", "slimasr_compute_seconds_total"):
            if line.startswith(key + " "):
                out[key] = float(line.split()[1])
    return out


async def _run(url: str, audio: list[np.ndarray], cfg: BenchConfig, connect_kwargs: dict) -> list[StreamStats]:
    rng = random.Random(cfg.seed)
    delays = [rng.uniform(0, cfg.ramp) if cfg.streams > 1 else 0.0 for _ in range(cfg.streams)]
    return list(await asyncio.gather(*(_client(url, _client_audio(audio, i, cfg), cfg, delays[i], connect_kwargs)
                                       for i in range(cfg.streams))))


def _connect_kwargs(url: str, token: str | None, cafile: str | None) -> dict:
    """``websockets`` connect arguments for a bearer token and a TLS certificate authority file."""
    out: dict = {}
    if token:
        out["additional_headers"] = {"Authorization": f"Bearer {token}"}
    if cafile and url.startswith("wss://"):
        import ssl

        out["ssl"] = ssl.create_default_context(cafile=cafile)
    return out


def run_bench(url: str, audio: list[np.ndarray], cfg: BenchConfig, *, token: str | None = None,
              cafile: str | None = None) -> dict:
    """One run with ``cfg.streams`` clients; returns the report (see the module docstring).

    Args:
        token: sent as ``Authorization: Bearer <token>`` (``slimasr serve --token``).
        cafile: certificate authority (PEM) that signed a ``wss://`` server's certificate (default: the
            system's).
    """
    before = _scrape(url, cafile)
    t0 = time.monotonic()
    stats = asyncio.run(_run(url, audio, cfg, _connect_kwargs(url, token, cafile)))
    wall = time.monotonic() - t0
    after = _scrape(url, cafile)
    errors = [s.error for s in stats if s.error]
    refused = [s.refused for s in stats if s.refused]
    partial = percentiles([v for s in stats for v in s.partial])
    final = percentiles([s.final for s in stats if s.final is not None])
    lag = max((s.client_lag_max for s in stats), default=0.0)
    report = {
        "streams": cfg.streams, "protocol": cfg.protocol, "realtime": cfg.realtime,
        "audio_seconds": round(sum(s.audio_seconds for s in stats), 3), "wall_seconds": round(wall, 3),
        "partial_latency": partial,
        "endpoint_latency": percentiles([v for s in stats for v in s.endpoint]),
        "first_partial_latency": percentiles([s.first_partial for s in stats if s.first_partial is not None]),
        "final_latency": final,
        "errors": len(errors), "error_messages": sorted(set(errors))[:10],
        "refused": len(refused), "refusal_messages": sorted(set(refused))[:3],
        "client_lag_max": round(lag, 4),
    }
    da = after.get("slimasr_audio_seconds_total", 0) - before.get("slimasr_audio_seconds_total", 0)
    dc = after.get("slimasr_compute_seconds_total", 0) - before.get("slimasr_compute_seconds_total", 0)
    report["server_rtf"] = round(dc / da, 4) if da > 0 else None
    report["throughput_x_realtime"] = round(report["audio_seconds"] / wall, 2) if wall > 0 else None

    def ok(p: dict) -> bool:
        return p["p95"] is None or p["p95"] <= cfg.max_latency

    report["real_time"] = bool(not errors and not refused and ok(partial) and ok(final)
                               and final["count"] == cfg.streams and (not cfg.realtime or lag <= cfg.max_latency))
    report["texts"] = [s.text for s in stats[:5]]
    return report


def find_max_streams(url: str, audio: list[np.ndarray], cfg: BenchConfig, limit: int = 256,
                     progress=None, **client) -> dict:
    """The largest N (<= ``limit``) whose run stays real time: N = ``cfg.streams``, twice that, ... until a run
    fails, then bisect (0 when even the first run fails).

    Returns {"max_streams", "stopped_by", "runs": [report, ...]}: ``stopped_by`` is ``admission_limit`` when
    the smallest failing N had streams refused by the server (its ``max_streams``, not real time, bounds the
    answer), ``real_time`` when it failed on latency or errors, ``limit`` when ``limit`` itself passed.
    ``progress(report)`` is called after each run; ``client`` (token, cafile) goes to :func:`run_bench`.
    """
    import dataclasses

    runs: dict[int, dict] = {}

    def trial(n: int) -> bool:
        r = run_bench(url, audio, dataclasses.replace(cfg, streams=n), **client)
        runs[n] = r
        if progress is not None:
            progress(r)
        return r["real_time"]

    good, bad, n = 0, None, cfg.streams
    while n <= limit:
        if trial(n):
            good, n = n, n * 2
        else:
            bad = n
            break
    if bad is None and good < limit:          # every doubling passed: try the limit itself
        if trial(limit):
            good = limit
        else:
            bad = limit
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if trial(mid):
            good = mid
        else:
            bad = mid
    stopped_by = "limit" if bad is None else "admission_limit" if runs[bad]["refused"] else "real_time"
    return {"max_streams": good, "stopped_by": stopped_by, "runs": [runs[k] for k in sorted(runs)]}


def sweep_summary(report: dict) -> str:
    """One sentence: the answer of :func:`find_max_streams` and what stopped the sweep."""
    n = report["max_streams"]
    runs = {r["streams"]: r for r in report["runs"]}
    if report["stopped_by"] == "admission_limit":
        first = min(k for k, r in runs.items() if r["refused"])
        why = runs[first]["refusal_messages"][0] if runs[first]["refusal_messages"] else "1013"
        return (f"largest N that stays real time: {n} - the server's admission limit stopped the sweep, not real "
                f"time: at N = {first} it refused {runs[first]['refused']} stream(s) ({why})")
    if report["stopped_by"] == "limit":
        return f"largest N that stays real time: {n} - the sweep's --limit; the server may take more"
    bad = min(k for k, r in runs.items() if not r["real_time"])
    if runs[bad]["errors"]:
        return (f"largest N that stays real time: {n} - at N = {bad}, {runs[bad]['errors']} stream(s) failed "
                f"({runs[bad]['error_messages'][0]})")
    return f"largest N that stays real time: {n}"


def format_report(r: dict) -> str:
    """One line of a run's numbers."""
    def f(p: dict, key: str) -> str:
        v = p.get(key)
        return "   -  " if v is None else f"{v * 1000:6.0f}"

    pl, fl, fp = r["partial_latency"], r["final_latency"], r["first_partial_latency"]
    rtf = "-" if r.get("server_rtf") is None else f"{r['server_rtf']:.3f}"
    return (f"{r['streams']:5d}  {f(pl, 'p50')} {f(pl, 'p95')} {f(pl, 'p99')}  {f(fp, 'p50')}  "
            f"{f(fl, 'p50')} {f(fl, 'p95')}  {r['errors']:4d}  {r['refused']:7d}  {rtf:>6s}  "
            f"{'yes' if r['real_time'] else 'no':>4s}")


REPORT_HEADER = ("    N  partial ms p50   p95   p99  first  final p50  p95  errs  refused  srvRTF  real\n"
                 "  ---  ------------------------  -----  ------------  ----  -------  ------  ----")
