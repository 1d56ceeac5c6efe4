"""``slimasr serve``: the streaming websocket server (its load test is ``slimasr bench-server``)."""
from __future__ import annotations

import click

from .options import backend_setting, chunking_options, spin_policies, spin_threads_option, threads_option


@click.command()
@click.option("--model", "model_dir", default=None, type=click.Path(),
              help="ONNX export directory: streaming (slimasr export onnx --streaming), or offline for a model that "
                   "cannot stream (each utterance is then decoded when the client ends it). Default: the "
                   "embedded model, exported once into the export cache ($SLIMASR_CACHE/exports, default "
                   "~/.cache/slimasr/exports).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=6006, show_default=True, type=int, help="Port (0: any free port, printed).")
@click.option("--protocol", type=click.Choice(["auto", "sherpa", "wenet"]), default="auto", show_default=True,
              help="Wire protocol; auto tells sherpa-onnx and WeNet clients apart by their first message.")
@click.option("--max-streams", default=64, show_default=True, type=int,
              help="Concurrent connections; more are closed with 1013 (try again later).")
@threads_option
@spin_threads_option()
@click.option("--workers", default=None, type=int,
              help="Decode threads (streams decoded concurrently) [default: the CPU cores available].")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Ready streams a worker takes per call (with --batched: chunks per graph call) [default: 32 with "
                   "the batched graph, 8 without].")
@click.option("--batched/--no-batched", default=True, show_default=True,
              help="Run the ready chunks of the streams a worker takes in one call of the export's batched graph "
                   "(model.batched.onnx: slimasr export onnx --streaming --batched; the default model has it). "
                   "Results are the same either way.")
@click.option("--max-batch-wait-ms", default=25.0, show_default=True, type=float,
              help="With --batched: how long a chunk may wait for others to share its call (bounds the added "
                   "latency; 0: never wait).")
@chunking_options("the export's", "the export's")
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
@click.option("--certfile", default=None, type=click.Path(dir_okay=False),
              help="TLS certificate chain (PEM): serve wss:// and https:// (the page included).")
@click.option("--keyfile", default=None, type=click.Path(dir_okay=False),
              help="Private key (PEM) of --certfile, unless the certfile holds it.")
@click.option("--token", "tokens", multiple=True, envvar="SLIMASR_TOKEN",
              help="Require this bearer token (Authorization header, or ?token= for browsers); repeatable "
                   "[env: SLIMASR_TOKEN]. Prefer --tokens-file: command lines are visible to other users.")
@click.option("--tokens-file", default=None, type=click.Path(dir_okay=False),
              help="Require one of the tokens in this file (one per line, # comments); re-read on SIGHUP.")
@click.option("--allow-origin", "allow_origins", multiple=True,
              help="Browser origins allowed to connect, e.g. https://app.example.org (repeatable; others get "
                   "403). Default: any. The server's own page is always allowed.")
def serve(model_dir, host, port, protocol, max_streams, threads, spin_threads, workers, batch_size, batched, max_batch_wait_ms,
          chunk_size, left_chunks,
          int8, provider, sample_rate, max_message_bytes, idle_timeout, max_duration, endpoint,
          rule1_min_trailing_silence, rule2_min_trailing_silence, rule3_min_utterance_length,
          shutdown_timeout, certfile, keyfile, tokens, tokens_file, allow_origins) -> None:
    """Serve streaming recognition over websockets (sherpa-onnx and WeNet clients, same URL).

    sherpa-onnx clients send float32 samples and the text Done; WeNet clients send a JSON start signal, int16
    PCM and an end signal. Results follow every decoded chunk; endpoints split long streams into segments.
    GET / is a page that streams the microphone or an audio file from a browser; GET /healthz and /metrics
    (Prometheus) are served on the same port. --certfile/--keyfile serve TLS; --token/--tokens-file require a
    bearer token (401 without one). SIGTERM finishes the streams in flight with their final results, then
    exits. To scale out, run more processes behind a load balancer. An offline export (a model that cannot
    stream, e.g. an imported NeMo model: its features are normalised per utterance) is served by decoding each
    utterance when the client ends it: one final result, no partial results or endpoints.

    \b
    Example:
      slimasr serve --port 6006          # then open http://127.0.0.1:6006/ in a browser
      slimasr serve --model exp/onnx-streaming --host 0.0.0.0 --max-streams 32 --workers 2 --threads 1
      slimasr serve --batch-size 16 --max-batch-wait-ms 10      # smaller batched calls, shorter waits
      slimasr serve --host 0.0.0.0 --port 443 --certfile cert.pem --keyfile key.pem --tokens-file tokens.txt
      slimasr export onnx --model exp/imported-nemo.pt --out exp/onnx-nemo && slimasr serve --model exp/onnx-nemo
    """
    import os

    from slimasr.runtime import Recognizer, StreamingConfig
    from slimasr.serve.access import AccessPolicy, read_tokens_file, server_ssl_context
    from slimasr.serve.endpoint import EndpointConfig
    from slimasr.serve.server import BATCHED_BATCH_SIZE, ServerConfig, ensure_default_export, run_server

    threads = backend_setting("threads", threads)
    try:                                                   # before the model: the error names the option
        streaming = StreamingConfig(chunk_size=chunk_size, left_chunks=left_chunks)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--chunk-size / --left-chunks") from None
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        ep = EndpointConfig.from_seconds(rule1_min_trailing_silence, rule2_min_trailing_silence,
                                         rule3_min_utterance_length, enabled=endpoint)
        if keyfile and not certfile:
            raise ValueError("--keyfile needs --certfile")
        if certfile:
            server_ssl_context(certfile, keyfile)          # a bad certificate or key fails here, before the model
        access = AccessPolicy(tokens=tuple(tokens), allow_origins=tuple(allow_origins))
        if tokens_file:
            read_tokens_file(tokens_file)                  # a bad tokens file fails here too
        cfg = ServerConfig(host=host, port=port, protocol=protocol, sample_rate=sample_rate, max_streams=max_streams,
                           max_message_bytes=max_message_bytes, idle_timeout=idle_timeout,
                           max_duration=max_duration, workers=workers, batch_size=batch_size, batched=batched,
                           max_batch_wait=max_batch_wait_ms / 1000,
                           shutdown_timeout=shutdown_timeout, endpoint=ep, access=access, tokens_file=tokens_file,
                           certfile=certfile, keyfile=keyfile)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    from slimasr.importers import import_hint

    if model_dir is not None and os.path.isfile(model_dir) and not model_dir.endswith(".onnx"):
        raise click.ClickException(f"--model {model_dir} is a file; expected an ONNX export directory (or its "
                                   "model.onnx)" + (import_hint(model_dir) or _export_advice(model_dir)))
    if model_dir is None:
        try:
            model_dir = ensure_default_export()
        except (FileNotFoundError, RuntimeError, ValueError, OSError) as e:
            raise click.ClickException(str(e)) from None
    try:
        rec = Recognizer.from_onnx(model_dir, num_threads=threads, spin_threads=spin_policies(spin_threads)[0],
                                   provider=provider, int8=int8,
                                   batch_size=(batch_size or BATCHED_BATCH_SIZE) if batched else 1,
                                   streaming=streaming)
    except ValueError as e:
        raise click.ClickException(f"--model {model_dir}: {e}{import_hint(model_dir)}") from None
    if not rec.is_streaming and (chunk_size or left_chunks):
        raise click.ClickException(f"--model {model_dir} is an offline export (whole utterances): --chunk-size and "
                                   "--left-chunks apply to streaming exports only")

    if not rec.is_streaming:
        batching = "one utterance per call"
    elif not batched:
        batching = "one chunk per call (--no-batched)"
    elif rec.supports_batch:
        batching = (f"up to {batch_size or BATCHED_BATCH_SIZE} streams' chunks per call, waiting at most "
                    f"{max_batch_wait_ms:g} ms")
    else:
        batching = ("one chunk per call: the export has no batched graph (slimasr export onnx --streaming "
                    "--batched)" if batch_size != 1 else "one chunk per call (--batch-size 1)")

    def ready(server) -> None:
        ws, web = ("wss", "https") if certfile else ("ws", "http")
        n = len(server.access.tokens)
        auth = f", {n} token(s) accepted, SIGHUP re-reads --tokens-file" if tokens_file else \
            f", {n} token(s) accepted" if n else ""
        if rec.is_streaming:
            p = rec.plan
            how = (f"chunk {p.chunk_size} x {rec.frame_seconds * 1000:g} ms, left {p.left_chunks} chunks")
        else:
            how = "offline: each utterance decoded when the client ends it (no partial results, no endpoints)"
        click.echo(f"slimasr serve: listening on {ws}://{host}:{server.port} ({protocol} protocol{auth}; page "
                   f"{web}://{host}:{server.port}/, GET /healthz, /metrics) - {rec.info.layers}-layer model, {how}, "
                   f"{workers} worker(s) x {threads} thread(s), up to {max_streams} streams; {batching}", err=True)

    try:
        run_server(rec, cfg, ready=ready)
    except OSError as e:                     # address in use, permission denied
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _export_advice(path: str) -> str:
    """The export command that makes a servable directory of the .pt model ``path``: streaming, or offline (served
    per utterance) for a model that cannot stream (``ModelConfig.streaming_refusal``: e.g. an imported NeMo model).
    Loads the model with torch, on this error path only."""
    try:
        from slimasr.model.asr import load_model

        m = load_model(path)
        why = m.config.streaming_refusal(m.frontend, onnx=True)
    except (OSError, ValueError, RuntimeError):     # not a readable model: the streaming export is the usual one
        why = None
    if why:
        return f": slimasr export onnx --model {path} --out DIR (offline: {why}; it is served per utterance)"
    return f": slimasr export onnx --model {path} --out DIR --streaming"
