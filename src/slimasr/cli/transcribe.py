"""``slimasr transcribe``: audio files in, text / JSON / SRT / WebVTT out."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..export.cache import ExportKind
from .decode import torch_threads
from .options import backend_setting, chunking_options, decoding_config, decoding_options, spin_policies, \
    spin_threads_option, threads_option

_EXPORT = ExportKind()          # how a .pt model is exported for the runtime (its chunking)
_FORMATS = {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt"}
_GLOB_CHARS = set("*?[")


def _expand(inputs: tuple[str, ...]) -> tuple[list[str], list[tuple[str, str]]]:
    """FILE / DIRECTORY / GLOB / ``-`` arguments -> (sources in order, [(argument, why it gives nothing)])."""
    import glob

    import soundfile as sf

    exts = {"." + e.lower() for e in sf.available_formats()} | {".oga", ".opus"}
    sources, bad = [], []
    for arg in inputs:
        if arg == "-":
            sources.append("-")
        elif Path(arg).is_dir():
            found = sorted(str(p) for p in Path(arg).rglob("*") if p.is_file() and p.suffix.lower() in exts)
            sources += found
            if not found:
                bad.append((arg, "directory holds no audio file (" + ", ".join(sorted(exts)) + ")"))
        elif _GLOB_CHARS & set(arg) and not Path(arg).exists():
            found = sorted(p for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            sources += found
            if not found:
                bad.append((arg, "no file matches this pattern"))
        else:
            sources.append(arg)                   # a missing file is named when it is read
    return list(dict.fromkeys(sources)), bad


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(transcript) -> list[tuple[float, float, str]]:
    """One cue per segment: (first word's start, last word's end, text)."""
    return [(s.words[0][1], s.words[-1][2], s.text) for s in transcript.segments if s.words]


def format_transcript(transcript, fmt: str) -> str:
    """``text`` (one line per segment), ``json`` (one object), ``srt`` (SubRip) or ``vtt`` (WebVTT).

    SubRip and WebVTT differ only in the header, the cue numbers and the millisecond separator, so both are
    written here (https://www.w3.org/TR/webvtt1/ section 4; SubRip: ``N``, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``,
    text, blank line).
    """
    import json

    if fmt == "text":
        return "".join(s.text + "\n" for s in transcript.segments if s.text)
    if fmt == "json":
        return json.dumps(transcript.to_dict(), ensure_ascii=False) + "\n"
    cues = _cues(transcript)
    if fmt == "srt":
        return "".join(f"{k}\n{_timestamp(a, ',')} --> {_timestamp(b, ',')}\n{text}\n\n"
                       for k, (a, b, text) in enumerate(cues, 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(f"{_timestamp(a, '.')} --> {_timestamp(b, '.')}\n{text}\n\n"
                                      for a, b, text in cues)
    raise ValueError(f"format must be one of {', '.join(_FORMATS)}, got {fmt!r}")


def _out_paths(sources: list[str], out: str | None, fmt: str) -> tuple[list[Path | None], list[str]]:
    """(one path per source, lines naming the inputs that share a file name).

    None = standard output; one input -> OUT itself; several -> OUT/<name>.<ext> (a directory). Inputs whose names
    differ only in folder or extension (a/x.wav, b/x.wav, x.flac) get x, x-2, x-3, ... in the order given; each of
    such a group (and any input renamed so) is listed as ``INPUT -> OUTPUT``: each output is traced to its input.
    """
    if out is None:
        return [None] * len(sources), []
    if not _out_is_folder(out, len(sources)):
        return [Path(out)], []
    stems = ["stdin" if src == "-" else Path(src).stem for src in sources]
    used: set[str] = set()
    paths = []
    for stem in stems:
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}-{k}"
        used.add(name)
        paths.append(Path(out) / f"{name}.{_FORMATS[fmt]}")
    shared = {stem for stem in stems if stems.count(stem) > 1}
    return paths, [f"{_name(src)} -> {dest}" for src, stem, dest in zip(sources, stems, paths)
                   if stem in shared or dest.name != f"{stem}.{_FORMATS[fmt]}"]


def _out_is_folder(out: str, n_sources: int) -> bool:
    """Whether ``--out`` names a directory: several inputs, an existing directory, or a path ending in ``/``
    (``--out subtitles/`` of a folder holding one recording is a folder, not a file named ``subtitles``)."""
    return n_sources > 1 or Path(out).is_dir() or out.endswith(("/", os.sep))


def _name(src: str) -> str:
    return "standard input" if src == "-" else src


def _model_settings(model: str):
    """A .pt model's (ModelConfig, FrontendConfig), read without its weights (open_backend reads them, once), or
    None for an unreadable file (open_backend names the problem)."""
    from slimasr.model.asr import read_model_settings

    try:
        return read_model_settings(model)
    except (ValueError, FileNotFoundError):
        return None


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", default=None, type=click.Path(),
              help="A slimasr model (.pt) or a streaming ONNX export directory [default: the embedded model].")
@click.option("--backend", type=click.Choice(["torch", "onnx", "onnx-int8"]), default="onnx", show_default=True,
              help="torch: the PyTorch model; onnx / onnx-int8: the torch-free runtime (a .pt model is exported once "
                   "and cached).")
@chunking_options(f"the export's, else {_EXPORT.chunk_size}", f"the export's, else {_EXPORT.left_chunks}")
@decoding_options()
@click.option("--format", "fmt", type=click.Choice(list(_FORMATS)), default="text", show_default=True,
              help="text: one line per segment (several inputs on stdout: one FILE<TAB>TEXT line per input); "
                   "json: text, segments and word timestamps (several inputs on stdout: one JSON object per line); "
                   "srt / vtt: subtitles (one cue per segment).")
@click.option("--out", default=None, type=click.Path(),
              help="Output file (one input) or directory (several inputs, or a path ending in /: NAME.txt/.json/"
                   ".srt/.vtt, NAME the input's file "
                   "name without folder and extension; inputs of the same name become NAME, NAME-2, ... in the "
                   "order given, each listed on stderr as INPUT -> OUTPUT) [default: stdout].")
@threads_option
@spin_threads_option()
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def transcribe(inputs, model, backend, chunk_size, left_chunks, fmt, out, threads, spin_threads, progress, **search):
    """Transcribe audio files: any format and sample rate soundfile reads (channels mixed down), directories
    (searched recursively), glob patterns, or - for a WAV on standard input.

    Recordings of any length are streamed through the model in bounded memory and split into segments at
    endpoints (the rules of `slimasr serve`); json, srt and vtt carry the segments' times and json every word's.
    A model that cannot stream (e.g. an imported NeMo model: its features are normalised per utterance), a .pt
    model trained with full context only (unless --chunk-size is given), or an offline export, decodes each input
    whole instead (one segment; memory grows with the recording).
    An input in which no speech is recognised (e.g. silence) gives an empty document (text: no line, or FILE<TAB>
    with several inputs; json: empty text and segments; srt: no cue; vtt: the header only) and a note on stderr.
    A file that cannot be read or decoded (e.g. shorter than the model's minimum, named with both lengths) is
    skipped and named on stderr; the others are still transcribed. Exit status (as `slimasr decode`): 0 when
    every input was transcribed, 1 when any was skipped (the others are written; a summary counts the skipped)
    or nothing could be done, 2 for bad options.

    \b
    Example:
      slimasr transcribe talk.flac
      slimasr transcribe recordings/ --format srt --out subtitles/
      slimasr transcribe "calls/*.wav" --model exp/pruned40.pt --backend onnx-int8 --format json
      espeak-ng --stdout "hello world" | slimasr transcribe -
      slimasr transcribe talk.wav --decoder beam --lm exp/lm.bin --format vtt --out talk.vtt
    """
    import dataclasses

    from slimasr.decoding import BackendConfig, open_backend, transcribe_audio
    from slimasr.fileutil import writable_output
    from slimasr.model.config import StreamingRefused

    dec = decoding_config(search)
    threads = backend_setting("threads", threads)
    sources, bad = _expand(inputs)
    if inputs.count("-") > 1:
        raise click.ClickException("standard input (-) can be given once")
    if not sources:
        raise click.ClickException("no audio to transcribe: " + "; ".join(f"{a}: {w}" for a, w in bad))
    if out is None and fmt in ("srt", "vtt") and len(sources) > 1:
        raise click.ClickException(f"{len(sources)} inputs give {len(sources)} {fmt} files: give --out DIRECTORY")
    if out is not None:                                            # before decoding: no work lost at the end
        try:
            folder = _out_is_folder(out, len(sources))
            writable_output(out, "--out", folder=folder, inputs=() if folder else [s for s in sources if s != "-"])
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    path = Path(model) if model else None
    is_export = path is not None and (path.is_dir() or path.suffix == ".onnx")
    if backend == "torch":
        torch_threads(threads)
    try:
        # a .pt model is exported as the export cache does by default; 0 is refused, not a default
        default_chunk, default_left = (None, None) if is_export else (_EXPORT.chunk_size, _EXPORT.left_chunks)
        cfg = BackendConfig(backend=backend, chunk_size=default_chunk if chunk_size is None else chunk_size,
                            left_chunks=default_left if left_chunks is None else left_chunks, decoding=dec,
                            threads=threads, spin_threads=spin_policies(spin_threads)[0])
        settings = _model_settings(model) if model is not None and not is_export else None
        if settings is not None and chunk_size is None and left_chunks is None and not settings[0].dynamic_chunk:
            click.echo(f"{model}: trained with full context only (never on chunks, e.g. an imported ESPnet model): "
                       "each input is decoded whole, as `slimasr decode` does (--chunk-size streams it anyway)",
                       err=True)
            cfg = dataclasses.replace(cfg, chunk_size=None, left_chunks=None)
        try:
            if settings is not None and cfg.streaming:    # refused before the backend reads the weights
                settings[0].check_streaming(settings[1], onnx=backend != "torch")
            engine = open_backend(model, cfg)
        except StreamingRefused as e:
            if chunk_size is not None or left_chunks is not None:
                raise ValueError(f"--chunk-size/--left-chunks: model {model or 'default'} cannot be decoded in "
                                 f"chunks: {e}; transcribe it without them (each input decoded whole)") from None
            click.echo(f"{model}: {e}: each input is decoded whole", err=True)
            engine = open_backend(model, dataclasses.replace(cfg, chunk_size=None, left_chunks=None))
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    outs, renamed = _out_paths(sources, out, fmt)
    for line in renamed:                                           # a/x.wav and b/x.wav: which output is which
        click.echo(line, err=True)
    failed = [f"{a}: {w}" for a, w in bad]
    for line in failed:
        click.echo(f"skipped: {line}", err=True)
    for k, (src, dest) in enumerate(zip(sources, outs)):
        try:
            t = transcribe_audio(engine, src, progress=progress)
        except ValueError as e:
            failed.append(str(e) if str(src) in str(e) or src == "-" else f"{src}: {e}")
            click.echo(f"skipped: {failed[-1]}", err=True)
            continue
        text = format_transcript(t, fmt)
        if not t.text:                                             # e.g. silence: an empty, valid document
            click.echo(f"{_name(src)}: empty transcript (no speech recognised in {t.duration:.2f} s)", err=True)
        if dest is not None:
            try:
                dest.write_text(text, encoding="utf-8")
            except OSError as e:                                   # e.g. a full disk: the other inputs go on
                failed.append(f"{src}: cannot write {dest} ({e.strerror or e})")
                click.echo(f"skipped: {failed[-1]}", err=True)
        elif fmt == "text" and len(sources) > 1:
            click.echo(f"{src}\t{t.text}")
        else:
            click.echo(text, nl=False)
    if failed:
        click.echo(f"{len(failed)} of {len(sources) + len(bad)} inputs skipped", err=True)
        sys.exit(1)
