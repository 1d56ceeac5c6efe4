"""``slimasr data``: build and import training data."""
from __future__ import annotations

import math
import os

import click

from .options import POSITIVE_FLOAT


@click.group()
def data() -> None:
    """Build a synthetic speech corpus or import a Kaldi data directory.

    \b
    Example:
      slimasr data synth --out data/synth --hours 0.2
    """


class _SynthCommand(click.Command):
    """``data synth``: its help ends with the speech engines installed on this machine (found when help is shown)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from slimasr.data.synth import engines_found

        rows = [(engine, what or "not found") for engine, what in engines_found().items()]
        with formatter.section("Engines found"):
            formatter.write_dl(rows)
        super().format_epilog(ctx, formatter)


@data.command(cls=_SynthCommand)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Corpus directory.")
@click.option("--hours", required=True, type=POSITIVE_FLOAT,
              help="Total hours of audio (about 90% train, 5% dev, 5% test).")
@click.option("--seed", default=0, show_default=True, help="Seed for the sentence split and the utterance plan.")
@click.option("--jobs", type=int, default=None, help="Parallel processes [default: number of CPUs].")
@click.option("--noise-snr", type=float, default=None,
              help="Add white or pink noise at this SNR in dB to every utterance of every split (test and dev "
                   "too: a noisy corpus; --augment varies the noise of training utterances only).")
@click.option("--max-utts-per-voice", type=int, default=None, help="Cap on training utterances per voice.")
@click.option("--augment", type=float, default=0.0, show_default=True,
              help="Fraction of training utterances passed through the augmentation chain (formant/pitch, speed, "
                   "room, coloured noise, telephone/codec), one seed per utterance.")
@click.option("--piper-fraction", type=float, default=0.25, show_default=True,
              help="Share of training/dev utterances spoken by Piper voices (when installed).")
@click.option("--splits", default="train,dev,test", show_default=True,
              help="Render only these splits of the plan (comma-separated), e.g. `test` for a larger held-out test "
                   "set: the split by sentence does not depend on --hours.")
def synth(out_dir: str, hours: float, seed: int, jobs: int | None, noise_snr: float | None,
          max_utts_per_voice: int | None, augment: float, piper_fraction: float, splits: str) -> None:
    """Synthesise an English speech corpus with espeak-ng, flite, Piper and Festival from the fortunes texts.

    Deterministic for a seed (the same audio, bit for bit, with any --jobs) and resumable: re-running skips the
    wav files already there. Test and dev use held-out voices and held-out sentences; Festival is a held-out
    engine (test only); Piper is tested at a held-out speaking rate (see voices.json). Writes train/dev/test(.jsonl), test_espeak.jsonl, test_flite.jsonl,
    test_piper.jsonl, test_festival.jsonl, lm_text.txt, voices.json and SHA256SUMS into OUT. Piper needs
    `pip install 'slimasr[voices]'`, Festival the Debian packages festival and festvox-kallpc16k (`make setup`
    installs both).

    \b
    Example:
      slimasr data synth --out data/synth --hours 0.2 --jobs 2
      slimasr data synth --out data/synth3 --hours 3 --augment 0.6 --jobs 2
      slimasr data synth --out data/eval8 --hours 8 --splits test --jobs 2
    """
    from slimasr.data.synth import SynthError, synthesize

    if noise_snr is not None and not math.isfinite(noise_snr):
        raise click.ClickException(f"--noise-snr must be a finite SNR in dB, got {noise_snr}")
    if jobs is not None and jobs < 1:
        raise click.ClickException(f"--jobs must be at least 1, got {jobs}")
    split_names = tuple(s.strip() for s in splits.split(",") if s.strip())
    if not split_names or set(split_names) - {"train", "dev", "test"}:
        raise click.ClickException(f"--splits must name some of train, dev, test (comma-separated), got {splits!r}")
    if not 0.0 <= augment <= 1.0:
        raise click.ClickException(f"--augment must be a fraction in [0, 1], got {augment}")
    if not 0.0 <= piper_fraction <= 1.0:
        raise click.ClickException(f"--piper-fraction must be a fraction in [0, 1], got {piper_fraction}")
    if max_utts_per_voice is not None and max_utts_per_voice < 1:
        raise click.ClickException(f"--max-utts-per-voice must be at least 1, got {max_utts_per_voice}")
    try:
        report = synthesize(out_dir, hours, seed=seed, jobs=jobs or os.cpu_count(), noise_snr=noise_snr,
                            max_utts_per_voice=max_utts_per_voice, augment=augment,
                            piper_fraction=piper_fraction, splits=split_names)
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
      # a one-utterance data directory (paths in wav.scp are relative to it)
      mkdir -p data/kaldi/hello && espeak-ng -w data/kaldi/hello/hello.wav "hello world"
      echo "utt1 hello.wav" > data/kaldi/hello/wav.scp && echo "utt1 hello world" > data/kaldi/hello/text
      slimasr data import-kaldi data/kaldi/hello --out data/hello.jsonl
      slimasr decode --data data/hello.jsonl
    """
    from slimasr.data.kaldi import import_kaldi as _import
    from slimasr.data.manifest import ManifestError, format_duration, write_manifest

    if not os.path.isdir(data_dir):
        raise click.ClickException(f"{data_dir} is not a directory (expected a Kaldi data directory with wav.scp "
                                   "and text)")
    try:
        found = _import(data_dir)
    except ManifestError as e:
        raise click.ClickException(str(e)) from None
    out = out_path or os.path.join(data_dir, "manifest.jsonl")
    write_manifest(out, found.rows)
    kind = "segments" if found.segmented else "utterances"
    click.echo(f"{len(found.rows)} {kind}, {format_duration(sum(r['duration'] for r in found.rows))} -> {out}")
    if found.num_skipped:
        click.echo(f"skipped {found.num_skipped} line(s):", err=True)
        for line in found.skip_lines():
            click.echo(f"  {line}", err=True)


@data.command("real-test")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="pocketsphinx test-data directory [default: the Debian package's].")
def real_test(out_dir: str, root: str | None) -> None:
    """A test set of real human recordings (Debian's pocketsphinx-testdata): TEST ONLY, never train or tune on it.

    Copies the LibriVox and "cards" recordings as 16 kHz wav into OUT and writes real.jsonl, real_librivox.jsonl
    and real_cards.jsonl (text normalised like every transcript).

    \b
    Example:
      slimasr data real-test --out data/real
      slimasr decode --data data/real/real.jsonl --out hyps_real.jsonl
    """
    from slimasr.data.real_test import RealTestError, build_real_test

    try:
        report = build_real_test(out_dir, root)
    except (RealTestError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(report.summary())
    for s in report.skipped:
        click.echo(f"skipped: {s}", err=True)
