"""``slimasr bench``: WER next to RTF, latency, throughput and memory for models, backends and modes."""
from __future__ import annotations

import click

from ..bench.runner import BACKENDS, MODES, RunSpec
from .options import backend_setting, chunking_options, decoding_config, decoding_options, spin_policies, \
    device_option, spin_threads_option, threads_option


@click.command()
@click.option("--model", "models", multiple=True, default=("default",), show_default=True,
              help="Model to benchmark: a slimasr model file PATH (.pt; ONNX backends export it), LABEL=PATH or "
                   "'default' (the embedded model); repeat for several (the first is the reference for the speed "
                   "ratios).")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Test manifest (JSON lines).")
@click.option("--backend", "backends", multiple=True, type=click.Choice(BACKENDS), default=("torch",),
              show_default=True, help="Backend(s); repeat for several.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(MODES), default=("offline",), show_default=True,
              help="offline (whole utterances) and/or chunked (streaming in simulated real time).")
@decoding_options(multiple=True)
@threads_option
@click.option("--limit", type=int, default=None,
              help="Use the first N utterances (sorted by audio_filepath) [default: all].")
@chunking_options(RunSpec.chunk_size, RunSpec.left_chunks)
@click.option("--feed-ms", type=int, default=100, show_default=True, help="Chunked: audio piece size.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Utterances decoded before timing.")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Split the utterances into this many interleaved shards and run every configuration once per "
                   "shard, round by round: fairer comparisons on a machine whose load changes.")
@device_option(require_available=False)     # a torch run without its GPU is skipped, named
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Keep (and reuse) the ONNX exports here [default: a temporary directory].")
@click.option("--no-floor", is_flag=True, help="Skip the physical-floor (GEMM) measurement.")
@spin_threads_option(both=True)
@click.option("--json", "json_out", required=True, type=click.Path(dir_okay=False), help="Results (JSON).")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None, help="Results table (markdown).")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
              help="RTF against WER plot (.png, .pdf, .svg).")
def bench(models, data, backends, modes, method, threads, limit, chunk_size, left_chunks, feed_ms, warmup, rounds,
          device, work_dir, no_floor, spin_threads, json_out, md_out, plot_out, **search) -> None:
    """Benchmark models on a test set: WER and CER next to RTF, latency, throughput, peak memory and the physical
    floor (the model's matrix products timed alone on this machine).

    Every combination of --model, --backend, --mode and --decoder (each can be repeated; --spin-threads both runs
    each onnx configuration both ways) is one run, measured in its own process after a warm-up. ONNX backends export the model first (streaming graph for chunked, offline graph otherwise).

    \b
    Example:
      slimasr bench --model full=default --model p40=exp/pruned.pt --data data/synth8/test.jsonl \\
          --backend torch --backend onnx --backend onnx-int8 --mode offline --mode chunked \\
          --threads 2 --json bench.json --markdown bench.md --plot bench.png
      slimasr bench --data data/synth8/test.jsonl --backend onnx --backend sherpa-onnx --mode chunked \\
          --spin-threads both --json vs_sherpa.json
    """
    from slimasr.bench import ModelSpec, plan_runs, run_benchmark, to_markdown, write_outputs
    from slimasr.fileutil import writable_output

    decoders = tuple(dict.fromkeys(method)) or (RunSpec.decoder,)
    chunk_size = RunSpec.chunk_size if chunk_size is None else chunk_size
    left_chunks = RunSpec.left_chunks if left_chunks is None else left_chunks
    for name, v in (("--rounds", rounds), ("--chunk-size", chunk_size), ("--left-chunks", left_chunks),
                    ("--feed-ms", feed_ms)):
        if v < 1:
            raise click.ClickException(f"{name} must be at least 1, got {v}")
    if limit is not None and limit < 1:
        raise click.ClickException(f"--limit must be at least 1, got {limit}")
    if warmup < 0:
        raise click.ClickException(f"--warmup must be >= 0, got {warmup}")
    dec = decoding_config(search, methods=decoders)
    try:
        for opt, path in (("--json", json_out), ("--markdown", md_out), ("--plot", plot_out)):
            if path is not None:                      # before the runs: their results are not lost at the end
                writable_output(path, opt)
        specs = plan_runs([ModelSpec.parse(m) for m in models], backends, modes, decoders, data=data, limit=limit,
                          threads=backend_setting("threads", threads), device=backend_setting("device", device),
                          spin=spin_policies(spin_threads), lm=dec.lm, beam_size=dec.beam_size,
                          lm_weight=dec.lm_weight, word_score=dec.word_score, chunk_size=chunk_size,
                          left_chunks=left_chunks, feed_ms=feed_ms, warmup=warmup)
        labels = [s.model for s in specs]
        if len({(s.model, s.model_path) for s in specs}) != len(set(labels)):
            raise ValueError("two --model options share a label; name them LABEL=PATH")
        result = run_benchmark(specs, work_dir=work_dir, floor=not no_floor, rounds=rounds)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    write_outputs(result, json_out, md_out, plot_out)
    click.echo(to_markdown(result))
    failed = [r for r in result["runs"] if "error" in r]
    for r in failed:
        click.echo(f"failed: {r['model']} / {r['backend']} / {r['mode']} / {r['decoder']}: "
                   f"{r['error'].splitlines()[0]}", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) failed (full output in {json_out})")
