"""``slimasr decode``: decode a manifest with any backend, print WER/CER and RTF."""
from __future__ import annotations

import sys

import click

from .options import backend_setting, chunking_options, decoding_config, decoding_options, spin_policies, \
    device_option, spin_threads_option, threads_option

# kept in sync with slimasr.decoding.BACKENDS (not imported here: --help stays light)
_BACKENDS = ["torch", "onnx", "onnx-int8", "sherpa-onnx"]


def torch_threads(n: int | None) -> None:
    """PyTorch's intra-op threads for this command; its OpenMP threads sleep while they wait (``OMP_WAIT_POLICY``
    PASSIVE unless the environment says otherwise, as bench runs them): spinning threads that lose their core on
    a busy machine made 2-thread chunked decoding 50x slower here. Call before torch is first imported."""
    import os

    if "torch" not in sys.modules:
        from slimasr.bench.runner import OMP_WAIT_POLICY

        os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    if n:
        import torch

        torch.set_num_threads(n)


@click.command()
@click.option("--model", default=None, type=click.Path(),
              help="A slimasr model (.pt) or an ONNX export directory [default: the embedded model].")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False), help="Manifest to decode.")
@click.option("--backend", type=click.Choice(_BACKENDS), default="torch", show_default=True,
              help="torch: the PyTorch model; onnx / onnx-int8: the torch-free runtime on an export (a .pt model is "
                   "exported once and cached); sherpa-onnx: sherpa-onnx's runtime on the same export (greedy).")
@chunking_options("offline, whole utterances", "unlimited (torch), the export's (onnx backends)")
@click.option("--end-of-stream", "end", type=click.Choice(["flush", "sherpa-onnx"]), default="flush",
              show_default=True,
              help="onnx backends: flush runs the last frames as a short chunk (equal to chunk-masked decoding); "
                   "sherpa-onnx pads 0.66 s of zeros as sherpa-onnx's examples do (for comparisons with it).")
@decoding_options()
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False), help="Hypotheses (JSON lines).")
@threads_option
@spin_threads_option()
@device_option
@click.option("--export-dir", type=click.Path(file_okay=False), default=None,
              help="Where exports of a .pt model are kept [default: $SLIMASR_CACHE/exports, else "
                   "$XDG_CACHE_HOME/slimasr/exports, else ~/.cache/slimasr/exports].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def decode(model, data, backend, chunk_size, left_chunks, end, out, threads, spin_threads, device, export_dir, progress,
           **search):
    """Decode every utterance of a manifest and print WER and CER (slimasr.scoring) and RTF.

    Every backend runs through the same loop (the one `slimasr bench` times). An utterance that cannot be read or
    decoded (a malformed manifest line, a missing file, audio shorter than one encoder frame, 65 ms, ...) is
    skipped and named, and the others are decoded and scored. Exit status (as `slimasr transcribe`): 0 when every
    utterance was decoded, 1 when any was skipped (the scores printed are those of the others) or nothing could
    be decoded, 2 for bad options.

    \b
    Example:
      slimasr decode --data data/synth8/test.jsonl --out hyps.jsonl
      slimasr decode --data data/synth8/test.jsonl --backend onnx --chunk-size 16 --left-chunks 4
      slimasr decode --model exp/onnx --data data/synth8/test.jsonl --backend sherpa-onnx
      slimasr decode --model exp/onnx --data data/synth8/test.jsonl --backend onnx --end-of-stream sherpa-onnx
      slimasr decode --data data/synth8/test.jsonl --decoder beam --lm exp/lm.bin --lm-weight 0.6 --word-score 1.0
    """
    from slimasr.chunking import EndOfStream
    from slimasr.decoding import BackendConfig, decode_manifest
    from slimasr.fileutil import writable_output
    from slimasr.scoring import error_rates

    dec = decoding_config(search)
    threads = backend_setting("threads", threads)
    if backend == "torch":
        torch_threads(threads)
    try:
        if out:
            writable_output(out, "--out", inputs=[data])           # before decoding: no work lost at the end
        cfg = BackendConfig(backend=backend, chunk_size=chunk_size, left_chunks=left_chunks, decoding=dec,
                            threads=threads, device=backend_setting("device", device),
                            spin_threads=spin_policies(spin_threads)[0],
                            end_of_stream=EndOfStream.sherpa_onnx() if end == "sherpa-onnx" else EndOfStream())
        res = decode_manifest(model, data, cfg, out=out, export_root=export_dir, progress=progress)
    except (ValueError, FileNotFoundError) as e:
        from slimasr.model.config import StreamingRefused          # here: runtime backends run without torch

        if isinstance(e, StreamingRefused):
            raise click.ClickException(f"--chunk-size: model {model or 'default'} cannot be decoded in chunks: {e}; "
                                       "decode it offline (without --chunk-size/--left-chunks)") from None
        raise click.ClickException(str(e)) from e
    for s in res["skipped_items"]:
        click.echo(f"skipped {s['audio_filepath']}: {s['reason']}", err=True)
    speakers = sorted({h["speaker"] for h in res["hyps"] if "speaker" in h})
    if len(speakers) > 1:
        click.echo(f"{'speaker':<40} {'utts':>5} {'WER':>7} {'CER':>7}")
        for spk in speakers:
            sel = [h for h in res["hyps"] if h.get("speaker") == spk]
            r = error_rates([h["reference"] for h in sel], [h["text"] for h in sel])
            click.echo(f"{spk:<40} {len(sel):>5} {100 * r['wer']:6.2f}% {100 * r['cer']:6.2f}%")
    click.echo(f"{res['utterances']} utterances ({res['backend']}, {res['mode']}, {dec.summary()}): "
               f"WER {100 * res['wer']:.2f}%  CER {100 * res['cer']:.2f}%  RTF {res['rtf']:.4f}"
               + (f"  skipped {res['skipped']}" if res["skipped"] else ""))
    if res["skipped"]:                          # scored without them: a script must not take it for the full set
        sys.exit(1)
