"""``slimasr bench-server``: load-test a streaming websocket server (``slimasr serve`` or any server speaking
the sherpa-onnx or WeNet protocol) with N concurrent real-time clients."""
from __future__ import annotations

import click


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
@click.option("--token", default=None, envvar="SLIMASR_TOKEN",
              help="Bearer token for a server started with --token [env: SLIMASR_TOKEN].")
@click.option("--cafile", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Certificate authority (PEM) that signed a wss:// server's certificate [default: the system's].")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the report here.")
def bench_server(url, data, streams, protocol, realtime, message_ms, duration, ramp, max_latency, find_max, limit,
                 timeout, token, cafile, json_out) -> None:
    """Load-test a streaming server with N concurrent real-time clients.

    Reports latency percentiles of partial and final results, first-partial latency, final latency after the
    end of the audio, errors, streams the server refused (1013: its --max-streams), the server's real-time
    factor (from /metrics when it is a slimasr server), and whether the run stayed real time; --find-max finds
    the largest N that does and says whether the server's admission limit, not real time, stopped the sweep.

    \b
    Example:
      slimasr bench-server --url ws://127.0.0.1:6006 --data data/synth8/test_espeak.jsonl --streams 8
      slimasr bench-server --url ws://127.0.0.1:6006 --data data/synth8/test_espeak.jsonl --find-max --json bench.json
      slimasr bench-server --url wss://asr.example.org --token "$TOKEN" --data data/synth8/test_espeak.jsonl
    """
    import json
    from pathlib import Path

    from slimasr.serve.loadtest import (REPORT_HEADER, BenchConfig, find_max_streams, format_report,
                                        load_audio_rows, run_bench, sweep_summary)

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
    client = {"token": token, "cafile": cafile}
    if find_max:
        report = find_max_streams(url, audio, cfg, limit=limit, progress=lambda r: click.echo(format_report(r)),
                                  **client)
        click.echo(sweep_summary(report))
    else:
        report = run_bench(url, audio, cfg, **client)
        click.echo(format_report(report))
        for msg in report["error_messages"][:3]:
            click.echo(f"  error: {msg}", err=True)
        for msg in report["refusal_messages"][:1]:
            click.echo(f"  refused by the server ({report['refused']} stream(s)): {msg}", err=True)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        click.echo(f"report -> {json_out}")
    first = report["runs"][0] if find_max else report
    if first["errors"] and not first["final_latency"]["count"]:
        raise click.ClickException(f"no stream completed ({first['errors']} failed at N = {first['streams']}): "
                                   f"{first['error_messages'][0]}")
