"""``slimasr data``: build and import training data."""
from __future__ import annotations

import os

import click


@click.group()
def data() -> None:
    """Build a synthetic speech corpus or import a Kaldi data directory.

    \b
    Example:
      slimasr data synth --out data/synth --hours 0.2
    """


@data.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Corpus directory.")
@click.option("--hours", required=True, type=float, help="Total hours of audio (about 90% train, 5% dev, 5% test).")
@click.option("--seed", default=0, show_default=True, help="Seed for the sentence split and the utterance plan.")
@click.option("--jobs", type=int, default=None, help="Parallel processes [default: number of CPUs].")
@click.option("--noise-snr", type=float, default=None, help="Add white/pink noise at this SNR in dB.")
@click.option("--max-utts-per-voice", type=int, default=None, help="Cap on training utterances per voice.")
def synth(out_dir: str, hours: float, seed: int, jobs: int | None, noise_snr: float | None,
          max_utts_per_voice: int | None) -> None:
    """Synthesise an English speech corpus with espeak-ng and flite from the fortunes texts.

    Deterministic for a seed and resumable: re-running skips the wav files already there. Test and dev use
    held-out voices and held-out sentences (see voices.json). Writes train/dev/test(.jsonl), test_espeak.jsonl,
    test_flite.jsonl, lm_text.txt and voices.json into OUT.

    \b
    Example:
      slimasr data synth --out data/synth --hours 0.2 --jobs 2
    """
    from slimasr.data.synth import SynthError, synthesize

    if hours <= 0:
        raise click.ClickException(f"--hours must be positive, got {hours}")
    if jobs is not None and jobs < 1:
        raise click.ClickException(f"--jobs must be at least 1, got {jobs}")
    if max_utts_per_voice is not None and max_utts_per_voice < 1:
        raise click.ClickException(f"--max-utts-per-voice must be at least 1, got {max_utts_per_voice}")
    try:
        report = synthesize(out_dir, hours, seed=seed, jobs=jobs or os.cpu_count(), noise_snr=noise_snr,
                            max_utts_per_voice=max_utts_per_voice)
    except (SynthError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(report.summary())
    if report.failed_voices:
        click.echo(f"voices that failed on every utterance (skipped): {', '.join(report.failed_voices)}", err=True)


@data.command("import-kaldi")
@click.argument("data_dir", type=click.Path())
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="Manifest to write [default: DATA_DIR/manifest.jsonl].")
def import_kaldi(data_dir: str, out_path: str | None) -> None:
    """Convert a Kaldi data directory (wav.scp, text, optional segments and utt2spk) into a manifest.

    With a segments file every segment becomes an utterance (offset and duration into its recording, read
    lazily; the audio is not copied). Piped wav.scp entries ('cmd |') and ark offsets are refused by name:
    convert them to audio files first. Lines that cannot be used (a transcript without audio, audio without a
    transcript, a segment of an unknown recording, an unreadable file) are skipped and counted with examples.

    Audio paths are stored relative to the manifest's folder when the audio lies inside it, absolute otherwise,
    so the manifest can be moved together with its audio.

    \b
    Example:
      slimasr data import-kaldi data/kaldi/train --out data/train.jsonl
      slimasr decode --data data/train.jsonl
    """
    from slimasr.data.kaldi import import_kaldi as _import
    from slimasr.data.manifest import ManifestError, write_manifest

    if not os.path.isdir(data_dir):
        raise click.ClickException(f"{data_dir} is not a directory (expected a Kaldi data directory with wav.scp "
                                   "and text)")
    try:
        found = _import(data_dir)
    except ManifestError as e:
        raise click.ClickException(str(e)) from None
    out = out_path or os.path.join(data_dir, "manifest.jsonl")
    write_manifest(out, found.rows)
    hours = sum(r["duration"] for r in found.rows) / 3600
    kind = "segments" if found.segmented else "utterances"
    click.echo(f"{len(found.rows)} {kind}, {hours:.2f} h -> {out}")
    if found.num_skipped:
        click.echo(f"skipped {found.num_skipped} line(s):", err=True)
        for line in found.skip_lines():
            click.echo(f"  {line}", err=True)
