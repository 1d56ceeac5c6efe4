"""``slimasr serve`` (the streaming websocket server) and ``slimasr bench-server`` (its load test)."""
from __future__ import annotations

import click


@click.command()
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="Streaming ONNX export directory (slimasr export onnx --streaming). Default: the embedded "
                   "model, exported once into $SLIMASR_CACHE (~/.cache/slimasr).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=6006, show_default=True, type=int, help="Port (0: any free port, printed).")
@click.option("--protocol", type=click.Choice(["auto", "sherpa", "wenet"]), default="auto", show_default=True,
              help="Wire protocol; auto tells sherpa-onnx and WeNet clients apart by their first message.")
@click.option("--max-streams", default=64, show_default=True, type=int,
              help="Concurrent connections; more are closed with 1013 (try again later).")
@click.option("--threads", default=1, show_default=True, type=int, help="onnxruntime intra-op threads per call.")
@click.option("--workers", default=None, type=int,
              help="Decode threads (streams decoded concurrently) [default: the CPU cores available].")
@click.option("--batch-size", default=8, show_default=True, type=int,
              help="Ready streams a worker takes per call (decoded one after another: the graph has batch-1 caches).")
@click.option("--chunk-size", type=int, default=None, help="Encoder frames per chunk [default: the export's].")
@click.option("--left-chunks", type=int, default=None, help="Chunks of left context [default: the export's].")
@click.option("--int8", is_flag=True, help="Serve model.int8.onnx.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="onnxruntime execution provider.")
@click.option("--sample-rate", default=16000, show_default=True, type=int, help="Sample rate of the clients' audio.")
@click.option("--max-message-bytes", default=1 << 20, show_default=True, type=int,
              help="Larger messages close the connection (1009).")
@click.option("--idle-timeout", default=30.0, show_default=True, type=float,
              help="Seconds without a message before the stream is finished and closed (1008).")
@click.option("--max-duration", default=3600.0, show_default=True, type=float,
              help="Seconds of audio per connection before it is finished and closed (1008).")
@click.option("--endpoint/--no-endpoint", default=True, show_default=True,
              help="Split long streams into segments at endpoints (sherpa-onnx's rules).")
@click.option("--rule1-min-trailing-silence", default=2.4, show_default=True, type=float,
              help="Endpoint after this much silence, speech or not.")
@click.option("--rule2-min-trailing-silence", default=1.2, show_default=True, type=float,
              help="Endpoint after this much silence following speech.")
@click.option("--rule3-min-utterance-length", default=20.0, show_default=True, type=float,
              help="Endpoint when a segment is this long.")
@click.option("--shutdown-timeout", default=30.0, show_default=True, type=float,
              help="After SIGTERM, seconds to finish the streams in flight before aborting them.")
def serve(model_dir, host, port, protocol, max_streams, threads, workers, batch_size, chunk_size, left_chunks,
          int8, provider, sample_rate, max_message_bytes, idle_timeout, max_duration, endpoint,
          rule1_min_trailing_silence, rule2_min_trailing_silence, rule3_min_utterance_length,
          shutdown_timeout) -> None:
    """Serve streaming recognition over websockets (sherpa-onnx and WeNet clients, same URL).

    sherpa-onnx clients send float32 samples and the text Done; WeNet clients send a JSON start signal, int16
    PCM and an end signal. Results follow every decoded chunk; endpoints split long streams into segments.
    GET /healthz and /metrics (Prometheus) are served on the same port. SIGTERM finishes the streams in
    flight with their final results, then exits. To scale out, run more processes behind a load balancer.

    \b
    Example:
      slimasr serve --port 6006
      slimasr serve --model exp/onnx-streaming --host 0.0.0.0 --max-streams 32 --workers 2 --threads 1
    """
    import os

    from slimasr.serve.endpoint import EndpointConfig
    from slimasr.serve.server import ServerConfig, ensure_default_export, run_server

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        ep = EndpointConfig.from_seconds(rule1_min_trailing_silence, rule2_min_trailing_silence,
                                         rule3_min_utterance_length, enabled=endpoint)
        cfg = ServerConfig(host=host, port=port, protocol=protocol, sample_rate=sample_rate, max_streams=max_streams,
                           max_message_bytes=max_message_bytes, idle_timeout=idle_timeout,
                           max_duration=max_duration, workers=workers, batch_size=batch_size,
                           shutdown_timeout=shutdown_timeout, endpoint=ep)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if model_dir is None:
        try:
            model_dir = ensure_default_export()
        except (FileNotFoundError, RuntimeError, OSError) as e:
            raise click.ClickException(str(e)) from None
    from slimasr.runtime import Recognizer, StreamingConfig

    try:
        rec = Recognizer.from_onnx(model_dir, num_threads=threads, provider=provider, int8=int8,
                                   streaming=StreamingConfig(chunk_size=chunk_size, left_chunks=left_chunks))
    except ValueError as e:
        raise click.ClickException(f"--model {model_dir}: {e}") from None
    if not rec.is_streaming:
        raise click.ClickException(f"--model {model_dir} is an offline export; serving needs a streaming one "
                                   "(slimasr export onnx --streaming)")

    def ready(server) -> None:
        p = rec.plan
        click.echo(f"slimasr serve: listening on ws://{host}:{server.port} ({protocol} protocol; GET /healthz, "
                   f"/metrics) - {rec.info.layers}-layer model, chunk {p.chunk_size} x 40 ms, left {p.left_chunks} "
                   f"chunks, {workers} worker(s) x {threads} thread(s), up to {max_streams} streams", err=True)

    try:
        run_server(rec, cfg, ready=ready)
    except OSError as e:                     # address in use, permission denied
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


@click.command("bench-server")
@click.option("--url", required=True, help="Server URL, e.g. ws://127.0.0.1:6006.")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False),
              help="Manifest (JSON lines) whose audio_filepath rows are streamed.")
