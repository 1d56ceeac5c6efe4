"""``slimasr decode``: greedy CTC decoding of a manifest with WER/CER."""
from __future__ import annotations

import click


@click.command()
@click.option("--model", default=None, type=click.Path(dir_okay=False), help="Model file (default: embedded).")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False), help="Manifest to decode.")
@click.option("--chunk-size", type=int, default=None, help="Chunked (streaming-equivalent) decoding.")
@click.option("--left-chunks", type=int, default=None, help="Left chunks (default unlimited).")
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False), help="Hypotheses (JSON lines).")
@click.option("--batch-seconds", type=float, default=120.0, help="Audio seconds per batch.")
@click.option("--threads", type=int, default=None, help="torch intra-op threads.")
@click.option("--device", default="cpu")
def decode(model, data, chunk_size, left_chunks, out, batch_seconds, threads, device):
    """Decode a manifest offline (full context) or chunked, print WER and CER (jiwer).

    \b
    Example:
      slimasr decode --data data/synth/test.jsonl --out hyps.jsonl
      slimasr decode --data data/synth/test.jsonl --chunk-size 16 --left-chunks 4 --out hyps_chunk.jsonl
    """
    from ..evaluate import decode_manifest

    try:
        res = decode_manifest(model, data, chunk_size=chunk_size, left_chunks=left_chunks, out=out,
                              batch_seconds=batch_seconds, threads=threads, device=device)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    from ..scoring import error_rates

    speakers = sorted({h["speaker"] for h in res["hyps"] if "speaker" in h})
    if len(speakers) > 1:
        click.echo(f"{'speaker':<40} {'utts':>5} {'WER':>7} {'CER':>7}")
        for spk in speakers:
            sel = [h for h in res["hyps"] if h.get("speaker") == spk]
            r = error_rates([h["reference"] for h in sel], [h["text"] for h in sel])
            click.echo(f"{spk:<40} {len(sel):>5} {100 * r['wer']:6.2f}% {100 * r['cer']:6.2f}%")
    mode = "offline" if chunk_size is None else f"chunk {chunk_size}, left {left_chunks or 'all'}"
    click.echo(f"{res['utterances']} utterances ({mode}): WER {100 * res['wer']:.2f}%  CER {100 * res['cer']:.2f}%"
               f"  RTF {res['rtf']:.4f}" + (f"  skipped {res['skipped']}" if res["skipped"] else ""))