@click.option("--streams", default=1, show_default=True, type=int,
              help="Concurrent clients (with --find-max: the first N tried).")
@click.option("--protocol", type=click.Choice(["sherpa", "wenet"]), default="sherpa", show_default=True,
              help="Client protocol: sherpa-onnx (float32, Done) or WeNet (start signal, int16, end signal).")
@click.option("--realtime/--fast", default=True, show_default=True,
              help="Send audio at its real pace, or as fast as the server reads it (throughput).")
@click.option("--message-ms", default=100.0, show_default=True, type=float, help="Audio per message.")
@click.option("--duration", type=float, default=None,
              help="Seconds of audio per client (consecutive rows) [default: one row each].")
@click.option("--ramp", default=1.0, show_default=True, type=float, help="Clients start spread over this many seconds.")
@click.option("--max-latency", default=1.0, show_default=True, type=float,
              help="Real time = p95 partial and final latency at most this (seconds), no errors.")
@click.option("--find-max", is_flag=True, help="Sweep N (doubling, then bisecting) for the largest real-time N.")
@click.option("--limit", default=256, show_default=True, type=int, help="Largest N --find-max tries.")
@click.option("--timeout", default=60.0, show_default=True, type=float,
              help="Seconds to wait for a final result after the end of the audio.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the report here.")
def bench_server(url, data, streams, protocol, realtime, message_ms, duration, ramp, max_latency, find_max, limit,
                 timeout, json_out) -> None:
    """Load-test a streaming server with N concurrent real-time clients.

    Reports latency percentiles of partial and final results, first-partial latency, final latency after the
    end of the audio, errors, the server's real-time factor (from /metrics when it is a slimasr server), and
    whether the run stayed real time; --find-max finds the largest N that does.

    \b
    Example:
      slimasr bench-server --url ws://127.0.0.1:6006 --data data/synth/test.jsonl --streams 8
      slimasr bench-server --url ws://127.0.0.1:6006 --data data/synth/test.jsonl --find-max --json bench.json
    """
    import json
    from pathlib import Path

    from slimasr.serve.loadtest import (REPORT_HEADER, BenchConfig, find_max_streams, format_report,
                                        load_audio_rows, run_bench)

    if not url.startswith(("ws://", "wss://")):
        raise click.ClickException(f"--url must start with ws:// or wss://, got {url!r}")
    try:
        cfg = BenchConfig(streams=streams, protocol=protocol, realtime=realtime, message_seconds=message_ms / 1000,
                          duration=duration, ramp=ramp, max_latency=max_latency, timeout=timeout)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    try:
        audio = load_audio_rows(data)
    except (ValueError, OSError) as e:       # ManifestError is a ValueError; it and audio errors name the file
        raise click.ClickException(f"--data {data}: {e}") from None
    click.echo(REPORT_HEADER)
    if find_max:
        report = find_max_streams(url, audio, cfg, limit=limit, progress=lambda r: click.echo(format_report(r)))
        click.echo(f"largest N that stays real time: {report['max_streams']}")
    else:
        report = run_bench(url, audio, cfg)
        click.echo(format_report(report))
        for msg in report["error_messages"][:3]:
            click.echo(f"  error: {msg}", err=True)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        click.echo(f"report -> {json_out}")
